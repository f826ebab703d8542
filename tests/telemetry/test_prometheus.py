"""The opt-in Prometheus endpoint, scraped over HTTP on 127.0.0.1: the sink alone, a
consumer process (`--metrics-port`), and the SQD controller process with both MQTT and
Prometheus (`hpcq sqd --mqtt-url --metrics-port`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pipeline.helpers import REPO, free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families
from sqd.helpers import fast_default_text, random_stream

from bridges.prom import PromTelemetry
from hpcq.errors import ConfigError
from hpcq.pipeline import codec
from hpcq.pipeline import telemetry as t
from hpcq.pipeline.broker import BrokerSettings, Link
from hpcq.pipeline.messages import Task
from hpcq.pipeline.topology import Topology, declare_base
from hpcq.sqd.controller import Controller
from hpcq.sqd.stages import load_config

from .helpers import retained
from .test_consumer import consumer, submit, wait_ready
from .test_mqtt import step_metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_now(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(port: int) -> Samples:
    return await asyncio.to_thread(scrape_now, port)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_sink_serves_heartbeats_steps_and_stages() -> None:
    port = free_port()
    sink = PromTelemetry(port, "127.0.0.1")
    await sink.start()
    try:
        statuses = {"ok": 3, "violation": 1}
        sink.heartbeat(t.NodeBeat("h:1", "x86", t.ONLINE, 4, 3, 4, statuses, sent_at=1.0))
        sink.heartbeat(t.NodeBeat("h:1", "x86", t.ONLINE, 4, 1, 6, {"ok": 5, "violation": 1}))
        sink.step("run-a", step_metrics(9))
        sink.stage(t.StageReport("dgemm-256", 1, "blocking"))
        sink.stage(t.StageReport("dgemm-256", 2, "simd"))
        s = await scrape(port)
        node = {"node": "h:1", "node_class": "x86"}
        assert value(s, "hpcq_node_up", **node) == 1
        assert value(s, "hpcq_node_slots", **node) == 4
        assert value(s, "hpcq_node_busy_slots", **node) == 1
        assert value(s, "hpcq_node_results_total", **node, status="ok") == 5  # a counter
        assert value(s, "hpcq_node_results_total", **node, status="violation") == 1
        assert value(s, "hpcq_train_step", run_id="run-a") == 9
        assert value(s, "hpcq_train_reward_mean", run_id="run-a") == 13.5
        assert value(s, "hpcq_train_status_fraction", run_id="run-a", status="ok") == 0.5
        assert value(s, "hpcq_sqd_stage_index", problem_id="dgemm-256") == 2
        assert value(s, "hpcq_sqd_stage", problem_id="dgemm-256", stage="simd") == 1
        assert value(s, "hpcq_sqd_stage", problem_id="dgemm-256", stage="blocking") is None
        sink.heartbeat(t.NodeBeat("h:1", "x86", t.OFFLINE, 4, 0, 6, {"ok": 5, "violation": 1}))
        assert value(await scrape(port), "hpcq_node_up", **node) == 0
        taken = PromTelemetry(port, "127.0.0.1")
        with pytest.raises(ConfigError, match="--metrics-port"):
            await taken.start()
    finally:
        await sink.close()
    with pytest.raises(OSError):
        scrape_now(port)  # closed with the sink


async def test_consumer_metrics_endpoint(
    mqtt: t.MqttSettings, pipeline_ns: Topology, tmp_path: Path
) -> None:
    port = free_port()
    proc = consumer(pipeline_ns, tmp_path, "--metrics-port", str(port)).start()
    try:
        await wait_ready(proc, pipeline_ns)
        await submit(pipeline_ns, 4)
        found: Samples = {}

        async def counted() -> bool:
            nonlocal found
            found = await scrape(port)
            return any(
                name == "hpcq_node_results_total" and v == 4 for (name, _), v in found.items()
            )

        await wait_until(counted, 15, "4 results on the consumer's /metrics")
        slots = [v for (name, _), v in found.items() if name == "hpcq_node_slots"]
        assert slots == [1]
    finally:
        proc.stop()


async def publish(topology: Topology, records: list[object]) -> None:
    link = await Link.open(BrokerSettings(), "telemetry-test-publisher")
    try:
        ex = await declare_base(link.channel, topology)
        for r in records:
            exchange, key = (ex.tasks, r.node_class) if isinstance(r, Task) else (ex.results, "_")
            await link.publish(exchange, key, codec.encode(r))  # type: ignore[arg-type]
    finally:
        await link.close()


async def test_sqd_controller_publishes_stages(
    mqtt: t.MqttSettings, pipeline_ns: Topology, tmp_path: Path
) -> None:
    config = tmp_path / "fast.toml"
    config.write_text(fast_default_text())
    records = random_stream(seed=3, steps=20, per_step=4)
    want = Controller(load_config(config))
    for r in records:
        want.feed(r)  # type: ignore[arg-type]
    await publish(pipeline_ns, list(records))
    port = free_port()
    args = [
        sys.executable, "-m", "hpcq", "sqd", "--namespace", pipeline_ns.namespace,
        "--sqd-config", str(config), "--state-dir", str(tmp_path / "state"),
        "--idle-exit", "3", "--mqtt-url", f"mqtt://{mqtt.host}:{mqtt.port}",
        "--metrics-port", str(port),
    ]  # fmt: skip
    log = (tmp_path / "sqd.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=log, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    try:
        final = {c.problem_id: c for c in want.current()}
        assert final and all(c.index > 0 for c in final.values())  # stages did change
        seen: Samples = {}

        async def at_final_stages() -> bool:
            nonlocal seen
            try:
                seen = await scrape(port)
            except OSError:
                return False
            return all(
                value(seen, "hpcq_sqd_stage_index", problem_id=p) == c.index
                for p, c in final.items()
            )

        await wait_until(at_final_stages, 30, "the final stages on /metrics", period_s=0.2)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert proc.returncode == 0, (tmp_path / "sqd.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    topics = t.Topics(mqtt.namespace)
    for problem, change in final.items():
        doc = await retained(mqtt, topics.stage(problem))
        assert doc is not None, problem
        assert (doc["index"], doc["stage"]) == (change.index, change.stage.name)
        assert doc["forbidden"] == sorted(change.stage.constraints.forbidden)
