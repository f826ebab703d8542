"""The producer core: publish GRPO groups of tasks, collect their results, hand back
complete groups.

- Tasks are published with confirms, at most `max_outstanding` at a time: a slow
  cluster throttles generation (`submit_group` waits) instead of piling up stale work.
- Results are collected idempotently: the first counted result of a task_id wins; any
  later copy (a redelivery, a retry that raced the original) is counted as a duplicate
  and dropped.
- A task whose attempt misses its deadline, or comes back `infra_error`, is published
  again (same task_id, attempt + 1) up to `max_attempts`, then left out of its group
  with the reason. It is never scored as a bad kernel.

The policy (generation, GRPO updates) drives this class; `hpcq submit` drives it for
people without a model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pamqp.common import FieldValue

from hpcq.errors import ConfigError, InfraError, InputError
from hpcq.outcome import Status
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings, Link
from hpcq.pipeline.fate import settle, verdict_for
from hpcq.pipeline.messages import Result, Task
from hpcq.pipeline.topology import (
    Exchanges,
    Topology,
    check_name,
    declare_base,
    declare_results_queue,
    declare_task_queue,
)

log = structlog.get_logger()


@dataclass(frozen=True)
class ProducerSettings:
    name: str = "producer"
    """Names this producer's results queue (`<ns>.results.<name>`): tasks carry it in
    reply_to. Two producers sharing a name would split each other's results."""
    max_outstanding: int = 256
    """Admission limit: tasks published and not yet answered or left out."""
    deadline_s: float = 900.0
    """Time from publishing an attempt to its result; size it for the queue's backlog
    (max_outstanding / cluster slots x evaluation time) plus one evaluation."""
    max_attempts: int = 3
    """Attempts per task (deadline misses and infra_error) before it is left out."""
    results_prefetch: int = 200
    delete_queue_on_close: bool = False
    """For one-shot producers (`hpcq submit`): remove the results queue at the end."""

    def __post_init__(self) -> None:
        check_name("producer name", self.name)
        if self.max_outstanding < 1 or self.max_attempts < 1 or self.deadline_s <= 0:
            raise ConfigError("max_outstanding >= 1, max_attempts >= 1 and deadline_s > 0")


@dataclass(frozen=True)
class LeftOut:
    task: Task
    reason: str


@dataclass(frozen=True)
class CompletedGroup:
    group_id: str
    results: tuple[Result, ...]  # counted results, ordered by member
    left_out: tuple[LeftOut, ...]


@dataclass(frozen=True)
class ProducerStats:
    published: int
    results: int
    duplicates: int
    unknown: int
    retries: int
    left_out: int
    outstanding: int


@dataclass
class _Pending:
    task: Task  # the latest attempt
    deadline: float  # loop time


@dataclass
class _Group:
    members: dict[str, Task]
    results: dict[str, Result] = field(default_factory=dict)
    left_out: dict[str, LeftOut] = field(default_factory=dict)

    def complete(self) -> bool:
        return len(self.results) + len(self.left_out) == len(self.members)


