"""Names and idempotent declarations of everything the pipeline needs on the broker.

Every process declares what it uses, with the same arguments, so start order does not
matter and a fresh broker needs no setup. A namespace prefixes every name, so several
experiments (and every test) share one broker. Layout for namespace `ns`:

    ns.tasks    topic exchange, routing key = node class
      -> ns.tasks.<node_class>   quorum queue, x-delivery-limit, dead-letters to ns.dlx
      -> ns.log                  stream (binding '#'): every task, for replay
    ns.results  topic exchange, routing key = the task's reply_to (producer name)
      -> ns.results.<producer>   quorum queue of one producer
      -> ns.log                  stream (binding '#'): every result
      -> any observer (SQD controller, status) binds its own queue with '#'
    ns.control  topic exchange: heartbeats ('heartbeat.<node_class>') and stage updates
    ns.dlx      fanout exchange -> ns.dlq quorum queue (parked poison tasks, bad input)

Queue arguments cannot change after declaration (a redeclare with other arguments is a
channel error), so all of them come from one `Topology` value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aio_pika.exceptions import ChannelPreconditionFailed
from pamqp.common import FieldTable

from hpcq.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")


def check_name(what: str, value: str) -> str:
    """Names become parts of queue names and routing keys: no wildcards or spaces."""
    if not _NAME.match(value):
        raise ConfigError(
            f"{what} = {value!r}: use 1-100 letters, digits, '-', '_' or '.' (not first)"
        )
    return value


@dataclass(frozen=True)
class Topology:
    namespace: str = "hpcq"
    delivery_limit: int = 10
    """Returns of one task's delivery (consumer died, connection cut, given back) the
    broker tolerates; the next one parks it in the DLQ. A backstop only: RabbitMQ 3.10
    counts a cut connection like a crash, so poison tasks are parked by the consumers'
    own crash count (hpcq.pipeline.journal, `crash_limit`) long before; this limit catches what no
    journal saw (crashes spread over hosts, a lost journal). RabbitMQ 3.x has no default:
    without one a kernel that kills its consumers would be retried forever. Must be equal
    in every process of a namespace."""
    stream_max_age: str = "7D"
    """Retention of the replay stream (RabbitMQ units: Y, M, D, h, m, s)."""
    stream_max_bytes: int = 20 << 30
    results_queue_expires_ms: int = 24 * 3600 * 1000
    """A producer's results queue is deleted after this long without any consumer."""

    def __post_init__(self) -> None:
        check_name("namespace", self.namespace)
        if self.delivery_limit < 1:
            raise ConfigError("delivery_limit must be >= 1 (a poison task must be parked)")

    # --- names ---
    @property
    def tasks_exchange(self) -> str:
        return f"{self.namespace}.tasks"

    def task_queue(self, node_class: str) -> str:
        return f"{self.namespace}.tasks.{check_name('node class', node_class)}"

    @property
    def results_exchange(self) -> str:
        return f"{self.namespace}.results"

    def results_queue(self, producer: str) -> str:
        return f"{self.namespace}.results.{check_name('producer name', producer)}"

    @property
    def control_exchange(self) -> str:
        return f"{self.namespace}.control"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dlq"

    @property
    def log_stream(self) -> str:
        return f"{self.namespace}.log"


@dataclass(frozen=True)
class Exchanges:
    """The declared exchanges of a namespace, held by whoever publishes."""

    tasks: AbstractExchange
    results: AbstractExchange
    control: AbstractExchange
    dead_letters: AbstractExchange


async def declare_base(channel: AbstractChannel, topo: Topology) -> Exchanges:
    """Exchanges, the dead-letter queue and the replay stream (shared by everyone)."""
    topic = aio_pika.ExchangeType.TOPIC
    tasks = await channel.declare_exchange(topo.tasks_exchange, topic, durable=True)
    results = await channel.declare_exchange(topo.results_exchange, topic, durable=True)
    control = await channel.declare_exchange(topo.control_exchange, topic, durable=True)
    dlx = await channel.declare_exchange(
        topo.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dlq = await channel.declare_queue(
        topo.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dlq.bind(dlx)
    log = await channel.declare_queue(
        topo.log_stream,
        durable=True,
        arguments={
            "x-queue-type": "stream",
            "x-max-age": topo.stream_max_age,
            "x-max-length-bytes": topo.stream_max_bytes,
        },
    )
    await log.bind(tasks, "#")
    await log.bind(results, "#")
    return Exchanges(tasks=tasks, results=results, control=control, dead_letters=dlx)


def task_queue_arguments(topo: Topology) -> FieldTable:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": topo.delivery_limit,
        "x-dead-letter-exchange": topo.dead_letter_exchange,
        # at-least-once dead-lettering (3.10+) needs reject-publish overflow.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_task_queue(
    channel: AbstractChannel, topo: Topology, exchanges: Exchanges, node_class: str
) -> AbstractQueue:
    """The work queue of one node class. Producers declare it too, so tasks published
    before any consumer of that class exists wait there instead of reaching only the
    stream (which would make them routable, hence silently stranded)."""
    name = topo.task_queue(node_class)
    try:
        queue = await channel.declare_queue(
            name, durable=True, arguments=task_queue_arguments(topo)
        )
    except ChannelPreconditionFailed as exc:
        raise ConfigError(
            f"work queue {name} exists with other arguments ({exc.args[0] if exc.args else exc}):"
            f" every process of namespace {topo.namespace!r} must pass the same "
            f"--delivery-limit (this one: {topo.delivery_limit}); pass the queue's value, or "
            f"delete the queue once it is empty (`rabbitmqctl delete_queue {name}`)"
        ) from exc
    await queue.bind(exchanges.tasks, node_class)
    return queue


async def declare_results_queue(
    channel: AbstractChannel, topo: Topology, exchanges: Exchanges, producer: str
) -> AbstractQueue:
    queue = await channel.declare_queue(
        topo.results_queue(producer),
        durable=True,
        arguments={"x-queue-type": "quorum", "x-expires": topo.results_queue_expires_ms},
    )
    await queue.bind(exchanges.results, producer)
    return queue


async def delete_namespace(
    channel: AbstractChannel,
    topo: Topology,
    node_classes: tuple[str, ...] = (),
    producers: tuple[str, ...] = (),
) -> None:
    """Remove a namespace's queues and exchanges (tests, `make clean` of an experiment)."""
    queues = [topo.task_queue(nc) for nc in node_classes]
    queues += [topo.results_queue(p) for p in producers]
    queues += [topo.dead_letter_queue, topo.log_stream]
    for name in queues:
        await channel.queue_delete(name)
    for name in (
        topo.tasks_exchange,
        topo.results_exchange,
        topo.control_exchange,
        topo.dead_letter_exchange,
    ):
        await channel.exchange_delete(name)
