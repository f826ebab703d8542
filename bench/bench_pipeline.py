"""`make bench-pipeline`: what the RabbitMQ pipeline costs.

In one run, against the broker on 127.0.0.1:5672:
1. round trips per second (task published with confirms -> consumer -> result published
   with confirms -> ack -> result counted by the producer) with the no-op (scripted)
   evaluator (tests/support/scripted_consumer.py) for 1, 2 and 4 consumer processes,
   next to a minimal bare aio-pika echo of the same message size and the same guarantees
   (quorum queues, confirms, manual ack after the reply is confirmed), as a ratio
   (target: hpcq >= 0.8 of the echo);
2. the pipeline's overhead on real evaluations: the same corpus of kernels evaluated
   through the queue (one consumer, one slot) versus directly by the engine on the same
   core, as a throughput ratio (target >= 0.97). Needs hpcq.eval.engine and a node where it
   can evaluate; otherwise the section says why it was skipped.
A benchmark, not a test: figures are reported, never asserted. JSON -> bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hpcq.eval.settings import detect_node_class  # noqa: E402
from hpcq.pipeline import codec  # noqa: E402
from hpcq.pipeline.broker import BrokerSettings  # noqa: E402
from hpcq.pipeline.messages import Task  # noqa: E402
from hpcq.pipeline.producer import Producer, ProducerSettings  # noqa: E402
from hpcq.pipeline.slots import allowed_cores, plan_slots  # noqa: E402
from hpcq.pipeline.topology import Topology, delete_namespace  # noqa: E402

URL = os.environ.get("HPCQ_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CORPUS = REPO / "tests" / "corpus" / "honest"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
NODE_CLASS = detect_node_class()


def sample_source() -> str:
    """A representative kernel (a few KB), so messages have a realistic size."""
    files = sorted(CORPUS.glob("*.c"))
    return files[0].read_text() if files else "void dgemm(void) {}\n" * 150


async def wait_consumers(queue: str, count: int, timeout_s: float = 30) -> None:
    connection = await aio_pika.connect(URL)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            channel = await connection.channel()
            try:
                q = await channel.declare_queue(queue, passive=True)
                if (q.declaration_result.consumer_count or 0) >= count:
                    return
            except aio_pika.exceptions.ChannelNotFoundEntity:
                pass
            else:
                await channel.close()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{count} consumer(s) never appeared on {queue}")
    finally:
        await connection.close()


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


# --- (1a) hpcq round trips ----------------------------------------------------------------


async def hpcq_round_trips(consumers: int, tasks: int, window: int, slots: int) -> dict[str, Any]:
    topo = Topology(namespace=f"bench-{uuid.uuid4().hex[:8]}")
    procs = [
        spawn(
            [
                sys.executable,
                "-m",
                "tests.support.scripted_consumer",  # `hpcq consumer` with the no-op evaluator
                "--log-level",
                "warning",
                "consumer",
                "--namespace",
                topo.namespace,
                "--amqp-url",
                URL,
                "--slots",
                str(slots),
                "--node-class",
                NODE_CLASS,
            ]
        )
        for _ in range(consumers)
    ]
    src = sample_source()
    group = 8
    groups = [
        [
            Task(
                uuid.uuid4().hex,
                "dgemm-256",
                src,
                node_class=NODE_CLASS,
                group_id=f"g{g}",
                member=m,
            )
            for m in range(group)
        ]
        for g in range(tasks // group)
    ]
    settings = ProducerSettings(name="bench", max_outstanding=window, deadline_s=120)
    try:
        await wait_consumers(topo.task_queue(NODE_CLASS), consumers)
        async with Producer(BrokerSettings(url=URL), topo, settings) as producer:
            start = time.perf_counter()

            async def submit() -> None:
                for members in groups:
                    await producer.submit_group(members)

            submitting = asyncio.create_task(submit())
            for _ in groups:
                await producer.next_group(120)
            await submitting
            elapsed = time.perf_counter() - start
            stats = producer.stats
    finally:
        stop(procs)
        connection = await aio_pika.connect(URL)
        await delete_namespace(await connection.channel(), topo, (NODE_CLASS,), ("bench",))
        await connection.close()
    n = len(groups) * group
    return {
        "round_trips": n,
        "seconds": round(elapsed, 3),
        "per_s": round(n / elapsed, 1),
        "duplicates": stats.duplicates,
        "message_bytes": len(codec.encode(groups[0][0])),
    }


# --- (1b) the bare aio-pika echo ----------------------------------------------------------


async def echo_worker(work: str, exchange_name: str, reply: str, prefetch: int) -> None:
    """Consume, publish the same bytes back with a confirm, then ack: nothing else."""
    connection = await aio_pika.connect_robust(URL)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.get_queue(work)
    exchange = (
        await channel.get_exchange(exchange_name) if exchange_name else channel.default_exchange
    )

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await exchange.publish(
            aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            reply,
        )
        await message.ack()

    await queue.consume(on_message)
    await asyncio.Future()


async def echo_round_trips(
    workers: int, messages: int, size: int, window: int, prefetch: int, stream: bool = False
) -> dict[str, Any]:
    """With `stream`, both directions also go to a stream, as hpcq's replay log does:
    that variant separates the cost of the replay requirement from hpcq's own."""
    base = f"bench-echo-{uuid.uuid4().hex[:8]}"
    work, reply, log = f"{base}.work", f"{base}.reply", f"{base}.log"
    connection = await aio_pika.connect(URL)
    channel = await connection.channel(publisher_confirms=True)
    quorum = {"x-queue-type": "quorum"}
    work_queue = await channel.declare_queue(work, durable=True, arguments=quorum)
    replies = await channel.declare_queue(reply, durable=True, arguments=quorum)
    exchange = channel.default_exchange
    if stream:
        exchange = await channel.declare_exchange(base, aio_pika.ExchangeType.TOPIC)
        await work_queue.bind(exchange, work)
        await replies.bind(exchange, reply)
        stream_queue = await channel.declare_queue(
            log, durable=True, arguments={"x-queue-type": "stream"}
        )
        await stream_queue.bind(exchange, "#")
    await channel.set_qos(prefetch_count=200)
    procs = [
        spawn(
            [
                sys.executable,
                __file__,
                "--echo-worker",
                work,
                base if stream else "",
                reply,
                str(prefetch),
            ]
        )
        for _ in range(workers)
    ]
    try:
        await wait_consumers(work, workers)
        room = asyncio.Semaphore(window)
        done = asyncio.Event()
        received = 0

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            room.release()
            if received == messages:
                done.set()

        await replies.consume(on_reply)
        body = os.urandom(size)
        publishes: list[asyncio.Future[Any]] = []
        start = time.perf_counter()
        for _ in range(messages):
            await room.acquire()
            # confirms awaited concurrently, like hpcq's producer does
            publishes.append(
                asyncio.ensure_future(
                    exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        work,
                    )
                )
            )
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - start
        await asyncio.gather(*publishes)
    finally:
        stop(procs)
        for name in (work, reply, log):
            await channel.queue_delete(name)
        if stream:
            await channel.exchange_delete(base)
        await connection.close()
    return {
        "workers": workers,
        "round_trips": messages,
        "seconds": round(elapsed, 3),
        "per_s": round(messages / elapsed, 1),
    }


