"""`hpcq producer --mqtt-url --metrics-port`: the step metrics the training loop reports
through `on_step` reach MQTT (retained, per run) and Prometheus. The loop itself is
replaced by one that reports two steps: what is tested is the command's hook, on the
real brokers; training is tested in tests/train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pipeline.helpers import NODE_CLASS, fast_url, free_port

from hpcq.pipeline import telemetry as t
from hpcq.pipeline.topology import Topology

from .helpers import retained
from .test_mqtt import step_metrics
from .test_prometheus import scrape, value


async def test_producer_reports_each_step(
    mqtt: t.MqttSettings, pipeline_ns: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridges.policies
    from bridges.cli_train import parser_with_training
    from hpcq.train import loop as grpo

    port = free_port()
    scraped: list[float | None] = []

    async def two_steps(run: Any, on_step: Any = None) -> int:
        for step in (1, 2):
            on_step(step_metrics(step))
            scraped.append(value(await scrape(port), "hpcq_train_step", run_id=run.run_id))
        return 2

    monkeypatch.setattr(bridges.policies, "make_policy", lambda settings: object())
    monkeypatch.setattr(grpo, "train", two_steps)
    argv = [
        "producer", "--model", str(tmp_path / "model"), "--run-dir", str(tmp_path / "run-x"),
        "--namespace", pipeline_ns.namespace, "--amqp-url", fast_url(),
        "--node-class", NODE_CLASS, "--name", "p0",
        "--mqtt-url", f"mqtt://{mqtt.host}:{mqtt.port}", "--metrics-port", str(port),
    ]  # fmt: skip
    args = parser_with_training().parse_args(argv)
    assert await args.func(args) == 0
    assert scraped == [1, 2]
    doc = await retained(mqtt, t.Topics(mqtt.namespace).step("run-x"))
    assert doc is not None
    assert (doc["run_id"], doc["step"], doc["gflops_best"]) == ("run-x", 2, 12.0)
