"""Replay: read a namespace's stream of tasks and results from any point.

Dump it to a JSON-lines file for debugging, or publish its tasks again (fresh task ids,
optionally to another node class) so the same kernels are benchmarked again. Over AMQP
0.9.1 a stream is read with a prefetch and acks (credit), from `x-stream-offset`. The
stream has no end marker: reading stops after `idle_s` of quiet, or at the first record
written after the replay began (re-published tasks land in the same stream).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity

from hpcq.errors import ConfigError, DecodeError, InputError
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings, Link
from hpcq.pipeline.fate import REPLAY_READER, stream_delivery, stream_record
from hpcq.pipeline.messages import Result, Task
from hpcq.pipeline.topology import Topology, check_name, declare_base, declare_task_queue

log = structlog.get_logger()

_INTERVAL = re.compile(r"^\d+[YMDhms]$")


@dataclass(frozen=True)
class ReplaySettings:
    start: str = "first"
    """'first', 'last', 'next', an interval such as '1h', or an ISO-8601 time."""
    to_file: Path | None = None
    republish: bool = False
    node_class: str | None = None
    """With republish: route the tasks to this node class instead of their own."""
    idle_s: float = 2.0
    prefetch: int = 500


@dataclass(frozen=True)
class ReplaySummary:
    tasks: int = 0
    results: int = 0
    other: int = 0  # records of other kinds, or undecodable ones
    republished: int = 0
    file: str | None = None


def stream_offset(start: str) -> str | datetime:
    """The `x-stream-offset` argument for a `--from` value."""
    if start in ("first", "last", "next") or _INTERVAL.match(start):
        return start
    try:
        when = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"--from {start!r}: use first, last, next, an interval like 30m or 2h, "
            "or an ISO time like 2026-11-21T08:00:00Z"
        ) from exc
    # A datetime is sent as an AMQP timestamp, which the stream reads as POSIX seconds.
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def replay(
    broker: BrokerSettings, topology: Topology, settings: ReplaySettings
) -> ReplaySummary:
    if settings.node_class is not None:
        check_name("node class", settings.node_class)
    offset = stream_offset(settings.start)
    began = time.time()
    link = await Link.open(broker, "hpcq-replay")
    try:
        tasks, summary = await _read(link, topology, settings, offset, began)
        if settings.republish:
            count = await _republish(link, topology, tasks, settings.node_class)
            summary = dataclasses.replace(summary, republished=count)
    finally:
        await link.close()
    return summary


async def _read(
    link: Link,
    topology: Topology,
    settings: ReplaySettings,
    offset: str | datetime,
    began: float,
) -> tuple[list[Task], ReplaySummary]:
    channel = await link.connection.channel()
    try:
        stream = await channel.declare_queue(topology.log_stream, passive=True)
    except ChannelNotFoundEntity as exc:
        raise InputError(f"namespace {topology.namespace!r} has no replay stream") from exc
    await channel.set_qos(prefetch_count=settings.prefetch)
    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    await stream.consume(inbox.put, arguments={"x-stream-offset": offset})
    out: IO[str] | None = settings.to_file.open("w") if settings.to_file else None
    tasks: list[Task] = []
    counts = {"tasks": 0, "results": 0, "other": 0}
    try:
        while True:
            try:
                message = await asyncio.wait_for(inbox.get(), settings.idle_s)
            except TimeoutError:
                break
            async with stream_delivery(message, REPLAY_READER):
                if message.timestamp and message.timestamp.timestamp() > began + 1:
                    break  # written after we began: ours, or new traffic
                line = _record_line(message, counts, tasks)
                if out is not None:
                    out.write(json.dumps(line) + "\n")
    finally:
        if out is not None:
            out.close()
        await channel.close()
    file = str(settings.to_file) if settings.to_file else None
    return tasks, ReplaySummary(**counts, file=file)


def _record_line(
    message: AbstractIncomingMessage, counts: dict[str, int], tasks: list[Task]
) -> dict[str, Any]:
    offset = (message.headers or {}).get("x-stream-offset")
    record = stream_record(message, REPLAY_READER)
    if isinstance(record, DecodeError):
        counts["other"] += 1
        return {"kind": "undecodable", "reason": str(record), "offset": offset}
    if isinstance(record, Task):
        counts["tasks"] += 1
        tasks.append(record)
    elif isinstance(record, Result):
        counts["results"] += 1
    else:
        counts["other"] += 1
    return {**codec.to_json(record), "offset": offset}


async def _republish(
    link: Link, topology: Topology, tasks: list[Task], node_class: str | None
) -> int:
    exchanges = await declare_base(link.channel, topology)
    declared: set[str] = set()
    fresh = [
        dataclasses.replace(
            t,
            task_id=uuid.uuid4().hex,
            node_class=node_class or t.node_class,
            run_id=f"{t.run_id}.replay" if t.run_id else "replay",
            attempt=1,
            reply_to="",  # nobody waits: results reach the stream and any observer
            created_at=time.time(),
        )
        for t in tasks
    ]
    for task in fresh:
        if task.node_class not in declared:
            await declare_task_queue(link.channel, topology, exchanges, task.node_class)
            declared.add(task.node_class)
    await asyncio.gather(
        *(
            link.publish(
                exchanges.tasks,
                t.node_class,
                codec.encode(t),
                headers={"kind": "task", "task_id": t.task_id},
            )
            for t in fresh
        )
    )
    log.info("republished", tasks=len(fresh))
    return len(fresh)
