"""`hpcq status`: what the pipeline of one namespace is doing, from AMQP alone.

The broker here has no management plugin, so everything comes from passive queue
declarations (ready messages and consumers per queue), the replay stream (records of
the recent window: throughput) and, if asked, consumer heartbeats on the control
exchange. Unacknowledged deliveries (tasks being evaluated) are not visible over AMQP:
the heartbeats report them.

`BrokerFeed` is the same, followed live for `hpcq status --watch` (hpcq.pipeline.watch): one
connection, the stream read once from the window's start and then as it grows, the
heartbeats and stage announcements of the control exchange as they come.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelNotFoundEntity

from hpcq.errors import DecodeError
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings, connect
from hpcq.pipeline.fate import STATUS_READER, stream_delivery, stream_record
from hpcq.pipeline.messages import Heartbeat, Result, StageUpdate, Task
from hpcq.pipeline.topology import Topology


@dataclass(frozen=True)
class QueueInfo:
    name: str
    exists: bool
    ready: int  # messages waiting (not those being evaluated)
    consumers: int


@dataclass(frozen=True)
class ConsumerInfo:
    consumer: str
    node_class: str
    slots: int
    busy: int
    done: int
    draining: bool
    seen_s_ago: float


@dataclass(frozen=True)
class StatusReport:
    namespace: str
    task_queues: tuple[QueueInfo, ...]
    dead_letters: QueueInfo
    window_s: float
    tasks_in_window: int
    results_in_window: int
    results_per_s: float
    consumers: tuple[ConsumerInfo, ...]


async def _queue_info(connection: AbstractRobustConnection, name: str) -> QueueInfo:
    # A passive declare of a missing queue closes its channel: one channel per probe.
    channel = await connection.channel()
    try:
        ok = await channel.declare_queue(name, passive=True)
    except ChannelNotFoundEntity:
        return QueueInfo(name, exists=False, ready=0, consumers=0)
    result = ok.declaration_result
    info = QueueInfo(name, True, result.message_count or 0, result.consumer_count or 0)
    await channel.close()
    return info


async def _recent_counts(
    connection: AbstractRobustConnection, topology: Topology, window_s: float
) -> tuple[int, int]:
    """Tasks and results written to the stream during the last `window_s` seconds."""
    channel = await connection.channel()
    try:
        stream = await channel.declare_queue(topology.log_stream, passive=True)
    except ChannelNotFoundEntity:
        return 0, 0
    now = time.time()
    await channel.set_qos(prefetch_count=1000)
    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    await stream.consume(inbox.put, arguments={"x-stream-offset": f"{int(window_s) + 1}s"})
    tasks = results = 0
    try:
        while True:
            try:
                message = await asyncio.wait_for(inbox.get(), 0.5)
            except TimeoutError:
                break
            async with stream_delivery(message, STATUS_READER):
                stamp = message.timestamp.timestamp() if message.timestamp else now
                if stamp > now:
                    break
                if stamp < now - window_s:
                    continue  # the offset is rounded down to a chunk boundary
                kind = (message.headers or {}).get("kind")
                tasks += kind == "task"
                results += kind == "result"
    finally:
        await channel.close()
    return tasks, results


async def _heartbeats(
    connection: AbstractRobustConnection, topology: Topology, listen_s: float
) -> tuple[ConsumerInfo, ...]:
    channel = await connection.channel()
    try:
        control = await channel.declare_exchange(
            topology.control_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(control, "heartbeat.#")
        beats: dict[str, Heartbeat] = {}

        async def on_beat(message: AbstractIncomingMessage) -> None:
            try:
                beat = codec.decode_heartbeat(message.body)
            except DecodeError:
                return
            beats[beat.consumer] = beat

        await queue.consume(on_beat, no_ack=True)
        await asyncio.sleep(listen_s)
    finally:
        await channel.close()
    now = time.time()
    return tuple(
        ConsumerInfo(
            b.consumer, b.node_class, b.slots, b.busy, b.done, b.draining, round(now - b.sent_at, 1)
        )
        for b in sorted(beats.values(), key=lambda b: b.consumer)
    )


async def snapshot(
    broker: BrokerSettings,
    topology: Topology,
    *,
    node_classes: tuple[str, ...],
    window_s: float = 60.0,
    listen_s: float = 0.0,
) -> StatusReport:
    connection = await connect(broker, "hpcq-status")
    try:
        queues = tuple(
            [await _queue_info(connection, topology.task_queue(nc)) for nc in node_classes]
        )
        dlq = await _queue_info(connection, topology.dead_letter_queue)
        tasks, results = await _recent_counts(connection, topology, window_s)
        consumers = await _heartbeats(connection, topology, listen_s) if listen_s > 0 else ()
    finally:
        await connection.close()
    return StatusReport(
        namespace=topology.namespace,
        task_queues=queues,
        dead_letters=dlq,
        window_s=window_s,
        tasks_in_window=tasks,
        results_in_window=results,
        results_per_s=round(results / window_s, 3) if window_s > 0 else 0.0,
        consumers=consumers,
    )


def render(report: StatusReport) -> str:
    lines = [f"namespace {report.namespace}"]
    for q in report.task_queues:
        state = f"{q.ready} ready, {q.consumers} consumer(s)" if q.exists else "not declared"
        lines.append(f"  {q.name}: {state}")
    lines.append(f"  dead-lettered: {report.dead_letters.ready} in {report.dead_letters.name}")
    lines.append(
        f"  last {report.window_s:g} s: {report.tasks_in_window} task(s) published, "
        f"{report.results_in_window} result(s) ({report.results_per_s:g}/s)"
    )
    for c in report.consumers:
        mark = " draining" if c.draining else ""
        lines.append(
            f"  {c.consumer} [{c.node_class}] {c.busy}/{c.slots} busy, {c.done} done, "
            f"seen {c.seen_s_ago:g} s ago{mark}"
        )
    return "\n".join(lines)


# --- followed live ---------------------------------------------------------------------------


@dataclass
class BrokerView:
    """What `BrokerFeed` knows at a moment."""

    task_queues: tuple[QueueInfo, ...] = ()
    dead_letters: QueueInfo | None = None
    window_s: float = 60.0
    tasks_in_window: int = 0
    results_in_window: int = 0
    status_mix: dict[str, int] = field(default_factory=dict)  # results in the window
    heartbeats: dict[str, Heartbeat] = field(default_factory=dict)  # consumer -> latest
    stages: dict[str, StageUpdate] = field(default_factory=dict)  # problem -> latest
    steps: dict[str, int] = field(default_factory=dict)  # run_id -> highest step seen
    error: str = ""

    @property
    def results_per_s(self) -> float:
        return self.results_in_window / self.window_s if self.window_s > 0 else 0.0


class BrokerFeed:
    """Follows a namespace on RabbitMQ: the stream (rates, status mix, steps) and the
    control exchange (heartbeats, stages); `refresh()` polls the queue depths."""

    def __init__(
        self,
        broker: BrokerSettings,
        topology: Topology,
        node_classes: tuple[str, ...],
        window_s: float = 60.0,
    ) -> None:
        self.broker = broker
        self.topology = topology
        self.node_classes = node_classes
        self.view = BrokerView(window_s=window_s)
        self._records: deque[tuple[float, str, str]] = deque()  # (time, kind, status)
        self._connection: AbstractRobustConnection | None = None
        self._streaming = False

    async def start(self) -> None:
        self._connection = connection = await connect(self.broker, "hpcq-status-watch")
        await self._follow_stream()
        channel = await connection.channel()
        control = await channel.declare_exchange(
            self.topology.control_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(control, "heartbeat.#")
        await queue.bind(control, "stage.#")
        await queue.consume(self._on_control, no_ack=True)

    async def _follow_stream(self) -> None:
        """Read the stream from the window's start on; a namespace that has published
        nothing yet has no stream: `refresh` tries again."""
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            stream = await channel.declare_queue(self.topology.log_stream, passive=True)
        except ChannelNotFoundEntity:
            return  # the failed declaration closed the channel
        await channel.set_qos(prefetch_count=1000)
        offset = f"{int(self.view.window_s) + 1}s"
        await stream.consume(self._on_record, arguments={"x-stream-offset": offset})
        self._streaming = True

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def refresh(self) -> BrokerView:
        assert self._connection is not None
        v = self.view
        try:
            if not self._streaming:
                await self._follow_stream()
            v.task_queues = tuple(
                [await _queue_info(self._connection, self.topology.task_queue(nc))
                 for nc in self.node_classes]
            )  # fmt: skip
            v.dead_letters = await _queue_info(self._connection, self.topology.dead_letter_queue)
            v.error = ""
        except Exception as exc:  # the broker went away: show what was known, and why
            v.error = repr(exc)
        self._prune(time.time())
        return v

    def _prune(self, now: float) -> None:
        while self._records and self._records[0][0] < now - self.view.window_s:
            self._records.popleft()
        kinds = Counter(kind for _, kind, _ in self._records)
        self.view.tasks_in_window = kinds["task"]
        self.view.results_in_window = kinds["result"]
        self.view.status_mix = dict(Counter(st for _, kind, st in self._records if st))

    async def _on_record(self, message: AbstractIncomingMessage) -> None:
        async with stream_delivery(message, STATUS_READER):
            self._count(message)

    def _count(self, message: AbstractIncomingMessage) -> None:
        stamp = message.timestamp.timestamp() if message.timestamp else time.time()
        record = stream_record(message, STATUS_READER)
        if isinstance(record, Result):
            self._records.append((stamp, "result", str(record.outcome.status)))
        elif isinstance(record, Task):
            self._records.append((stamp, "task", ""))
        else:
            return  # another kind, or undecodable (logged)
        if record.run_id:
            steps = self.view.steps
            steps[record.run_id] = max(steps.get(record.run_id, 0), record.step)

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        try:
            record = codec.decode(message.body)
        except DecodeError:
            return
        if isinstance(record, Heartbeat):
            self.view.heartbeats[record.consumer] = record
        elif isinstance(record, StageUpdate):
            self.view.stages[record.problem_id] = record
