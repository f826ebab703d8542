"""The telemetry contract without a broker: URLs, topics, payloads, the fan-out."""

from __future__ import annotations

import pytest

from hpcq.errors import ConfigError
from hpcq.pipeline import telemetry as t


def test_mqtt_url_parsing_and_clear_errors() -> None:
    s = t.MqttSettings.from_url("mqtt://u%40x:p@broker.example:1999", "ns")
    assert (s.host, s.port, s.username, s.password, s.tls) == (
        "broker.example", 1999, "u@x", "p", False,
    )  # fmt: skip
    tls = t.MqttSettings.from_url("mqtts://broker.example", "ns")
    assert (tls.port, tls.tls) == (8883, True)
    assert t.MqttSettings.from_url("mqtt://127.0.0.1", "ns").port == 1883
    for bad in ("http://127.0.0.1:1883", "mqtt://", "127.0.0.1:1883", "mqtt://h:notaport"):
        with pytest.raises(ConfigError, match="--mqtt-url"):
            t.MqttSettings.from_url(bad, "ns")


def test_topics_are_namespaced_and_safe() -> None:
    topics = t.Topics("exp/1")
    node = topics.node("host:12/+#")
    assert node == "hpcq/exp_1/nodes/host:12___"
    assert topics.kind(node) == "node"
    assert topics.kind(topics.step("run-1")) == "step"
    assert topics.kind(topics.stage("dgemm-256")) == "stage"
    assert topics.kind("hpcq/other/nodes/x") is None
    assert topics.kind("hpcq/exp_1/nodes/x/extra") is None


def test_heartbeat_payload_round_trip() -> None:
    statuses = {"ok": 6, "violation": 1}
    beat = t.NodeBeat("h:1", "x86", t.ONLINE, 4, 3, 7, statuses, "boom", sent_at=12.5)
    doc = t.decode(t.encode(beat.to_json()))
    assert doc["free"] == 1 and doc["version"]
    assert t.node_beat_from_json(doc) == beat
    with pytest.raises(ValueError):
        t.node_beat_from_json({"state": "online"})  # no node
    with pytest.raises(ValueError):
        t.decode(b"[1, 2]")


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    def heartbeat(self, beat: t.NodeBeat) -> None:
        self.calls.append(f"beat {beat.node}")

    def step(self, run_id: str, metrics: object) -> None:
        self.calls.append(f"step {run_id}")

    def stage(self, report: t.StageReport) -> None:
        self.calls.append(f"stage {report.problem_id}")

    async def close(self) -> None:
        self.calls.append("close")


async def test_fanout_forwards_everything_to_every_sink() -> None:
    a, b = _Recorder(), _Recorder()
    fan = t.Fanout([a, b])
    await fan.start()
    fan.heartbeat(t.NodeBeat("n", "c"))
    fan.stage(t.StageReport("p", 1, "simd"))
    fan.step("r", object())  # type: ignore[arg-type]
    await fan.close()
    assert a.calls == b.calls == ["start", "beat n", "stage p", "step r", "close"]
