"""The telemetry contract without a broker: URLs, topics, payloads, the fan-out, and the
adapters the CLI finds through the `hpcq.telemetry` entry points."""

from __future__ import annotations

import argparse
import sys

import pytest

from hpcq.cli import common
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


# --- the adapters, through the hpcq.telemetry entry points ----------------------------------


def _args(**flags: object) -> argparse.Namespace:
    defaults = {"mqtt_url": None, "metrics_port": None, "metrics_addr": "127.0.0.1"}
    return argparse.Namespace(namespace="ns", **{**defaults, **flags})


def test_the_adapters_come_from_the_entry_points() -> None:
    from bridges.mqtt_telemetry import MqttFeed, MqttTelemetry
    from bridges.prom import PromTelemetry

    assert common.load_adapter("mqtt", "--mqtt-url", "mqtt") is MqttTelemetry
    assert common.load_adapter("prometheus", "--metrics-port", "prometheus") is PromTelemetry
    feed = common.feed_from_args(_args(mqtt_url="mqtt://127.0.0.1:1883"))
    assert isinstance(feed, MqttFeed) and feed.settings.namespace == "ns"
    assert common.feed_from_args(_args()) is None


@pytest.mark.parametrize(
    ("flags", "missing", "line"),
    [
        (
            {"mqtt_url": "mqtt://127.0.0.1:1883"},
            "aiomqtt",
            "--mqtt-url needs the mqtt extra (aiomqtt is missing): pip install 'hpcq[mqtt]'",
        ),
        (
            {"metrics_port": 1},
            "prometheus_client",
            "--metrics-port needs the prometheus extra (prometheus_client is missing): "
            "pip install 'hpcq[prometheus]'",
        ),
    ],
    ids=["mqtt", "prometheus"],
)
async def test_a_flag_without_its_extra_names_the_install(
    monkeypatch: pytest.MonkeyPatch, flags: dict[str, object], missing: str, line: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    for adapter in ("bridges.mqtt_telemetry", "bridges.prom"):
        monkeypatch.delitem(sys.modules, adapter, raising=False)
    with pytest.raises(ConfigError) as err:
        await common.open_telemetry(_args(**flags))
    assert str(err.value) == line
    if missing == "aiomqtt":  # `hpcq status --watch --mqtt-url` says the same, and more
        with pytest.raises(ConfigError) as err:
            common.feed_from_args(_args(**flags))
        assert str(err.value).startswith(line + ", or leave --mqtt-url out")


def test_a_missing_entry_point_says_to_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "entry_points", lambda **_: [])
    with pytest.raises(ConfigError, match=r"no 'mqtt' adapter in the hpcq\.telemetry entry points"):
        common.load_adapter("mqtt", "--mqtt-url", "mqtt")
