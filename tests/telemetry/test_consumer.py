"""A real consumer process with telemetry: its heartbeat over MQTT, its last will when
killed with -9, `hpcq status --watch` seeing it go offline, and the pipeline going on
untouched when Mosquitto is unreachable or aiomqtt is not installed."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pipeline.helpers import NODE_CLASS, ConsumerProc, fast_url, free_port, source, wait_consumers

from hpcq.pipeline import telemetry as t
from hpcq.pipeline.broker import BrokerSettings
from hpcq.pipeline.messages import Result, Task
from hpcq.pipeline.producer import Producer, ProducerSettings
from hpcq.pipeline.topology import Topology

from .helpers import Listener

pytestmark = pytest.mark.broker

EXTRAS = ("aiomqtt", "paho", "prometheus_client", "rich", "matplotlib")


def without_extras(proc: ConsumerProc) -> ConsumerProc:
    """The same `python -m MODULE ...`, as if the optional extras were not installed."""
    assert proc.args[1] == "-m", proc.args
    proc.args[1:3] = [
        "-c",
        "import runpy, sys\n"
        f"for name in {EXTRAS!r}: sys.modules[name] = None\n"
        f"runpy.run_module({proc.args[2]!r}, run_name='__main__', alter_sys=True)\n",
    ]
    return proc


def consumer(topology: Topology, tmp: Path, *extra: str, tag: str = "c") -> ConsumerProc:
    log = tmp / f"consumer-{tag}.log"
    return ConsumerProc(topology.namespace, log, "--journal-dir", str(tmp / f"j-{tag}"), *extra)


async def submit(
    topology: Topology, count: int, timeout_s: float = 60
) -> tuple[list[Result], float]:
    """`count` scripted kernels through the pipeline; their results and the seconds taken."""
    group = f"g{uuid.uuid4().hex[:6]}"
    tasks = [
        Task(task_id=uuid.uuid4().hex, problem_id="dgemm-256", source=source(f"gflops={i}"),
             node_class=NODE_CLASS, group_id=group, member=i)
        for i in range(count)
    ]  # fmt: skip
    settings = ProducerSettings(name="p0", deadline_s=timeout_s)
    started = time.monotonic()
    async with Producer(BrokerSettings(url=fast_url()), topology, settings) as producer:
        await producer.submit_group(tasks)
        group = await producer.next_group(timeout_s)
    assert not group.left_out, group.left_out
    return list(group.results), time.monotonic() - started


async def wait_ready(proc: ConsumerProc, topology: Topology) -> None:
    try:
        await wait_consumers(topology.task_queue(NODE_CLASS), 1, timeout_s=30)
    except AssertionError:
        raise AssertionError(proc.log()[-3000:]) from None


async def test_heartbeat_kill_9_last_will_and_status_watch(
    mqtt: t.MqttSettings, pipeline_ns: Topology, tmp_path: Path
) -> None:
    from rich.console import Console

    from bridges.mqtt_telemetry import MqttFeed
    from hpcq.pipeline.status import BrokerFeed
    from hpcq.pipeline.watch import WatchSettings, gather, render

    url = f"mqtt://{mqtt.host}:{mqtt.port}"
    proc = consumer(pipeline_ns, tmp_path, "--mqtt-url", url).start()
    node = f"{socket.gethostname()}:{proc.pid}"
    topic = t.Topics(mqtt.namespace).node(node)
    feed = MqttFeed(mqtt)
    broker = BrokerFeed(BrokerSettings(url=fast_url()), pipeline_ns, (NODE_CLASS,), 60.0)
    try:
        async with Listener(mqtt) as seen:
            await seen.wait_for(topic, lambda d: d["state"] == "online", 30)
            await wait_ready(proc, pipeline_ns)
            results, _ = await submit(pipeline_ns, 3)
            assert {r.consumer for r in results} == {node}
            doc = await seen.wait_for(topic, lambda d: d["done"] == 3, 10)
            assert doc["statuses"] == {"ok": 3} and doc["slots"] == 1
            assert doc["node_class"] == NODE_CLASS and doc["last_error"] == ""

            await feed.start()
            await broker.start()

            async def view() -> str:
                state = gather(mqtt.namespace, await broker.refresh(), feed.state, WatchSettings())
                console = Console(file=io.StringIO(), record=True, width=220)
                console.print(render(state))
                return console.export_text()

            deadline = time.monotonic() + 10
            while node not in feed.state.nodes and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            before = await view()
            assert node in before and "online" in before and "offline" not in before
            assert "ok 3" in before  # the status mix, read from the replay stream

            killed = time.monotonic()
            proc.signal(signal.SIGKILL)
            will = await seen.wait_for(
                topic, lambda d: d["state"] == "offline", 3 * mqtt.keepalive_s
            )
            will_s = time.monotonic() - killed
            assert will["reason"] == "connection lost"
            await asyncio.sleep(0.3)
            after = await view()
            row = next(x for x in after.splitlines() if node in x)
            assert "offline" in row and "0/1" in row and " 3 " in row  # last figures kept
        print(f"kill -9 -> retained offline after {will_s:.2f} s")
        # The command itself, once, reading the retained state.
        cmd = [sys.executable, "-m", "hpcq", "status", "--watch", "--watch-count", "1",
               "--namespace", mqtt.namespace, "--amqp-url", fast_url(), "--mqtt-url", url,
               "--node-class", NODE_CLASS, "--refresh-s", "1.5"]  # fmt: skip
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=60,
            env={**os.environ, "COLUMNS": "220"},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        line = next(x for x in out.stdout.splitlines() if node in x)
        assert "offline" in line, out.stdout
    finally:
        proc.stop()
        await feed.close()
        await broker.close()


async def test_clean_stop_says_offline_itself(
    mqtt: t.MqttSettings, pipeline_ns: Topology, tmp_path: Path
) -> None:
    url = f"mqtt://{mqtt.host}:{mqtt.port}"
    proc = consumer(pipeline_ns, tmp_path, "--mqtt-url", url).start()
    topic = t.Topics(mqtt.namespace).node(f"{socket.gethostname()}:{proc.pid}")
    try:
        async with Listener(mqtt) as seen:
            await seen.wait_for(topic, lambda d: d["state"] == "online", 30)
            proc.signal(signal.SIGTERM)
            assert await proc.wait(30) == 0
            doc = await seen.wait_for(topic, lambda d: d["state"] == "offline", 5)
        assert "reason" not in doc  # published by the consumer, not the broker's will
    finally:
        proc.stop()


async def test_pipeline_unaffected_when_mqtt_is_unreachable(
    mqtt: t.MqttSettings, pipeline_ns: Topology, tmp_path: Path
) -> None:
    """The same batch with no telemetry and with telemetry pointed at a closed port."""
    timings = {}
    for tag, extra in (("off", ()), ("dead", ("--mqtt-url", f"mqtt://127.0.0.1:{free_port()}"))):
        proc = consumer(pipeline_ns, tmp_path, *extra, tag=tag).start()
        try:
            await wait_ready(proc, pipeline_ns)
            await submit(pipeline_ns, 2)  # warm-up
            results, timings[tag] = await submit(pipeline_ns, 30)
            assert len(results) == 30 and all(r.outcome.status == "ok" for r in results)
            assert proc.poll() is None
        finally:
            proc.signal(signal.SIGTERM)
            assert await proc.wait(30) == 0  # the drain is not held up either
            proc.stop()
    log = (tmp_path / "consumer-dead.log").read_text()
    assert "MQTT unavailable" in log, log[-2000:]
    off, dead = timings["off"], timings["dead"]
    print(f"30 tasks: {off:.2f} s without telemetry, {dead:.2f} s with MQTT down")
    assert dead < 2 * off + 2.0


async def test_consumer_runs_without_the_optional_extras(
    mqtt: t.MqttSettings, pipeline_ns: Topology, tmp_path: Path
) -> None:
    proc = without_extras(consumer(pipeline_ns, tmp_path, tag="bare")).start()
    try:
        await wait_ready(proc, pipeline_ns)
        results, _ = await submit(pipeline_ns, 2)
        assert len(results) == 2
    finally:
        proc.stop()
    url = "mqtt://127.0.0.1:1883"
    asked = without_extras(consumer(pipeline_ns, tmp_path, "--mqtt-url", url, tag="asked"))
    assert await asked.start().wait(30) == 2
    assert "--mqtt-url needs the mqtt extra (aiomqtt is missing): pip install 'hpcq[mqtt]'" in (
        asked.log()
    )
