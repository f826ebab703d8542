"""Delivery through the real broker: batches, duplicates, retries, admission, kill -9."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter

import pytest

from hpcq.outcome import EvalResult, Status
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings, Link
from hpcq.pipeline.messages import Result, Task
from hpcq.pipeline.producer import CompletedGroup, Producer, ProducerSettings
from hpcq.pipeline.replay import ReplaySettings, replay
from hpcq.pipeline.topology import declare_base

from .conftest import Namespace
from .helpers import NODE_CLASS, fast_url, source, wait_consumers, wait_until

pytestmark = pytest.mark.broker


def make_groups(count: int, size: int, *directives: str) -> list[list[Task]]:
    return [
        [
            Task(
                task_id=uuid.uuid4().hex,
                problem_id="dgemm-256",
                source=source(*directives, f"gflops={g}.{m}"),
                node_class=NODE_CLASS,
                group_id=f"g{g}",
                member=m,
            )
            for m in range(size)
        ]
        for g in range(count)
    ]


def producer_for(ns: Namespace, url: str | None = None, **settings: object) -> Producer:
    name = f"p{len(ns.producers)}"
    ns.producers.add(name)
    options = {"name": name, "deadline_s": 60.0, **settings}
    return Producer(
        BrokerSettings(url=url or fast_url()),
        ns.topology,
        ProducerSettings(**options),  # type: ignore[arg-type]
    )


async def run_groups(
    producer: Producer, groups: list[list[Task]], timeout_s: float
) -> list[CompletedGroup]:
    async def submit_all() -> None:
        for group in groups:
            await producer.submit_group(group)

    submitting = asyncio.create_task(submit_all())
    done = [await producer.next_group(timeout_s) for _ in groups]
    await asyncio.wait_for(submitting, 5)
    return done


async def result_copies(ns: Namespace) -> int:
    """Results the broker carried for this namespace, every copy (from the stream)."""
    settings = ReplaySettings(start="first", idle_s=1.0)
    return (await replay(BrokerSettings(url=fast_url()), ns.topology, settings)).results


async def assert_exactly_once(
    ns: Namespace, producer: Producer, groups: list[list[Task]], done: list[CompletedGroup]
) -> None:
    """Nothing lost, nothing counted twice: every task has its result, and of all the
    result copies the broker carried (a redelivery or a retried publish makes more than
    one) the producer saw every one and counted one per task, the rest as duplicates
    (a cut of the producer's own connection redelivers a copy to it: more duplicates)."""
    sent = {t.task_id for g in groups for t in g}
    assert not [x for g in done for x in g.left_out], "a task was left out"
    assert {r.task_id for g in done for r in g.results} == sent
    for group in done:  # results ordered by member, measured as scripted
        assert [r.member for r in group.results] == list(range(len(group.results)))
        assert all(r.outcome.status is Status.OK for r in group.results)
    copies = await result_copies(ns)

    async def all_seen() -> bool:
        return producer.stats.results + producer.stats.duplicates >= copies

    await wait_until(all_seen, 5, f"the {copies} result copies at the producer")
    stats = producer.stats
    assert stats.results == len(sent) and stats.outstanding == 0, stats


async def test_200_tasks_through_two_consumers(ns: Namespace, consumers_log: None) -> None:
    a, b = ns.consumer().start(), ns.consumer().start()
    await wait_consumers(ns.task_queue(), 2)
    groups = make_groups(25, 8)
    async with producer_for(ns) as producer:
        done = await run_groups(producer, groups, timeout_s=60)
        await assert_exactly_once(ns, producer, groups, done)
        stats = producer.stats
    assert stats.published == 200
    assert stats.duplicates == 0 and stats.retries == 0  # no fault, no second copy
    by_consumer = Counter(r.consumer for g in done for r in g.results)
    assert len(by_consumer) == 2, by_consumer  # both consumers served
    assert a.poll() is None and b.poll() is None


async def test_kill_9_consumer_mid_run(ns: Namespace, consumers_log: None) -> None:
    victim, survivor = ns.consumer().start(), ns.consumer().start()
    await wait_consumers(ns.task_queue(), 2)
    groups = make_groups(10, 4, "sleep=0.05")
    async with producer_for(ns) as producer:
        submitting = asyncio.create_task(run_groups(producer, groups, timeout_s=60))
        await wait_until(lambda: asyncio.sleep(0, producer.stats.results >= 10), 30, "10 results")
        victim.signal(signal.SIGKILL)  # mid-evaluation: its delivery is unacked
        done = await asyncio.wait_for(submitting, 90)
        await assert_exactly_once(ns, producer, groups, done)
    assert await victim.wait(5) == -signal.SIGKILL  # it did not die on its own before
    assert survivor.poll() is None


async def test_duplicate_results_count_once_and_infra_errors_retry(ns: Namespace) -> None:
    """No consumer: the test plays the consumer by publishing results by hand."""
    async with producer_for(ns, max_attempts=2) as producer:
        name = producer.settings.name
        t1, t2 = make_groups(1, 2)[0]
        await producer.submit_group([t1, t2])
        link = await Link.open(BrokerSettings(), "test-fake-consumer")
        try:
            exchanges = await declare_base(link.channel, ns.topology)

            async def answer(task: Task, status: Status, attempt: int) -> None:
                outcome = EvalResult(status=status, reward=None if status == "infra_error" else 1.0)
                result = Result(
                    task.task_id, outcome, "fake:1", 0, (0,), node_class=NODE_CLASS, attempt=attempt
                )
                await link.publish(exchanges.results, name, codec.encode(result))

            for _ in range(3):  # a result delivered three times is counted once
                await answer(t1, Status.OK, 1)
            await answer(t2, Status.INFRA_ERROR, 1)  # retried: attempt 2 is published
            await wait_until(lambda: asyncio.sleep(0, producer.stats.retries == 1), 10, "a retry")
            await answer(t2, Status.INFRA_ERROR, 2)  # out of attempts: left out
            group = await producer.next_group(10)
        finally:
            await link.close()
        stats = producer.stats
    assert [r.task_id for r in group.results] == [t1.task_id]
    assert [x.task.task_id for x in group.left_out] == [t2.task_id]
    assert "infra_error" in group.left_out[0].reason and "2 attempts" in group.left_out[0].reason
    assert stats.duplicates == 2 and stats.results == 1 and stats.left_out == 1


async def test_deadline_then_left_out(ns: Namespace) -> None:
    async with producer_for(ns, deadline_s=0.4, max_attempts=2) as producer:
        [task] = make_groups(1, 1)[0]
        await producer.submit_group([task])
        group = await producer.next_group(10)
        stats = producer.stats
    assert not group.results and "deadline" in group.left_out[0].reason
    assert stats.retries == 1 and stats.published == 2


async def test_admission_limit_throttles_submission(ns: Namespace, consumers_log: None) -> None:
    groups = make_groups(3, 2)
    async with producer_for(ns, max_outstanding=4) as producer:
        await producer.submit_group(groups[0])
        await producer.submit_group(groups[1])
        blocked = asyncio.create_task(producer.submit_group(groups[2]))
        await asyncio.sleep(0.3)
        assert not blocked.done() and producer.stats.outstanding == 4
        ns.consumer().start()  # capacity arrives: the third group gets in
        done = [await producer.next_group(30) for _ in range(3)]
        await asyncio.wait_for(blocked, 5)
        await assert_exactly_once(ns, producer, groups, done)
