"""The pipeline commands of `hpcq`: consumer, submit, replay, status.

`hpcq.cli.main.build_parser` calls `register`. The broker and telemetry options are
declared once, in `hpcq.cli.common`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from hpcq.cli.common import (
    EXIT_INFRA,
    EXIT_OK,
    add_broker_args,
    add_telemetry_args,
    broker_from_args,
    feed_from_args,
    open_telemetry,
    topology_from_args,
)
from hpcq.errors import ConfigError, InfraError
from hpcq.outcome import Constraints, Evaluator
from hpcq.pipeline.messages import Result, Task

log = structlog.get_logger()

_NODE_CLASS_HELP = "routing name of the CPU class (default: [node] name, detected from this CPU)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("consumer", help="serve evaluation tasks on this CPU node")
    add_broker_args(p)
    p.add_argument("--slots", type=int, default=None, help="default: as many as fit")
    p.add_argument("--cores-per-slot", type=int, default=1)
    p.add_argument(
        "--reserve-cores",
        type=int,
        default=None,
        help="cores kept for compiling and this process (default 1 when a slot still fits)",
    )
    p.add_argument("--node-class", default=None, help=_NODE_CLASS_HELP)
    p.add_argument("--heartbeat-s", type=float, default=5.0)
    p.add_argument(
        "--drain-timeout-s",
        type=float,
        default=None,
        help="after SIGTERM/SIGUSR1, cancel evaluations still running after this long",
    )
    p.add_argument(
        "--infra-streak",
        type=int,
        default=5,
        help="infra_error outcomes in a row after which the node pauses taking tasks",
    )
    p.add_argument("--infra-pause-s", type=float, default=60.0)
    p.add_argument(
        "--crash-limit",
        type=int,
        default=2,
        help="consumer deaths during a task's evaluation after which it is parked in the DLQ",
    )
    p.add_argument(
        "--journal-dir",
        default=None,
        help="local folder of the crash journals (default <cache-dir>/journal/NS/NODE_CLASS)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="evaluate every task afresh (re-benchmarking); redeliveries still dedupe",
    )
    add_telemetry_args(p)
    p.set_defaults(func=cmd_consumer)

    p = subparsers.add_parser("submit", help="evaluate C files on the cluster; JSON lines out")
    add_broker_args(p)
    p.add_argument("files", nargs="+", metavar="FILE.c")
    p.add_argument("--problem", default="dgemm-256")
    p.add_argument("--forbid", default="", help="comma-separated techniques the stage forbids")
    p.add_argument("--require", default="", help="comma-separated techniques it requires")
    p.add_argument("--node-class", default=None, help=_NODE_CLASS_HELP)
    p.add_argument(
        "--timeout-s",
        type=float,
        default=900.0,
        help="deadline of one attempt, from publish to result",
    )
    p.add_argument(
        "--attempts", type=int, default=2, help="attempts per file on deadline or infra_error"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("replay", help="read the replay stream: dump or re-publish")
    add_broker_args(p)
    p.add_argument(
        "--from",
        dest="start",
        default="first",
        help="'first', an ISO time (e.g. 2026-11-21T08:00:00Z) or an interval ('1h')",
    )
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--to", dest="to_file", metavar="FILE.jsonl", help="dump records here")
    out.add_argument("--republish", action="store_true", help="publish the tasks again")
    p.add_argument("--node-class", default=None, help="with --republish: route to this class")
    p.add_argument(
        "--idle-s", type=float, default=2.0, help="stop after the stream stayed quiet this long"
    )
    p.set_defaults(func=cmd_replay)

    p = subparsers.add_parser("status", help="queue depths, consumers, dead letters, rate")
    add_broker_args(p)
    p.add_argument(
        "--node-class",
        action="append",
        default=None,
        help="task queue(s) to show (repeatable; default this node's class)",
    )
    p.add_argument(
        "--window-s",
        type=float,
        default=60.0,
        help="throughput over this recent window (read from the stream)",
    )
    p.add_argument(
        "--listen-s", type=float, default=0.0, help="also listen this long for consumer heartbeats"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--watch",
        action="store_true",
        help="live view: nodes, queues, rates, training step and stages (needs the watch extra)",
    )
    p.add_argument("--refresh-s", type=float, default=2.0, help="with --watch: refresh period")
    p.add_argument("--watch-count", type=int, default=None, help=argparse.SUPPRESS)
    add_telemetry_args(p, reader=True)
    p.set_defaults(func=cmd_status)


# --- consumer ---------------------------------------------------------------------------


def _node_class(args: argparse.Namespace) -> str:
    from hpcq.cli.common import settings_from

    return str(args.node_class or settings_from(args).node.name)


def _engine(args: argparse.Namespace, node_class: str) -> Evaluator:
    from hpcq.cli.common import settings_from
    from hpcq.eval.engine import Engine

    settings = settings_from(args)
    if node_class != settings.node.name:
        node = dataclasses.replace(settings.node, name=node_class)
        settings = dataclasses.replace(settings, node=node)
    engine = Engine(settings)
    try:
        engine.sweep_scratch()  # debris of a consumer killed with -9 on this node
    except InfraError as exc:  # the first evaluation reports it as the node's failure
        log.warning("scratch directories not swept", error=str(exc))
    return engine


def _journal_dir(args: argparse.Namespace, node_class: str) -> Path:
    if args.journal_dir:
        return Path(args.journal_dir)
    from hpcq.cli.common import settings_from

    cache_dir: Path = settings_from(args).cache_dir
    return cache_dir / "journal" / str(args.namespace) / node_class


async def cmd_consumer(
    args: argparse.Namespace,
    make_evaluator: Callable[[str], Evaluator] | None = None,
    share_cores: bool = False,
) -> int:
    """`hpcq consumer`: the engine judges the tasks. Only a test launcher
    (tests/support/scripted_consumer.py) passes `make_evaluator` (node class -> a stand-in
    evaluator) and `share_cores` (slots may overlap: the stand-in times nothing). The CLI
    has no flag for either: made-up verdicts must never reach a real namespace."""
    from hpcq.pipeline.consumer import Consumer, ConsumerSettings
    from hpcq.pipeline.slots import allowed_cores, plan_slots

    node_class = _node_class(args)
    evaluator = make_evaluator(node_class) if make_evaluator else _engine(args, node_class)
    plan = plan_slots(
        allowed_cores(),
        slots=args.slots,
        cores_per_slot=args.cores_per_slot,
        reserve_cores=args.reserve_cores,
        share_cores=share_cores,
    )
    settings = ConsumerSettings(
        node_class=node_class,
        heartbeat_interval_s=args.heartbeat_s,
        drain_timeout_s=args.drain_timeout_s,
        infra_streak_limit=args.infra_streak,
        infra_pause_s=args.infra_pause_s,
        journal_dir=_journal_dir(args, node_class),
        crash_limit=args.crash_limit,
    )
    consumer = Consumer(broker_from_args(args), topology_from_args(args), settings, plan, evaluator)
    consumer.telemetry = await open_telemetry(args, node=consumer.name, node_class=node_class)
    loop = asyncio.get_running_loop()
    # Slurm sends SIGUSR1 (--signal) before the time limit and SIGTERM at it.
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.drain)
    try:
        await consumer.run()
    finally:
        await consumer.telemetry.close()  # a clean stop says "offline" itself
    return EXIT_OK


# --- submit -----------------------------------------------------------------------------


def _submit_line(path: str, result: Result | None, reason: str, task: Task) -> dict[str, Any]:
    if result is None:
        return {
            "file": path,
            "task_id": task.task_id,
            "status": "left_out",
            "reward": None,
            "gflops": None,
            "consumer": None,
            "message": reason,
        }
    slot = f"slot{result.slot}[{','.join(map(str, result.cores))}]"
    return {
        "file": path,
        "task_id": result.task_id,
        **result.outcome.to_dict(),
        "consumer": f"{result.consumer}/{slot}",
        "attempt": result.attempt,
    }


def _human(line: dict[str, Any]) -> str:
    gflops = "" if line["gflops"] is None else f" {line['gflops']:.2f} GFLOPS"
    reward = "none" if line["reward"] is None else f"{line['reward']:.4g}"
    where = f" on {line['consumer']}" if line["consumer"] else ""
    tail = "" if line["status"] == "ok" else f"\n  {line.get('message', '')}"
    return f"{line['file']}: {line['status']} reward={reward}{gflops}{where}{tail}"


async def cmd_submit(args: argparse.Namespace) -> int:
    from hpcq.cli.common import settings_from
    from hpcq.cli.kernel import parse_techniques, read_source
    from hpcq.eval.problems import default_kernels_dir, load_problem
    from hpcq.pipeline.producer import Producer, ProducerSettings

    # Bad input stops here, before anything is published.
    load_problem(args.problem, settings_from(args).kernels_dir or default_kernels_dir())
    sources = [read_source(Path(f)) for f in args.files]
    constraints = Constraints(
        forbidden=parse_techniques(args.forbid), required=parse_techniques(args.require)
    )
    if args.timeout_s <= 0 or args.attempts < 1:
        raise ConfigError("--timeout-s must be > 0 and --attempts >= 1")
    run = f"submit-{uuid.uuid4().hex[:12]}"
    node_class = _node_class(args)
    tasks = [
        Task(
            task_id=uuid.uuid4().hex,
            problem_id=args.problem,
            source=source,
            constraints=constraints,
            node_class=node_class,
            run_id=run,
            group_id=run,
            member=i,
        )
        for i, source in enumerate(sources)
    ]
    settings = ProducerSettings(
        name=run,
        max_outstanding=len(tasks),
        deadline_s=args.timeout_s,
        max_attempts=args.attempts,
        delete_queue_on_close=True,
    )
    async with Producer(broker_from_args(args), topology_from_args(args), settings) as producer:
        await producer.submit_group(tasks)
        # The producer's deadlines end every attempt; this bound only guards against a bug.
        group = await producer.next_group(timeout_s=args.timeout_s * (args.attempts + 1) + 60)
    results = {r.task_id: r for r in group.results}
    reasons = {x.task.task_id: x.reason for x in group.left_out}
    for path, task in zip(args.files, tasks, strict=True):
        line = _submit_line(path, results.get(task.task_id), reasons.get(task.task_id, ""), task)
        print(json.dumps(line) if args.json else _human(line), flush=True)
    return EXIT_OK if not group.left_out else EXIT_INFRA


# --- replay and status ------------------------------------------------------------------


async def cmd_replay(args: argparse.Namespace) -> int:
    from hpcq.pipeline.replay import ReplaySettings, replay

    settings = ReplaySettings(
        start=args.start,
        to_file=Path(args.to_file) if args.to_file else None,
        republish=args.republish,
        node_class=args.node_class,
        idle_s=args.idle_s,
    )
    summary = await replay(broker_from_args(args), topology_from_args(args), settings)
    print(json.dumps(dataclasses.asdict(summary)))
    return EXIT_OK


async def cmd_status(args: argparse.Namespace) -> int:
    from hpcq.pipeline.status import render, snapshot

    node_classes = tuple(args.node_class or (_node_class(args),))
    if args.watch:
        from hpcq.pipeline.watch import WatchSettings, watch

        if args.refresh_s <= 0 or args.window_s <= 0:
            raise ConfigError("--refresh-s and --window-s must be > 0")
        settings = WatchSettings(
            refresh_s=args.refresh_s, window_s=args.window_s, count=args.watch_count
        )
        await watch(
            broker_from_args(args),
            topology_from_args(args),
            node_classes,
            settings,
            feed_from_args(args),
        )
        return EXIT_OK
    report = await snapshot(
        broker_from_args(args),
        topology_from_args(args),
        node_classes=node_classes,
        window_s=args.window_s,
        listen_s=args.listen_s,
    )
    print(json.dumps(dataclasses.asdict(report)) if args.json else render(report))
    return EXIT_OK
