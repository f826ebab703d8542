"""MqttTelemetry and MqttFeed against the real Mosquitto: retained heartbeats, a clean
'offline', the last will when the connection dies, reconnection, and a broker that is
down or hangs costing the caller nothing."""

from __future__ import annotations

import asyncio
import time

import aiomqtt
import pytest

from bridges.mqtt_telemetry import MqttFeed, MqttTelemetry
from hpcq.pipeline import telemetry as t
from hpcq.train.metrics import StepMetrics

from .helpers import Listener, SilentBroker, retained


def beat(node: str, done: int = 0, state: str = t.ONLINE) -> t.NodeBeat:
    return t.NodeBeat(node, "x86", state, slots=2, busy=1, done=done,
                      statuses={"ok": done}, sent_at=time.time())  # fmt: skip


def step_metrics(step: int) -> StepMetrics:
    return StepMetrics(
        step=step, policy_version=step, samples=8, groups=2, groups_dropped=0,
        frac_groups_dropped=0.0, drop_reasons={}, reward_mean=1.5 * step, reward_std=0.1,
        gflops_best=10.0 + step, gflops_mean=5.0, status_fractions={"ok": 0.5},
        kl=0.0, clip_low=0.0, clip_high=0.0, entropy=0.0, loss=0.0, grad_norm=0.0,
        completion_tokens_mean=10.0, truncated_fraction=0.0, resample_rounds=0,
        time_generate_s=1.0, time_rewards_s=1.0, time_update_s=1.0, eval_busy_s=1.0,
    )  # fmt: skip


async def test_heartbeat_is_retained_and_a_clean_close_says_offline(mqtt: t.MqttSettings) -> None:
    topics = t.Topics(mqtt.namespace)
    tel = MqttTelemetry(mqtt, node="host:1", node_class="x86")
    await tel.start()
    tel.heartbeat(beat("host:1", done=3))
    async with Listener(mqtt) as seen:  # subscribed after the publish: a retained copy
        doc = await seen.wait_for(topics.node("host:1"), lambda d: d["done"] == 3, 10)
        assert (doc["state"], doc["slots"], doc["busy"], doc["free"]) == ("online", 2, 1, 1)
        assert doc["node_class"] == "x86" and doc["version"] and doc["statuses"] == {"ok": 3}
        await tel.close()
        doc = await seen.wait_for(topics.node("host:1"), lambda d: d["state"] == "offline", 5)
    assert doc["done"] == 3 and "reason" not in doc  # our own 'offline', not the will
    assert tel.dropped == 0 and tel.sent >= 2
    kept = await retained(mqtt, topics.node("host:1"))
    assert kept is not None and kept["state"] == "offline"


async def test_step_and_stage_are_retained(mqtt: t.MqttSettings) -> None:
    topics = t.Topics(mqtt.namespace)
    tel = MqttTelemetry(mqtt)
    await tel.start()
    tel.step("run-a", step_metrics(4))
    tel.stage(t.StageReport("dgemm-256", 2, "simd", forbidden=("openmp",), reason="plateau"))
    async with Listener(mqtt) as seen:
        step = await seen.wait_for(topics.step("run-a"), lambda d: True, 10)
        stage = await seen.wait_for(topics.stage("dgemm-256"), lambda d: True, 10)
    await tel.close()
    assert (step["run_id"], step["step"], step["reward_mean"]) == ("run-a", 4, 6.0)
    assert (stage["index"], stage["stage"], stage["forbidden"]) == (2, "simd", ["openmp"])


