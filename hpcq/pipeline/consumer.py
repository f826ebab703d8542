"""The consumer: one process per CPU node, serving the task queue of its node class.

Each delivery takes a slot (disjoint cores), is evaluated there, its result is published
with confirms, and only then is the delivery acked (what happens to a delivery is
decided in `hpcq.pipeline.fate`). Prefetch equals the number of slots, so a delivery never waits
in this process while it ages against the broker's `consumer_timeout`.

One task is evaluated and answered once per (task_id, attempt), however often it is
delivered: a job (evaluate, then publish the result) runs apart from the deliveries, so
a cut connection, which kills the delivery's handler and returns the delivery to the
queue, does not stop it. A redelivery of a task running here joins its job; one
answered here is acked at once (its result was confirmed); one evaluated here but not
yet answered is answered from the remembered result.

Poison accounting (hpcq.pipeline.journal): every evaluation is written down when it starts and
when it ends. A consumer that starts finds the evaluations its dead predecessors on this
host never ended: each such task is charged one crash. A task charged crashes runs
alone (no other evaluation beside it, so the next crash is its own), and one charged
`crash_limit` crashes is parked in the DLQ without running again. A cut connection
charges nothing; the queue's delivery limit is only a backstop.

`drain()` (SIGTERM/SIGUSR1 in the CLI) stops taking tasks, gives back any that did not
start, lets the running evaluations finish, and returns.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pamqp.common import FieldValue

from hpcq.errors import ConfigError, InfraError, InputError, PoisonTaskError
from hpcq.outcome import EvalRequest, EvalResult, Evaluator, Status
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings, Link
from hpcq.pipeline.fate import settle, verdict_for
from hpcq.pipeline.journal import CrashJournal
from hpcq.pipeline.messages import Heartbeat, Result, Task
from hpcq.pipeline.slots import Slot, SlotPlan
from hpcq.pipeline.telemetry import DRAINING, ONLINE, PAUSED, NodeBeat, NullTelemetry, Telemetry
from hpcq.pipeline.topology import Exchanges, Topology, declare_base, declare_task_queue

log = structlog.get_logger()

_Key = tuple[str, int]  # (task_id, attempt)


@dataclass(frozen=True)
class ConsumerSettings:
    node_class: str
    heartbeat_interval_s: float = 5.0
    drain_timeout_s: float | None = None
    """After a drain signal, how long running evaluations may go on before they are
    cancelled and their tasks requeued. None: as long as they need (Slurm's signal
    lead time should exceed the longest evaluation)."""
    remembered_results: int = 4096
    """Recent results kept to answer redeliveries without evaluating again."""
    journal_dir: Path | None = None
    """Folder of the crash journals of this namespace and node class on this host
    (hpcq.pipeline.journal). None: crashes are counted in memory only, so they are forgotten
    with the process and only the queue's delivery limit parks a poison task."""
    crash_limit: int = 2
    """Consumer deaths during a task's evaluation after which the task is parked in the
    DLQ instead of being run again."""
    pin_process: bool = True
    """Move this process (event loop, compiler children) onto the plan's reserved cores."""
    infra_streak_limit: int = 5
    """After this many infra_error outcomes in a row the node stops taking tasks for
    `infra_pause_s`: a broken node must not drain the queue into infra errors."""
    infra_pause_s: float = 60.0

    def __post_init__(self) -> None:
        if self.crash_limit < 1 or self.remembered_results < 1:
            raise ConfigError("crash_limit and remembered_results must be >= 1")


@dataclass
class _Answer:
    result: Result
    confirmed: bool = False  # published and confirmed by the broker