class Producer:
    def __init__(
        self, broker: BrokerSettings, topology: Topology, settings: ProducerSettings
    ) -> None:
        self.broker = broker
        self.topology = topology
        self.settings = settings
        self._room = asyncio.Semaphore(settings.max_outstanding)
        self._pending: dict[str, _Pending] = {}
        self._groups: dict[str, _Group] = {}
        self._group_of: dict[str, str] = {}  # task_id -> group_id while pending
        self._counted: set[str] = set()
        self._ready: asyncio.Queue[CompletedGroup] = asyncio.Queue()
        self._background: set[asyncio.Task[None]] = set()
        self._declared: set[str] = set()
        self._declaring = asyncio.Lock()
        self._link: Link | None = None
        self._exchanges: Exchanges | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._counts = dict.fromkeys(
            ("published", "results", "duplicates", "unknown", "retries", "left_out"), 0
        )

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        link = await Link.open(self.broker, f"hpcq-producer {self.settings.name}")
        self._link = link
        self._exchanges = await declare_base(link.channel, self.topology)
        # The results queue exists before any task is published, so no result can
        # reach only the stream.
        queue = await declare_results_queue(
            link.channel, self.topology, self._exchanges, self.settings.name
        )
        self._queue = queue
        await link.channel.set_qos(prefetch_count=self.settings.results_prefetch)
        self._consumer_tag = await queue.consume(self._on_result)
        self._spawn(self._watch_deadlines())

    async def close(self) -> None:
        for job in self._background:
            job.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._link is not None:
            if self.settings.delete_queue_on_close and self._queue is not None:
                try:
                    # Stop consuming first: a queue deleted under its consumer makes the
                    # broker cancel it, which aio-pika reports as a warning.
                    if self._consumer_tag is not None:
                        await asyncio.wait_for(self._queue.cancel(self._consumer_tag), 10)
                    await asyncio.wait_for(self._queue.delete(if_unused=False, if_empty=False), 10)
                except Exception as exc:  # it expires by itself (x-expires)
                    log.warning("results queue not deleted", error=repr(exc))
            await self._link.close()

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def stats(self) -> ProducerStats:
        return ProducerStats(**self._counts, outstanding=len(self._pending))

    # --- submitting ---------------------------------------------------------------

    async def submit_group(self, tasks: Sequence[Task]) -> None:
        """Admit one group's tasks and start publishing them; waits only while the
        admission limit is reached. Confirms are awaited in the background: a task whose
        publish fails is retried or left out like any other failed attempt."""
        group_id = self._check_group(tasks)
        now = time.time()
        stamped = [
            dataclasses.replace(t, reply_to=self.settings.name, attempt=1, created_at=now)
            for t in tasks
        ]
        # Encoded now: an oversized task fails here, in the caller's hands.
        bodies = [codec.encode(t) for t in stamped]
        self._groups[group_id] = _Group(members={t.task_id: t for t in stamped})
        loop = asyncio.get_running_loop()
        for task, body in zip(stamped, bodies, strict=True):
            await self._room.acquire()
            self._group_of[task.task_id] = group_id
            self._pending[task.task_id] = _Pending(task, loop.time() + self.settings.deadline_s)
            self._spawn(self._publish(task, body))

    def _check_group(self, tasks: Sequence[Task]) -> str:
        if not tasks:
            raise InputError("a group needs at least one task")
        group_ids = {t.group_id for t in tasks}
        if len(group_ids) != 1 or not tasks[0].group_id:
            raise InputError("every task of a group carries the same, non-empty group_id")
        group_id = tasks[0].group_id
        if group_id in self._groups:
            raise InputError(f"group {group_id!r} was already submitted")
        ids = [t.task_id for t in tasks]
        if len(set(ids)) != len(ids) or self._counted.intersection(ids):
            raise InputError(f"group {group_id!r}: task ids must be unique and new")
        if len(tasks) > self.settings.max_outstanding:
            raise ConfigError(
                f"group of {len(tasks)} > max_outstanding {self.settings.max_outstanding}: "
                "raise max_outstanding"
            )
        return group_id

    async def _publish(self, task: Task, body: bytes | None = None) -> None:
        assert self._link is not None and self._exchanges is not None
        try:
            await self._ensure_task_queue(task.node_class)
            await self._link.publish(
                self._exchanges.tasks,
                task.node_class,
                body or codec.encode(task),
                headers={"kind": "task", "task_id": task.task_id},
            )
        except InfraError as exc:
            log.warning("task not published", task_id=task.task_id, error=str(exc))
            pending = self._pending.get(task.task_id)
            if pending is not None and pending.task.attempt == task.attempt:
                self._retry_or_leave_out(task.task_id, f"not published: {exc}")
            return
        self._counts["published"] += 1

    async def _ensure_task_queue(self, node_class: str) -> None:
        """Tasks for a class without consumers yet must wait in its queue."""
        assert self._link is not None and self._exchanges is not None
        async with self._declaring:
            if node_class not in self._declared:
                await declare_task_queue(
                    self._link.channel, self.topology, self._exchanges, node_class
                )
                self._declared.add(node_class)

    # --- collecting ---------------------------------------------------------------

    async def next_group(self, timeout_s: float | None = None) -> CompletedGroup:
        """The next complete group (results counted once, left-out members listed)."""
        return await asyncio.wait_for(self._ready.get(), timeout_s)

    async def _on_result(self, message: AbstractIncomingMessage) -> None:
        try:
            self._accept(codec.decode_result(message.body))
            verdict = verdict_for(None)
        except Exception as exc:
            verdict = verdict_for(exc)
        await settle(message, verdict, self._dead_letter)

    def _accept(self, result: Result) -> None:
        task_id = result.task_id
        if task_id in self._counted:
            self._counts["duplicates"] += 1
            return
        pending = self._pending.get(task_id)
        if pending is None:  # another run's, or from before this producer started
            self._counts["unknown"] += 1
            return
        if result.outcome.status is Status.INFRA_ERROR:
            if result.attempt == pending.task.attempt:
                self._retry_or_leave_out(task_id, f"infra_error: {result.outcome.message}")
            return  # an older attempt's failure: the newer attempt is still running
        # Any attempt's real verdict counts: a measurement is a measurement.
        self._counts["results"] += 1
        self._finish(task_id, result)

    def _retry_or_leave_out(self, task_id: str, reason: str) -> None:
        pending = self._pending.get(task_id)
        if pending is None:
            return
        task = pending.task
        if task.attempt < self.settings.max_attempts:
            self._counts["retries"] += 1
            retry = dataclasses.replace(task, attempt=task.attempt + 1, created_at=time.time())
            # Replace the attempt now, so the deadline watcher does not see it twice.
            pending.task = retry
            pending.deadline = asyncio.get_running_loop().time() + self.settings.deadline_s
            log.info("retrying task", task_id=task_id, attempt=retry.attempt, reason=reason)
            self._spawn(self._publish(retry))
            return
        self._counts["left_out"] += 1
        log.warning("task left out", task_id=task_id, attempts=task.attempt, reason=reason)
        self._finish(task_id, LeftOut(task, f"{reason} (after {task.attempt} attempts)"))

    def _finish(self, task_id: str, outcome: Result | LeftOut) -> None:
        del self._pending[task_id]
        self._counted.add(task_id)
        self._room.release()
        group_id = self._group_of.pop(task_id)
        group = self._groups[group_id]
        if isinstance(outcome, Result):
            group.results[task_id] = outcome
        else:
            group.left_out[task_id] = outcome
        if group.complete():
            del self._groups[group_id]
            order = {tid: t.member for tid, t in group.members.items()}
            self._ready.put_nowait(
                CompletedGroup(
                    group_id=group_id,
                    results=tuple(sorted(group.results.values(), key=lambda r: order[r.task_id])),
                    left_out=tuple(
                        sorted(group.left_out.values(), key=lambda x: order[x.task.task_id])
                    ),
                )
            )

    async def _watch_deadlines(self) -> None:
        loop = asyncio.get_running_loop()
        period = min(1.0, self.settings.deadline_s / 4)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            late = [tid for tid, p in self._pending.items() if p.deadline <= now]
            for task_id in late:
                self._retry_or_leave_out(task_id, f"deadline of {self.settings.deadline_s:g} s")

    async def _dead_letter(self, body: bytes, headers: Mapping[str, FieldValue]) -> None:
        assert self._link is not None and self._exchanges is not None
        await self._link.publish(self._exchanges.dead_letters, "", body, headers=headers)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.create_task(coro)
        self._background.add(job)
        job.add_done_callback(self._background.discard)