async def test_last_will_when_the_connection_dies_then_online_again(mqtt: t.MqttSettings) -> None:
    """The connection is cut under the publisher (a TCP proxy aborts it, as a dead
    network would): Mosquitto publishes the will, retained; the publisher reconnects and
    its heartbeat replaces it."""
    from pipeline.helpers import TcpProxy

    proxy = await TcpProxy(mqtt.host, mqtt.port).start()
    via = t.MqttSettings(**{**mqtt.__dict__, "port": proxy.port})
    topics = t.Topics(mqtt.namespace)
    tel = MqttTelemetry(via, node="host:2", node_class="x86")
    try:
        await tel.start()
        tel.heartbeat(beat("host:2", done=1))
        async with Listener(mqtt) as seen:
            await seen.wait_for(topics.node("host:2"), lambda d: d["state"] == "online", 10)
            assert proxy.cut() >= 1
            will = await seen.wait_for(topics.node("host:2"), lambda d: d["state"] == "offline", 10)
            assert will["reason"] == "connection lost" and will["node_class"] == "x86"
            back = await seen.wait_for(topics.node("host:2"), lambda d: d["state"] == "online", 10)
        assert back["done"] == 1 and tel.connects >= 2
    finally:
        await tel.close()
        await proxy.close()


async def _costs_nothing(settings: t.MqttSettings) -> None:
    tel = MqttTelemetry(settings, node="host:3", node_class="x86")
    await tel.start()
    calls = 5 * settings.queue_size
    started = time.perf_counter()
    for i in range(calls):
        tel.heartbeat(beat("host:3", done=i))
        tel.step("r", step_metrics(i))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.5)  # reconnect attempts run meanwhile
    assert not tel.connected and tel.sent == 0
    assert tel._queue.qsize() <= settings.queue_size  # bounded
    assert tel.dropped >= 2 * calls - settings.queue_size  # the rest counted as dropped
    assert elapsed / (2 * calls) < 1e-3, f"{elapsed / (2 * calls) * 1e6:.0f} us per report"
    started = time.perf_counter()
    await tel.close()
    assert time.perf_counter() - started < 1.0


async def test_broker_down_costs_the_caller_nothing(mqtt: t.MqttSettings) -> None:
    from pipeline.helpers import free_port

    closed = t.MqttSettings(**{**mqtt.__dict__, "port": free_port(), "queue_size": 200})
    await _costs_nothing(closed)


async def test_broker_that_hangs_costs_the_caller_nothing(mqtt: t.MqttSettings) -> None:
    async with SilentBroker() as silent:
        hanging = t.MqttSettings(
            **{**mqtt.__dict__, "port": silent.port, "queue_size": 200, "publish_timeout_s": 1.0}
        )
        await _costs_nothing(hanging)


async def test_feed_follows_nodes_steps_and_stages(mqtt: t.MqttSettings) -> None:
    tel = MqttTelemetry(mqtt, node="host:4", node_class="x86")
    await tel.start()
    tel.heartbeat(beat("host:4", done=2))
    tel.step("run-b", step_metrics(7))
    tel.stage(t.StageReport("dgemm-512", 1, "1-no-simd"))
    changes: list[int] = []
    feed = MqttFeed(mqtt, on_change=lambda: changes.append(1))
    await feed.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        feed.state.nodes and feed.state.steps and feed.state.stages
    ):
        await asyncio.sleep(0.05)
    assert feed.state.connected
    node, _ = feed.state.nodes["host:4"]
    assert (node.state, node.done) == ("online", 2)
    assert feed.state.steps["run-b"]["step"] == 7
    assert feed.state.stages["dgemm-512"]["stage"] == "1-no-simd"
    await tel.close()
    while time.monotonic() < deadline and feed.state.nodes["host:4"][0].state != "offline":
        await asyncio.sleep(0.05)
    assert feed.state.nodes["host:4"][0].state == "offline" and changes
    await feed.close()


async def test_close_ends_the_task_even_when_disconnecting_fails(
    mqtt: t.MqttSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiomqtt may raise from `__aexit__` while the task is being cancelled; the error
    must not swallow the cancellation (the loop would run on and close() would hang)."""
    real_exit = aiomqtt.Client.__aexit__

    async def failing_exit(self: aiomqtt.Client, *exc: object) -> None:
        await real_exit(self, *exc)  # type: ignore[arg-type]
        raise aiomqtt.MqttError("disconnect failed")

    monkeypatch.setattr(aiomqtt.Client, "__aexit__", failing_exit)
    tel = MqttTelemetry(mqtt)
    await tel.start()
    deadline = time.monotonic() + 10
    while not tel.connected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert tel.connected
    task = tel._task
    assert task is not None
    await asyncio.wait_for(tel.close(), 10)
    assert task.done()
