"""Poison accounting: connection loss is not a poison delivery, a crash is.

On RabbitMQ 3.10 every return of a delivery (a cut connection included) counts toward the
queue's `x-delivery-limit`, so hpcq counts crashes itself (hpcq.pipeline.journal) and keeps the
broker's limit as a backstop. These tests cut connections with a TCP proxy and kill
consumers on purpose."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from hpcq.errors import InfraError
from hpcq.outcome import EvalRequest, EvalResult, Status
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings, Link
from hpcq.pipeline.consumer import Consumer, ConsumerSettings
from hpcq.pipeline.fate import REASON_HEADER
from hpcq.pipeline.messages import Task
from hpcq.pipeline.slots import plan_slots
from hpcq.pipeline.topology import Topology
from tests.support.scripted import ScriptedEvaluator

from .conftest import Namespace
from .helpers import (
    NODE_CLASS,
    TcpProxy,
    drain_queue,
    fast_url,
    header,
    queue_counts,
    source,
    wait_consumers,
    wait_until,
)
from .test_delivery import producer_for

pytestmark = pytest.mark.broker


def task(*directives: str, group: str = "g") -> Task:
    return Task(
        uuid.uuid4().hex, "dgemm-256", source(*directives), node_class=NODE_CLASS, group_id=group
    )


async def test_flapping_connection_during_one_long_evaluation(
    ns: Namespace, consumers_log: None
) -> None:
    """More cuts during one evaluation than the delivery limit that used to park such a
    task (3): the redeliveries join the running evaluation, its result is published
    once, and the task is not parked. (The broker still counts each return toward its
    backstop limit, 10 by default.)"""
    cuts = 5
    assert cuts < ns.topology.delivery_limit
    proxy = await TcpProxy().start()
    try:
        consumer = ns.consumer(url=proxy.url()).start()
        queue = ns.task_queue()
        await wait_consumers(queue, 1)
        async with producer_for(ns, max_attempts=1) as producer:  # not through the proxy
            slow = task("sleep=15", "gflops=4.5")
            await producer.submit_group([slow])

            async def taken() -> bool:
                return producer.stats.published == 1 and await queue_counts(queue) == (0, 1)

            await wait_until(taken, 10, "the slow task delivered")
            for cut in range(1, cuts + 1):
                assert proxy.cut() >= 1

                async def joined(n: int = cut) -> bool:
                    return consumer.log().count("redelivery joins the running evaluation") >= n

                await wait_until(joined, 10, f"redelivery {cut} joining the evaluation")
            group = await producer.next_group(30)
            await asyncio.sleep(0.5)  # a second copy of the result would arrive now
            stats = producer.stats
        assert await queue_counts(queue) == (0, 1)  # acked: nothing comes back
    finally:
        await proxy.close()
    [result] = group.results
    assert result.outcome.status is Status.OK and result.outcome.gflops == 4.5
    assert stats.results == 1 and stats.duplicates == 0  # published exactly once
    assert await queue_counts(ns.topology.dead_letter_queue) == (0, 0)
    assert consumer.log().count("[info     ] evaluated ") == 1  # never evaluated again
    assert consumer.poll() is None


async def test_task_that_kills_its_consumer_is_parked(ns: Namespace, consumers_log: None) -> None:
    """A supervisor (Slurm, systemd) restarts the consumer after each crash; the restarted
    one finds the task in its journal, and after `--crash-limit` crashes parks it
    without running it again."""
    deaths = 0
    current = ns.consumer("--crash-limit", "2").start()
    await wait_consumers(ns.task_queue(), 1)
    async with producer_for(ns, max_attempts=1) as producer:
        poison = task("exit", group="poison")
        await producer.submit_group([poison])

        async def parked() -> bool:
            nonlocal current, deaths
            if current.poll() is not None:
                deaths += 1
                assert deaths <= 2, "the poison task ran after its crash limit"
                current = ns.consumer("--crash-limit", "2").start()
            counts = await queue_counts(ns.topology.dead_letter_queue)
            return counts is not None and counts[0] == 1

        await wait_until(parked, 60, "the poison task in the DLQ", period_s=0.2)
        # the restarted consumer serves normal tasks again
        await producer.submit_group([task(group="after")])
        group = await producer.next_group(30)
    assert group.results[0].outcome.status is Status.OK
    assert deaths == 2
    [message] = await drain_queue(ns.topology.dead_letter_queue)
    assert codec.decode_task(message.body).task_id == poison.task_id
    reason = str(header(message, REASON_HEADER))
    assert reason.startswith("poison:") and "2 time(s)" in reason, reason
    assert current.poll() is None


async def test_broker_backstop_parks_poison_without_a_journal(
    ns: Namespace, consumers_log: None
) -> None:
    """Each restart on another node (here: another journal folder) knows nothing of the
    earlier crashes; the queue's delivery limit still parks the task."""
    ns.topology = Topology(namespace=ns.name, delivery_limit=2)

    def fresh() -> list[str]:
        return ["--delivery-limit", "2", "--journal-dir", str(ns.tmp / uuid.uuid4().hex)]

    deaths = 0
    current = ns.consumer(*fresh()).start()
    await wait_consumers(ns.task_queue(), 1)
    async with producer_for(ns, max_attempts=1) as producer:
        poison = task("exit", group="poison")
        await producer.submit_group([poison])

        async def parked() -> bool:
            nonlocal current, deaths
            if current.poll() is not None:
                deaths += 1
                assert deaths <= 3, "the poison task is retried forever"
                current = ns.consumer(*fresh()).start()
            counts = await queue_counts(ns.topology.dead_letter_queue)
            return counts is not None and counts[0] == 1

        await wait_until(parked, 60, "the poison task in the DLQ", period_s=0.2)
        if deaths < 3:
            # The dying consumer's socket closes (and the broker parks the task) a moment
            # before the process can be reaped, so the last poll may not have seen it dead
            # yet: it must die (now or already), or the task was parked after fewer returns
            # than the limit allows and this consumer lives on (the wait then fails).
            await current.wait(10)
            deaths += 1
    [message] = await drain_queue(ns.topology.dead_letter_queue)
    assert header(message, "x-first-death-reason") == "delivery_limit"
    assert deaths == 3  # limit 2: the third return parks it


