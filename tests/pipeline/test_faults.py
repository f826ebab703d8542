"""Faults injected on purpose: cut connections, bad messages, bad input, drain, a broken
node (poison tasks: test_poison.py)."""

from __future__ import annotations

import asyncio
import signal
import uuid

import msgpack
import pytest

from hpcq.outcome import Status
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings, Link
from hpcq.pipeline.fate import REASON_HEADER
from hpcq.pipeline.messages import SCHEMA_VERSION, Task
from hpcq.pipeline.topology import declare_base, declare_task_queue

from .conftest import Namespace
from .helpers import (
    NODE_CLASS,
    TcpProxy,
    drain_queue,
    free_port,
    header,
    proxy_url,
    queue_counts,
    source,
    wait_consumers,
    wait_until,
)
from .test_delivery import assert_exactly_once, make_groups, producer_for, run_groups

pytestmark = pytest.mark.broker


async def test_connections_cut_mid_run_lose_nothing(ns: Namespace, consumers_log: None) -> None:
    proxy = await TcpProxy().start()
    try:
        ns.consumer(url=proxy.url()).start()
        ns.consumer(url=proxy.url()).start()
        await wait_consumers(ns.task_queue(), 2)
        groups = make_groups(15, 4, "sleep=0.02")
        async with producer_for(ns, url=proxy.url()) as producer:
            running = asyncio.create_task(run_groups(producer, groups, timeout_s=60))
            for after in (15, 35):
                await wait_until(
                    lambda n=after: asyncio.sleep(0, producer.stats.results >= n),  # type: ignore[misc]
                    30,
                    f"{after} results",
                )
                assert proxy.cut() >= 3  # two consumers and the producer
            done = await asyncio.wait_for(running, 90)
            await assert_exactly_once(ns, producer, groups, done)
        # both sides came back: the consumers are registered again
        await wait_consumers(ns.task_queue(), 2, timeout_s=10)
    finally:
        await proxy.close()
    assert all(c.poll() is None for c in ns.consumers), "a consumer died of a cut"


async def publish_raw(ns: Namespace, link: Link, body: bytes) -> None:
    exchanges = await declare_base(link.channel, ns.topology)
    await declare_task_queue(link.channel, ns.topology, exchanges, NODE_CLASS)
    await link.publish(exchanges.tasks, NODE_CLASS, body)


async def test_bad_messages_are_dead_lettered(ns: Namespace, consumers_log: None) -> None:
    consumer = ns.consumer().start()
    await wait_consumers(ns.task_queue(), 1)
    good = Task("t1", "dgemm-256", "void f(void){}", node_class=NODE_CLASS)
    wire = msgpack.unpackb(codec.encode(good))
    bodies = {
        "malformed": b"\xc1 this is not msgpack",
        "schema_version": msgpack.packb({**wire, "v": SCHEMA_VERSION + 1}),
        "oversized": msgpack.packb({**wire, "src": "x" * (codec.MAX_MESSAGE_BYTES + 16)}),
        "invalid": msgpack.packb({**wire, "m": "first"}),
    }
    link = await Link.open(BrokerSettings(), "test-raw")
    try:
        for body in bodies.values():
            await publish_raw(ns, link, body)
    finally:
        await link.close()
    # the consumer keeps serving: a good task still gets its result
    async with producer_for(ns) as producer:
        [task] = make_groups(1, 1)[0]
        await producer.submit_group([task])
        group = await producer.next_group(20)
    assert group.results[0].outcome.status is Status.OK
    parked = await drain_queue(ns.topology.dead_letter_queue)
    reasons = sorted(str(header(m, REASON_HEADER)).split(":")[0] for m in parked)
    assert reasons == sorted(bodies), [header(m, REASON_HEADER) for m in parked]
    assert consumer.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
