"""The consumer: one process per CPU node, serving the task queue of its node class.

Each delivery takes a slot (disjoint cores), is evaluated there, its result is published
with confirms, and only then is the delivery acked (what happens to a delivery is
decided in `hpcq.fate`). Prefetch equals the number of slots, so a delivery never waits
in this process while it ages against the broker's `consumer_timeout`.

Redeliveries are expected (a reconnect requeues every unacked delivery): a task already
being evaluated here is answered by the running evaluation, one answered recently by
the remembered result, and the engine's own cache catches the rest.

`drain()` (SIGTERM/SIGUSR1 in the CLI) stops taking tasks, gives back any that did not
start, lets the running evaluations finish, and returns.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pamqp.common import FieldValue

from hpcq import codec
from hpcq.broker import BrokerSettings, Link
from hpcq.errors import InfraError
from hpcq.fate import settle, verdict_for
from hpcq.messages import Heartbeat, Result, Task
from hpcq.outcome import EvalRequest, EvalResult, Evaluator, Status
from hpcq.slots import Slot, SlotPlan
from hpcq.topology import Exchanges, Topology, declare_base, declare_task_queue

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
    pin_process: bool = True
    """Move this process (event loop, compiler children) onto the plan's reserved cores."""
    infra_streak_limit: int = 5
    """After this many infra_error outcomes in a row the node stops taking tasks for
    `infra_pause_s`: a broken node must not drain the queue into infra errors."""
    infra_pause_s: float = 60.0


class Consumer:
    def __init__(
        self,
        broker: BrokerSettings,
        topology: Topology,
        settings: ConsumerSettings,
        plan: SlotPlan,
        evaluator: Evaluator,
    ) -> None:
        self.broker = broker
        self.topology = topology
        self.settings = settings
        self.plan = plan
        self.evaluator = evaluator
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.done = 0  # results published
        self._free: asyncio.Queue[Slot] = asyncio.Queue()
        for slot in plan.slots:
            self._free.put_nowait(slot)
        self._running: dict[_Key, asyncio.Task[Result]] = {}
        self._recent: OrderedDict[_Key, Result] = OrderedDict()
        self._handlers: set[asyncio.Task[object]] = set()
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
        """Serve until drained. Raises InfraError when the broker is unreachable at start."""
        if self.settings.pin_process and self.plan.reserved:
            os.sched_setaffinity(0, self.plan.reserved)
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
        log.info("consumer stopped", consumer=self.name, done=self.done)

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
        handlers = set(self._handlers)
        if not handlers:
            return
        _, pending = await asyncio.wait(handlers, timeout=self.settings.drain_timeout_s)
        if pending:
            log.warning("drain timeout: cancelling evaluations", tasks=len(pending))
            for evaluation in self._running.values():
                evaluation.cancel()
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
        task = codec.decode_task(message.body)
        key = (task.task_id, task.attempt)
        result = self._recent.get(key)
        if result is None:
            evaluation = self._running.get(key)
            if evaluation is None:
                if self._draining.is_set():
                    raise InfraError("draining: task given back before it started")
                evaluation = asyncio.create_task(self._evaluate(task))
                self._running[key] = evaluation
                evaluation.add_done_callback(lambda _: self._running.pop(key, None))
            else:
                log.info("redelivery joins the running evaluation", task_id=task.task_id)
            # shield: a redelivery of the same task shares the evaluation; cancelling one
            # handler must not cancel it for the other.
            result = await asyncio.shield(evaluation)
        assert self._link is not None and self._exchanges is not None
        await self._link.publish(
            self._exchanges.results,
            task.reply_to or "_",
            codec.encode(result),
            headers={"kind": "result", "task_id": task.task_id},
        )
        self.done += 1

    async def _evaluate(self, task: Task) -> Result:
        slot = await self._take_slot()
        started = time.time()
        try:
            request = EvalRequest(
                problem_id=task.problem_id,
                source=task.source,
                constraints=task.constraints,
                cores=slot.cores,
            )
            try:
                outcome = await self.evaluator.evaluate(request)
            except Exception as exc:  # the node failed, not the kernel
                log.warning("evaluator failed", task_id=task.task_id, error=repr(exc))
                outcome = EvalResult(
                    status=Status.INFRA_ERROR,
                    reward=None,
                    message=f"{type(exc).__name__}: {exc}",
                    problem_id=task.problem_id,
                    node_class=self.settings.node_class,
                )
        finally:
            self._free.put_nowait(slot)
        result = self._result(task, outcome, slot, started)
        if outcome.status is Status.INFRA_ERROR:
            self._infra_streak += 1
            if self._infra_streak >= self.settings.infra_streak_limit:
                self._unhealthy.set()
        else:
            self._infra_streak = 0
            self._remember((task.task_id, task.attempt), result)  # infra: a retry retries
        log.info(
            "evaluated",
            task_id=task.task_id,
            status=str(outcome.status),
            slot=slot.label(),
            seconds=round(result.finished_at - started, 3),
        )
        return result

    async def _take_slot(self) -> Slot:
        if not self._free.empty():
            return self._free.get_nowait()
        # Only after a reconnect: new deliveries while old evaluations hold the slots.
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

    def _remember(self, key: _Key, result: Result) -> None:
        self._recent[key] = result
        while len(self._recent) > self.settings.remembered_results:
            self._recent.popitem(last=False)

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
            in_flight=tuple(task_id for task_id, _ in self._running),
            sent_at=time.time(),
        )
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


async def _first(*events: asyncio.Event) -> None:
    """Until any of the events is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