async def test_healthy_task_beside_a_poison_task_is_not_parked(
    ns: Namespace, consumers_log: None
) -> None:
    """Two slots: a crash charges every evaluation running at that moment, so a healthy
    task is charged with the poison one. A charged task then runs alone: the poison task
    crashes the consumer once more on its own, the healthy one finishes and is answered."""
    two = ("--slots", "2", "--crash-limit", "2")
    deaths = 0
    current = ns.consumer(*two).start()
    queue = ns.task_queue()
    await wait_consumers(queue, 1)
    async with producer_for(ns, max_attempts=1) as producer:
        healthy = task("sleep=3", "gflops=2.0", group="healthy")
        await producer.submit_group([healthy])

        async def taken() -> bool:
            return producer.stats.published == 1 and await queue_counts(queue) == (0, 1)

        await wait_until(taken, 10, "the healthy task delivered")
        poison = task("exit", group="poison")
        await producer.submit_group([poison])  # starts beside it, kills the consumer

        async def settled() -> bool:
            nonlocal current, deaths
            if current.poll() is not None:
                deaths += 1
                assert deaths <= 2, "a task ran after its crash limit"
                current = ns.consumer(*two).start()
            counts = await queue_counts(ns.topology.dead_letter_queue)
            return producer.stats.results == 1 and counts is not None and counts[0] == 1

        await wait_until(settled, 60, "the healthy result and the parked poison", period_s=0.2)
        group = await producer.next_group(1)
    assert group.group_id == "healthy" and group.results[0].outcome.gflops == 2.0
    assert deaths == 2
    [message] = await drain_queue(ns.topology.dead_letter_queue)
    assert codec.decode_task(message.body).task_id == poison.task_id
    assert "evaluating it alone" in ns.logs()


class Recording(ScriptedEvaluator):
    def __init__(self, node_class: str) -> None:
        super().__init__(node_class)
        self.requests: list[EvalRequest] = []

    async def evaluate(self, request: EvalRequest) -> EvalResult:
        self.requests.append(request)
        return await super().evaluate(request)


async def test_unconfirmed_result_is_answered_from_memory(
    ns: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation ended but its result was never confirmed (every publish attempt
    failed): the delivery goes back to the queue, and its redelivery is answered from the
    remembered result, published then acked, without a second evaluation."""
    failures: list[str] = []
    publish = Link.publish

    async def first_result_lost(self: Link, *args: object, **kwargs: object) -> None:
        headers = kwargs.get("headers") or {}
        if headers.get("kind") == "result" and not failures:  # type: ignore[attr-defined]
            failures.append("result")
            raise InfraError("publish not confirmed after 6 attempts (test)")
        await publish(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Link, "publish", first_result_lost)
    evaluator = Recording(NODE_CLASS)
    consumer = Consumer(
        BrokerSettings(url=fast_url()),
        ns.topology,
        ConsumerSettings(node_class=NODE_CLASS, pin_process=False),
        plan_slots((0, 1), slots=1, reserve_cores=1),
        evaluator,
    )
    running = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.wait_ready(), 15)
        async with producer_for(ns, max_attempts=1) as producer:
            await producer.submit_group([task("gflops=3.0")])
            group = await producer.next_group(20)
            await asyncio.sleep(0.3)  # a second copy of the result would arrive now
            stats = producer.stats
    finally:
        consumer.drain()
        await asyncio.wait_for(running, 15)
    assert failures == ["result"]
    assert group.results[0].outcome.gflops == 3.0
    assert evaluator.calls == 1  # answered from memory, not evaluated again
    # The judge is told the cores off the slots: the consumer's reserved core.
    [request] = evaluator.requests
    assert request.cores == (1,) and request.judge_cores == (0,)
    assert stats.results == 1 and stats.duplicates == 0
    assert await queue_counts(ns.task_queue()) == (0, 0)  # acked
