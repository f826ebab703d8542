"""The figures of `hpcq status --watch`: merged from MQTT and the broker (no terminal),
and the command on the broker alone, with a real consumer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from pipeline.helpers import NODE_CLASS, fast_url

from bridges.mqtt_telemetry import MqttFeed
from hpcq.pipeline import telemetry as t
from hpcq.pipeline.messages import Heartbeat, StageUpdate
from hpcq.pipeline.status import BrokerView, QueueInfo
from hpcq.pipeline.topology import Topology
from hpcq.pipeline.watch import WatchSettings, gather

from .test_consumer import consumer, wait_ready

NOW = 1_000_000.0


def broker_view() -> BrokerView:
    return BrokerView(
        task_queues=(QueueInfo("ns.tasks.x", True, 7, 2),),
        dead_letters=QueueInfo("ns.dlq", True, 3, 0),
        window_s=10.0,
        results_in_window=25,
        status_mix={"ok": 20, "violation": 5},
        heartbeats={
            "a:1": Heartbeat("a:1", "x", 2, 1, 9, sent_at=NOW - 1),
            "b:2": Heartbeat("b:2", "x", 2, 0, 4, sent_at=NOW - 60),  # stopped sending
            "c:3": Heartbeat("c:3", "x", 2, 0, 4, sent_at=NOW - 7200),  # long gone
        },
        stages={"p1": StageUpdate("r", "p1", 2, "simd")},
        steps={"run-a": 5},
    )


def test_broker_alone_marks_silent_nodes_and_forgets_old_ones() -> None:
    w = gather("ns", broker_view(), None, WatchSettings(), now=NOW)
    assert w.source == "broker"
    assert [(n.node, n.state, n.busy, n.done) for n in w.nodes] == [
        ("a:1", "online", 1, 9),
        ("b:2", "silent", 0, 4),
    ]
    assert (w.dead_letters, w.results_per_s, w.status_mix) == (3, 2.5, {"ok": 20, "violation": 5})
    assert w.steps == {"run-a": {"step": 5}} and w.stages == {"p1": (2, "simd")}


def test_mqtt_nodes_win_and_a_will_keeps_the_last_figures() -> None:
    settings = t.MqttSettings(namespace="ns")
    feed = MqttFeed(settings)
    topics = t.Topics("ns")
    beat = t.NodeBeat("a:1", "x", t.ONLINE, 4, 3, 11, {"ok": 11}, sent_at=NOW - 2)
    feed.feed(topics.node("a:1"), t.encode(beat.to_json()), received_at=NOW - 2)
    step = {"run_id": "run-a", "step": 8, "reward_mean": 3.5, "gflops_best": 20.0}
    feed.feed(topics.step("run-a"), t.encode(step))
    feed.feed(topics.stage("p1"), t.encode({"problem_id": "p1", "index": 3, "stage": "openmp"}))
    feed.feed(topics.node("junk"), b"not json")  # ignored
    feed.state.connected = True
    w = gather("ns", broker_view(), feed.state, WatchSettings(), now=NOW)
    assert w.source == "mqtt"
    # a:1 from MQTT; b:2 only sends broker heartbeats (no --mqtt-url), and still shows.
    assert [(n.node, n.done, n.slots) for n in w.nodes] == [("a:1", 11, 4), ("b:2", 4, 2)]
    assert w.steps["run-a"] == {"step": 8, "reward_mean": 3.5, "gflops_best": 20.0}
    assert w.stages == {"p1": (3, "openmp")}  # MQTT's, newer than the broker's
    will = {**t.NodeBeat("a:1", "x", t.OFFLINE, sent_at=None).to_json(), "reason": "lost"}
    feed.feed(topics.node("a:1"), t.encode(will), received_at=NOW)
    row, _ = gather("ns", broker_view(), feed.state, WatchSettings(), now=NOW).nodes
    assert (row.state, row.slots, row.busy, row.done) == ("offline", 4, 0, 11)
    down = t.FeedState({}, {}, {}, connected=False, error="refused")
    assert any("refused" in n for n in gather("ns", broker_view(), down, WatchSettings()).notes)


async def test_watch_command_from_the_broker_alone(pipeline_ns: Topology, tmp_path: Path) -> None:
    proc = consumer(pipeline_ns, tmp_path).start()
    try:
        await wait_ready(proc, pipeline_ns)
        cmd = [sys.executable, "-m", "hpcq", "status", "--watch", "--watch-count", "3",
               "--refresh-s", "1", "--namespace", pipeline_ns.namespace,
               "--amqp-url", fast_url(), "--node-class", NODE_CLASS]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "HPCQ_MQTT_URL"}
        out = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=60,
            env={**env, "COLUMNS": "200"},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        assert "nodes (broker)" in out.stdout
        row = next(x for x in out.stdout.splitlines() if f":{proc.pid}" in x)
        assert "online" in row and "0/1" in row
        assert "1 consumer(s)" in out.stdout
    finally:
        proc.stop()