# --- (2) overhead on real evaluations -----------------------------------------------------


async def engine_overhead(files: list[Path], repeat: int) -> dict[str, Any]:
    """Alternating passes over the corpus, directly and through the queue, on the same
    core; both engines have their result cache off, so every pass really evaluates."""
    try:
        from hpcq.eval.engine import Engine
    except ImportError as exc:
        return {"skipped": f"hpcq.eval.engine not importable: {exc}"}
    from hpcq.eval.settings import EngineSettings
    from hpcq.outcome import EvalRequest, Status

    # What `hpcq consumer --slots 1` plans on this node: one slot, the rest reserved.
    plan = plan_slots(allowed_cores(), slots=1)
    [core] = plan.slots[0].cores
    reserved = set(plan.reserved) or {core}
    sources = [f.read_text() for f in files]
    topo = Topology(namespace=f"bench-{uuid.uuid4().hex[:8]}")
    with tempfile.TemporaryDirectory() as direct_cache, tempfile.TemporaryDirectory() as q_cache:
        engine = Engine(EngineSettings(cache_dir=Path(direct_cache), use_cache=False))
        warm = await engine.evaluate(EvalRequest("dgemm-256", sources[0], cores=(core,)))
        if warm.status is Status.INFRA_ERROR:
            return {"skipped": f"the engine cannot evaluate on this node: {warm.message}"}
        proc = spawn(
            [
                *(sys.executable, "-m", "hpcq", "--log-level", "warning"),
                *("--cache-dir", q_cache, "consumer", "--no-cache", "--slots", "1"),
                *("--namespace", topo.namespace, "--amqp-url", URL, "--node-class", NODE_CLASS),
            ]
        )
        direct_s: list[float] = []
        queued_s: list[float] = []
        statuses: set[str] = set()
        left_out = 0
        try:
            await wait_consumers(topo.task_queue(NODE_CLASS), 1)
            settings = ProducerSettings(name="bench", max_outstanding=len(files))
            async with Producer(BrokerSettings(url=URL), topo, settings) as producer:

                async def queued_pass(group_id: str) -> float:
                    nonlocal left_out
                    tasks = [
                        Task(uuid.uuid4().hex, "dgemm-256", src, node_class=NODE_CLASS,
                             group_id=group_id, member=i)
                        for i, src in enumerate(sources)
                    ]  # fmt: skip
                    start = time.perf_counter()
                    await producer.submit_group(tasks)
                    group = await producer.next_group(1800)
                    elapsed = time.perf_counter() - start
                    statuses.update(f"queued:{r.outcome.status}" for r in group.results)
                    left_out += len(group.left_out)
                    return elapsed

                await queued_pass("warm-up")  # the consumer builds its harness, as above
                for r in range(repeat):
                    # Same cores as the consumer: this process (and the compiler it starts)
                    # on the reserved cores, the candidate on the slot's core.
                    everything = os.sched_getaffinity(0)
                    os.sched_setaffinity(0, reserved)
                    start = time.perf_counter()
                    for src in sources:
                        done = await engine.evaluate(EvalRequest("dgemm-256", src, cores=(core,)))
                        statuses.add(f"direct:{done.status}")
                    direct_s.append(time.perf_counter() - start)
                    os.sched_setaffinity(0, everything)
                    queued_s.append(await queued_pass(f"pass{r}"))
        finally:
            stop([proc])
            connection = await aio_pika.connect(URL)
            await delete_namespace(await connection.channel(), topo, (NODE_CLASS,), ("bench",))
            await connection.close()
    direct = statistics.median(direct_s)
    queued = statistics.median(queued_s)
    return {
        "kernels": len(files),
        "core": core,
        "passes": repeat,
        "direct_s": round(direct, 3),
        "queued_s": round(queued, 3),
        "ratio": round(direct / queued, 4),
        "target": 0.97,
        "direct_runs_s": [round(x, 3) for x in direct_s],
        "queued_runs_s": [round(x, 3) for x in queued_s],
        "statuses": sorted(statuses),
        "left_out": left_out,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    size = len(
        codec.encode(
            Task("x" * 32, "dgemm-256", sample_source(), node_class=NODE_CLASS, group_id="g")
        )
    )
    rows = []
    for n in args.consumers:
        # Interleaved repetitions, medians: the broker shares this machine's cores.
        echo_runs, stream_runs, hpcq_runs = [], [], []
        for _ in range(args.repeat):
            echo_runs.append(await echo_round_trips(n, args.tasks, size, args.window, args.slots))
            stream_runs.append(
                await echo_round_trips(n, args.tasks, size, args.window, args.slots, stream=True)
            )
            hpcq_runs.append(await hpcq_round_trips(n, args.tasks, args.window, args.slots))
        echo_per_s = statistics.median(r["per_s"] for r in echo_runs)
        stream_per_s = statistics.median(r["per_s"] for r in stream_runs)
        hpcq_per_s = statistics.median(r["per_s"] for r in hpcq_runs)
        rows.append(
            {
                "consumers": n,
                "hpcq_per_s": hpcq_per_s,
                "echo_per_s": echo_per_s,
                "ratio": round(hpcq_per_s / echo_per_s, 3),
                "echo_with_stream_per_s": stream_per_s,
                "ratio_to_echo_with_stream": round(hpcq_per_s / stream_per_s, 3),
                "hpcq_runs_per_s": [r["per_s"] for r in hpcq_runs],
                "echo_runs_per_s": [r["per_s"] for r in echo_runs],
                "echo_with_stream_runs_per_s": [r["per_s"] for r in stream_runs],
                "duplicates": sum(r["duplicates"] for r in hpcq_runs),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    files = sorted(CORPUS.glob("*.c"))[: args.kernels]
    overhead = (
        await engine_overhead(files, args.repeat)
        if files and not args.skip_engine
        else {"skipped": "no corpus or --skip-engine"}
    )
    return {
        "benchmark": "pipeline",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": len(os.sched_getaffinity(0)),
        "broker": URL.split("@")[-1],
        "message_bytes": size,
        "round_trips_per_run": args.tasks,
        "in_flight_window": args.window,
        "slots_per_consumer": args.slots,
        "round_trips": rows,
        "round_trip_target": 0.8,
        "engine_overhead": overhead,
    }


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--echo-worker":
        asyncio.run(echo_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--window", type=int, default=64, help="round trips in flight")
    parser.add_argument("--slots", type=int, default=4, help="prefetch per consumer process")
    parser.add_argument(
        "--consumers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4]
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration")
    parser.add_argument("--kernels", type=int, default=8, help="corpus kernels for part 2")
    parser.add_argument("--skip-engine", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    out = REPO / "bench" / "results" / f"pipeline-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"-> {out}", file=sys.stderr)