async def test_signal_drains_in_flight_task(
    ns: Namespace, consumers_log: None, sig: signal.Signals
) -> None:
    """Slurm sends SIGUSR1 (--signal) before the time limit, SIGTERM at it."""
    consumer = ns.consumer().start()
    queue = ns.task_queue()
    await wait_consumers(queue, 1)
    async with producer_for(ns) as producer:
        slow = Task(
            uuid.uuid4().hex,
            "dgemm-256",
            source("sleep=1.5"),
            node_class=NODE_CLASS,
            group_id="slow",
        )
        await producer.submit_group([slow])

        async def taken() -> bool:  # confirmed in the queue, then gone from it
            return producer.stats.published == 1 and await queue_counts(queue) == (0, 1)

        await wait_until(taken, 10, "the slow task delivered")
        waiting = Task(
            uuid.uuid4().hex, "dgemm-256", source(), node_class=NODE_CLASS, group_id="waiting"
        )
        await producer.submit_group([waiting])  # prefetch 1: it stays in the queue
        consumer.signal(sig)
        assert await consumer.wait(15) == 0
        finished = await producer.next_group(5)
        assert finished.group_id == "slow" and finished.results[0].outcome.status is Status.OK
        assert await queue_counts(queue) == (1, 0)  # not taken, not lost
        ns.consumer().start()  # another node picks it up
        rest = await producer.next_group(30)
    assert rest.group_id == "waiting" and rest.results[0].outcome.status is Status.OK
    assert "consumer stopped" in consumer.log()


async def test_broken_node_pauses_instead_of_draining_the_queue(
    ns: Namespace, consumers_log: None
) -> None:
    consumer = ns.consumer("--infra-streak", "2", "--infra-pause-s", "1.5").start()
    queue = ns.task_queue()
    await wait_consumers(queue, 1)
    async with producer_for(ns, max_attempts=1) as producer:
        for i in range(2):
            broken = Task(
                uuid.uuid4().hex,
                "dgemm-256",
                source("raise"),
                node_class=NODE_CLASS,
                group_id=f"broken{i}",
            )
            await producer.submit_group([broken])
            group = await producer.next_group(10)
            assert "infra_error" in group.left_out[0].reason

        async def paused() -> bool:
            return await queue_counts(queue) == (0, 0)

        await wait_until(paused, 5, "the consumer to unsubscribe")
        await wait_consumers(queue, 1, timeout_s=10)  # and to come back after the pause
        [task] = make_groups(1, 1)[0]
        await producer.submit_group([task])
        assert (await producer.next_group(10)).results[0].outcome.status is Status.OK
    assert consumer.poll() is None


async def test_consumer_started_before_the_broker_waits_for_it(
    ns: Namespace, consumers_log: None
) -> None:
    port = free_port()
    consumer = ns.consumer(url=proxy_url(port)).start()  # nothing listens there yet
    await asyncio.sleep(1.5)
    assert consumer.poll() is None, "gave up at once (aio-pika's fail_fast)"
    proxy = await TcpProxy(listen_port=port).start()  # the broker "comes up"
    try:
        await wait_consumers(ns.task_queue(), 1, timeout_s=20)
    finally:
        await proxy.close()
    assert "broker not reachable yet" in consumer.log()


async def test_unknown_problem_is_bad_input_not_a_broken_node(
    ns: Namespace, consumers_log: None
) -> None:
    """The real engine refuses an unknown problem id: the task is parked with its reason,
    and it is no infra_error (with a streak of 1 a single one would pause the node)."""
    consumer = ns.consumer(
        "--infra-streak",
        "1",
        "--infra-pause-s",
        "600",
        scripted=False,
        env={"HPCQ_CACHE_DIR": str(ns.tmp / "cache")},
    ).start()
    queue = ns.task_queue()
    await wait_consumers(queue, 1, timeout_s=30)
    link = await Link.open(BrokerSettings(), "test-raw")
    try:
        for i in range(3):
            bad = Task(f"bad{i}", "dgemm-7", source(), node_class=NODE_CLASS)
            await publish_raw(ns, link, codec.encode(bad))
    finally:
        await link.close()

    async def parked() -> bool:
        counts = await queue_counts(ns.topology.dead_letter_queue)
        return counts is not None and counts[0] == 3

    await wait_until(parked, 20, "three bad tasks in the DLQ")
    assert await queue_counts(queue) == (0, 1)  # still taking tasks: not paused
    reasons = [
        str(header(m, REASON_HEADER)) for m in await drain_queue(ns.topology.dead_letter_queue)
    ]
    assert all(r.startswith("bad_input: unknown problem id 'dgemm-7'") for r in reasons), reasons
    assert "infra errors in a row" not in consumer.log()
    assert consumer.poll() is None