class Consumer:
    def __init__(
        self,
        broker: BrokerSettings,
        topology: Topology,
        settings: ConsumerSettings,
        plan: SlotPlan,
        evaluator: Evaluator,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.broker = broker
        self.topology = topology
        self.settings = settings
        self.plan = plan
        self.evaluator = evaluator
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.done = 0  # results published
        self.statuses: Counter[str] = Counter()  # results published, per status
        self.last_error = ""  # the latest infra error, for telemetry
        # Heartbeats also go here (MQTT, Prometheus); the CLI may set it before run().
        self.telemetry: Telemetry = telemetry or NullTelemetry()
        self._free: asyncio.Queue[Slot] = asyncio.Queue()
        for slot in plan.slots:
            self._free.put_nowait(slot)
        self._jobs: dict[_Key, asyncio.Task[None]] = {}  # evaluate, then publish
        self._recent: OrderedDict[_Key, _Answer] = OrderedDict()
        self._taking = asyncio.Lock()  # slots are taken in arrival order
        self._handlers: set[asyncio.Task[object]] = set()
        self._journal = CrashJournal(None)
        self._draining = asyncio.Event()
        self._unhealthy = asyncio.Event()
        self._infra_streak = 0
        self._ready = asyncio.Event()
        self._link: Link | None = None
        self._exchanges: Exchanges | None = None

    # --- lifecycle ----------------------------------------------------------------

    def drain(self) -> None:
        if not self._draining.is_set():
            log.info("draining: no new tasks; finishing the running ones", consumer=self.name)
            self._draining.set()

    async def wait_ready(self) -> None:
        """Until the consumer is registered with the broker (tests and benchmarks)."""
        await self._ready.wait()

    async def run(self) -> None:
        """Serve until drained. Raises InfraError when the broker is unreachable at start,
        BrokerRefusedError when it refuses the credentials or the vhost."""
        if self.settings.pin_process and self.plan.reserved:
            os.sched_setaffinity(0, self.plan.reserved)
        self._journal = self._open_journal()
        try:
            await self._run_linked()
        finally:
            self._journal.close()
        log.info("consumer stopped", consumer=self.name, done=self.done)

    def _open_journal(self) -> CrashJournal:
        folder = self.settings.journal_dir
        try:
            journal = CrashJournal(folder)
        except OSError as exc:
            raise ConfigError(
                f"crash journal {folder}: {exc.strerror or exc}; pass --journal-dir a "
                "writable local folder"
            ) from exc
        if journal.adopted:
            log.warning(
                "evaluations were running when an earlier consumer died: each task is "
                "charged a crash",
                evaluations=journal.adopted,
                journal_dir=str(folder),
            )
        return journal

    async def _run_linked(self) -> None:
        link = await Link.open(self.broker, f"hpcq-consumer {self.name}")
        self._link = link
        try:
            exchanges = await declare_base(link.channel, self.topology)
            self._exchanges = exchanges
            queue = await declare_task_queue(
                link.channel, self.topology, exchanges, self.settings.node_class
            )
            # Per-consumer (not global) prefetch: quorum queues refuse global QoS.
            await link.channel.set_qos(prefetch_count=len(self.plan.slots))
            tag = await queue.consume(self._on_message)
            log.info(
                "consumer ready",
                consumer=self.name,
                queue=queue.name,
                slots=[s.label() for s in self.plan.slots],
                reserved=list(self.plan.reserved),
            )
            self._ready.set()
            beats = asyncio.create_task(self._heartbeats())
            try:
                await self._serve(queue, tag)
                await self._finish_in_flight()
            finally:
                beats.cancel()
                await asyncio.gather(beats, return_exceptions=True)
            await self._heartbeat()  # a last one, saying it is draining
        finally:
            await link.close()

    async def _serve(self, queue: AbstractQueue, tag: str) -> None:
        """Consume until drained; pause while the node looks broken. Returns having
        stopped consuming."""
        while True:
            await _first(self._draining, self._unhealthy)
            await self._stop_consuming(queue, tag)
            if self._draining.is_set():
                return
            log.warning(
                "infra errors in a row: not taking tasks for a while",
                streak=self._infra_streak,
                pause_s=self.settings.infra_pause_s,
            )
            try:
                await asyncio.wait_for(self._draining.wait(), self.settings.infra_pause_s)
                return
            except TimeoutError:
                pass
            self._unhealthy.clear()
            self._infra_streak = 0
            tag = await queue.consume(self._on_message)
            log.info("taking tasks again", consumer=self.name)

    async def _stop_consuming(self, queue: AbstractQueue, tag: str) -> None:
        try:
            await asyncio.wait_for(queue.cancel(tag), self.broker.publish_timeout_s)
        except Exception as exc:  # the connection may be down; it then delivers nothing
            log.warning("could not cancel the consumer", error=repr(exc))

    async def _finish_in_flight(self) -> None:
        # Jobs too: one whose deliveries all died with their channel still publishes.
        waiting = set(self._handlers) | set(self._jobs.values())
        if not waiting:
            return
        _, pending = await asyncio.wait(waiting, timeout=self.settings.drain_timeout_s)
        if pending:
            log.warning("drain timeout: cancelling evaluations", tasks=len(self._jobs))
            for job in self._jobs.values():
                job.cancel()
            await asyncio.wait(pending, timeout=self.broker.publish_timeout_s)

    # --- deliveries ---------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika runs each delivery callback as its own task; keep them for the drain.
        me = asyncio.current_task()
        assert me is not None
        self._handlers.add(me)
        try:
            try:
                await self._handle(message)
                verdict = verdict_for(None)
            except (Exception, asyncio.CancelledError) as exc:  # a cancellation settles too
                verdict = verdict_for(exc)
            await settle(message, verdict, self._dead_letter)
        finally:
            self._handlers.discard(me)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        """Return once the task's result is confirmed; raise to give the delivery another
        fate (hpcq.pipeline.fate). Its channel dying cancels this handler, never the job."""
        task = codec.decode_task(message.body)
        key = (task.task_id, task.attempt)
        answer = self._recent.get(key)
        if answer is not None and answer.confirmed:
            log.info("redelivery of an answered task: acked", task_id=task.task_id)
            return
        job = self._jobs.get(key)
        if job is None:
            crashes = self._journal.crashes(task.task_id)
            if crashes >= self.settings.crash_limit:
                raise PoisonTaskError(
                    f"poison: its evaluation was running when a consumer died {crashes} "
                    f"time(s) (crash limit {self.settings.crash_limit})"
                )
            if self._draining.is_set():
                raise InfraError("draining: task given back before it started")
            job = asyncio.create_task(self._job(task, alone=crashes > 0))
            self._jobs[key] = job
            job.add_done_callback(lambda done: self._job_done(key, done))
        else:
            log.info("redelivery joins the running evaluation", task_id=task.task_id)
        # shield: the job outlives this delivery (a cut connection cancels the handler;
        # the redelivery joins the same job).
        await asyncio.shield(job)

    def _job_done(self, key: _Key, job: asyncio.Task[None]) -> None:
        self._jobs.pop(key, None)
        if not job.cancelled() and (exc := job.exception()) is not None:
            # Also read here: every delivery of the job may have died before it ended.
            log.info("task not answered", task_id=key[0], error=repr(exc))

    async def _job(self, task: Task, alone: bool) -> None:
        """Evaluate (unless evaluated here before), publish the result, remember that it
        was confirmed: at most one evaluation and one result per (task_id, attempt)."""
        key = (task.task_id, task.attempt)
        answer = self._recent.get(key)
        if answer is None:
            answer = self._remember(key, await self._evaluate(task, alone))
        else:
            log.info("answering from the remembered result", task_id=task.task_id)
        assert self._link is not None and self._exchanges is not None
        await self._link.publish(
            self._exchanges.results,
            task.reply_to or "_",
            codec.encode(answer.result),
            headers={"kind": "result", "task_id": task.task_id},
        )
        answer.confirmed = True
        self.done += 1
        self.statuses[str(answer.result.outcome.status)] += 1

    async def _evaluate(self, task: Task, alone: bool) -> Result:
        if alone:
            log.warning(
                "task was running when a consumer died: evaluating it alone",
                task_id=task.task_id,
                crashes=self._journal.crashes(task.task_id),
            )
        slots = await self._take_slots(len(self.plan.slots) if alone else 1)
        slot = slots[0]
        started = time.time()
        completed = False
        self._journal.started(task.task_id)
        try:
            outcome = await self._outcome(task, slot)
            completed = True
        finally:
            self._journal.ended(task.task_id, completed)
            for taken in slots:
                self._free.put_nowait(taken)
        result = self._result(task, outcome, slot, started)
        if outcome.status is Status.INFRA_ERROR:
            self.last_error = outcome.message[:200]
            self._infra_streak += 1
            if self._infra_streak >= self.settings.infra_streak_limit:
                self._unhealthy.set()
        else:
            self._infra_streak = 0
        log.info(
            "evaluated",
            task_id=task.task_id,
            status=str(outcome.status),
            slot=slot.label(),
            seconds=round(result.finished_at - started, 3),
        )
        return result

    async def _outcome(self, task: Task, slot: Slot) -> EvalResult:
        """The evaluator's verdict. Bad input (an unknown problem id) raises: it is
        dead-lettered, and is no sign of a broken node."""
        request = EvalRequest(
            problem_id=task.problem_id,
            source=task.source,
            constraints=task.constraints,
            cores=slot.cores,
            judge_cores=self.plan.reserved,  # never a slot's cores
        )
        try:
            return await self.evaluator.evaluate(request)
        except InputError:
            raise
        except Exception as exc:  # the node failed, not the kernel
            log.warning("evaluator failed", task_id=task.task_id, error=repr(exc))
            return EvalResult(
                status=Status.INFRA_ERROR,
                reward=None,
                message=f"{type(exc).__name__}: {exc}",
                problem_id=task.problem_id,
                node_class=self.settings.node_class,
            )

    async def _take_slots(self, count: int) -> list[Slot]:
        # One taker at a time, in arrival order: a task that must run alone waits for
        # every slot, and later tasks do not overtake it.
        async with self._taking:
            slots: list[Slot] = []
            try:
                while len(slots) < count:
                    slots.append(await self._take_slot())
            except BaseException:
                for slot in slots:
                    self._free.put_nowait(slot)
                raise
            return slots

    async def _take_slot(self) -> Slot:
        if not self._free.empty():
            return self._free.get_nowait()
        # After a reconnect (new deliveries while old evaluations hold the slots) or
        # behind a task that runs alone.
        getter = asyncio.ensure_future(self._free.get())
        drained = asyncio.ensure_future(self._draining.wait())
        try:
            await asyncio.wait({getter, drained}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
        if getter.done():
            return getter.result()
        getter.cancel()
        raise InfraError("draining: task given back before it started")

    def _result(self, task: Task, outcome: EvalResult, slot: Slot, started: float) -> Result:
        return Result(
            task_id=task.task_id,
            outcome=outcome,
            consumer=self.name,
            slot=slot.index,
            cores=slot.cores,
            node_class=self.settings.node_class,
            run_id=task.run_id,
            group_id=task.group_id,
            member=task.member,
            step=task.step,
            policy_version=task.policy_version,
            attempt=task.attempt,
            started_at=started,
            finished_at=time.time(),
        )

    def _remember(self, key: _Key, result: Result) -> _Answer:
        # infra_error results too: a retry is another attempt, hence another key.
        answer = self._recent[key] = _Answer(result)
        while len(self._recent) > self.settings.remembered_results:
            self._recent.popitem(last=False)
        return answer

    async def _dead_letter(self, body: bytes, headers: Mapping[str, FieldValue]) -> None:
        assert self._link is not None and self._exchanges is not None
        await self._link.publish(self._exchanges.dead_letters, "", body, headers=headers)

    # --- heartbeats ----------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            await self._heartbeat()
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _heartbeat(self) -> None:
        assert self._link is not None and self._exchanges is not None
        beat = Heartbeat(
            consumer=self.name,
            node_class=self.settings.node_class,
            slots=len(self.plan.slots),
            busy=len(self.plan.slots) - self._free.qsize(),
            done=self.done,
            draining=self._draining.is_set(),
            in_flight=tuple(task_id for task_id, _ in self._jobs),
            sent_at=time.time(),
        )
        self.telemetry.heartbeat(self._node_beat(beat))
        try:
            # Not mandatory: nobody may be listening, and a lost beat is harmless.
            await self._link.publish(
                self._exchanges.control,
                f"heartbeat.{self.settings.node_class}",
                codec.encode(beat),
                mandatory=False,
                attempts=1,
            )
        except InfraError as exc:
            log.debug("heartbeat not sent", error=str(exc))

    def _node_beat(self, beat: Heartbeat) -> NodeBeat:
        paused = PAUSED if self._unhealthy.is_set() else ONLINE
        return NodeBeat(
            node=beat.consumer,
            node_class=beat.node_class,
            state=DRAINING if beat.draining else paused,
            slots=beat.slots,
            busy=beat.busy,
            done=beat.done,
            statuses=dict(self.statuses),
            last_error=self.last_error,
            sent_at=beat.sent_at,
        )


async def _first(*events: asyncio.Event) -> None:
    """Until any of the events is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
