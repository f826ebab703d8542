"""Message fate, declared in one place: queue deliveries, then stream deliveries.

No other module acks, nacks or rejects (tests/pipeline/test_fate_one_place.py checks it).

Queue deliveries (tasks to a consumer, answers to a producer). Handlers return normally
(their answer was published and confirmed) or raise. `verdict_for` maps that outcome to
what happens to the delivery, and `settle` does it.

    returned normally            -> ack
    DecodeError (not a task)     -> dead-letter, reason "<code>: ...", then ack
    InputError (bad input: an
      unknown problem id)        -> dead-letter, reason "bad_input: ...", then ack
    PoisonTaskError              -> dead-letter, reason "poison: ...", then ack
    InfraError (result not
      published, draining)       -> requeue
    cancelled (drain timeout, or
      the channel died)          -> requeue
    any other exception (a bug)  -> requeue (the delivery limit parks it if it repeats)

Poison rule. A task is poison when it takes its consumer down, not when its delivery
comes back: on RabbitMQ 3.10 a cut connection returns a delivery and counts toward the
queue's `x-delivery-limit` exactly like a crash does. So hpcq counts crashes itself
(hpcq.pipeline.journal): a consumer that starts charges one crash to every task its dead
predecessors on the host had started evaluating and never ended; a task with crashes
runs alone; a delivery of a task charged `crash_limit` crashes (default 2) raises
PoisonTaskError. A cut connection charges nothing: the redelivery joins the evaluation
still running (hpcq.pipeline.consumer). The queue's delivery limit (default 10) stays as a
backstop for what the journal cannot see (crashes on other hosts, a lost journal).

A bad kernel is not an exception: it is a published result, hence an ack.

Stream deliveries (the replay stream `ns.log`, read by `hpcq sqd`, `hpcq replay` and
`hpcq status`). A stream is a log, not a work queue: it keeps every record whatever its
readers do, and a reader knows where it is by the `x-stream-offset` header of the
records it read, not by acks (hpcq sqd saves its offset in its snapshot). An ack deletes
nothing; it returns one unit of the subscription's prefetch credit, and a reader that
stopped acking would stop receiving after `prefetch` records. So there is nothing to
requeue and nothing to dead-letter, and one rule serves every reader: wrap the handling
of a delivery in `async with stream_delivery(message, READER):`, and decode it with
`stream_record` (a reader that needs only the headers skips that).

    handled (the block ended, by
      break or continue too)           -> ack
    the record does not decode         -> `stream_record` logs it and returns the
      (a poison record)                   DecodeError; the reader counts it and goes on;
                                          ack. It cannot loop: a subscription reads each
                                          offset once, forward.
    the handler raised                 -> ack all the same (a reader that survives the
                                          error, `hpcq status --watch`, keeps its credit),
                                          and the error goes on to the reader
    cancelled                          -> no ack: the reader is stopping, its channel too
    the ack fails (channel lost)       -> the one choice that differs between readers,
                                          declared by their `StreamReader` below:
      resumes_by_offset (hpcq sqd)     -> ignored: after a reconnect it subscribes again
                                          after its last offset and skips records it saw
      one pass (replay, status)        -> the error goes on: aio-pika restores their
                                          consumer from the offset it first asked for, and
                                          a one-pass reader cannot tell those records from
                                          new ones, so it stops rather than count twice
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, MessageProcessError
from pamqp.common import FieldValue

from hpcq.errors import DecodeError, InfraError, InputError, PoisonTaskError
from hpcq.pipeline import codec
from hpcq.pipeline.messages import Record

log = structlog.get_logger()

# A settle that raises these did not happen: the delivery's channel is gone.
_UNSETTLED = (MessageProcessError, *CONNECTION_EXCEPTIONS)

REASON_HEADER = "x-hpcq-reason"
"""Header of a message hpcq dead-lettered itself. Broker-side dead-lettering (delivery
limit exceeded) carries `x-first-death-reason` and `x-death` instead."""


class Fate(StrEnum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"
    REQUEUE = "requeue"


@dataclass(frozen=True)
class Verdict:
    fate: Fate
    reason: str = ""


def verdict_for(error: BaseException | None) -> Verdict:
    if error is None:
        return Verdict(Fate.ACK)
    if isinstance(error, DecodeError | PoisonTaskError):
        return Verdict(Fate.DEAD_LETTER, str(error))
    if isinstance(error, InputError):
        return Verdict(Fate.DEAD_LETTER, f"bad_input: {error}")
    if isinstance(error, InfraError):
        return Verdict(Fate.REQUEUE, str(error))
    if isinstance(error, asyncio.CancelledError):
        return Verdict(Fate.REQUEUE, "cancelled")
    return Verdict(Fate.REQUEUE, f"unexpected {type(error).__name__}: {error}")


DeadLetterPublish = Callable[[bytes, Mapping[str, FieldValue]], Awaitable[None]]


async def settle(
    message: AbstractIncomingMessage, verdict: Verdict, dead_letter: DeadLetterPublish
) -> None:
    """Ack, requeue or dead-letter one delivery.

    A delivery whose channel died cannot be settled any more: the broker has already
    put it back in the queue (and counted the delivery), so the error is only logged.
    """
    try:
        if verdict.fate is Fate.ACK:
            await message.ack()
        elif verdict.fate is Fate.REQUEUE:
            log.info("requeue", reason=verdict.reason, message_id=message.message_id)
            await message.nack(requeue=True)
        else:
            await _dead_letter(message, verdict.reason, dead_letter)
    except _UNSETTLED as exc:
        log.info("delivery not settled; the broker redelivers it", error=repr(exc))


async def _dead_letter(
    message: AbstractIncomingMessage, reason: str, dead_letter: DeadLetterPublish
) -> None:
    """Publish a copy with the reason (confirmed), then ack. If that fails, a plain
    reject still dead-letters it through the queue's DLX, only without our reason."""
    headers: dict[str, FieldValue] = dict(message.headers or {})
    headers[REASON_HEADER] = reason
    headers["x-hpcq-routing-key"] = message.routing_key or ""
    try:
        await dead_letter(message.body, headers)
    except InfraError:
        log.warning("dead-letter publish failed; rejecting", reason=reason)
        await message.reject(requeue=False)
        return
    log.warning("dead-lettered", reason=reason, routing_key=message.routing_key)
    await message.ack()


# --- stream deliveries (rules in the module docstring) -------------------------------------

_OFFSET_HEADER = "x-stream-offset"  # set by RabbitMQ on every stream delivery


@dataclass(frozen=True)
class StreamReader:
    """A reader of the replay stream, as far as the fate of its deliveries goes."""

    name: str
    resumes_by_offset: bool
    """True for a reader that, after a reconnect, subscribes again after the last offset
    it processed and skips the records it has seen: an ack lost with its channel is
    harmless to it. False for a one-pass reader: the lost ack's error stops it."""


SQD_READER = StreamReader("sqd", resumes_by_offset=True)
REPLAY_READER = StreamReader("replay", resumes_by_offset=False)
STATUS_READER = StreamReader("status", resumes_by_offset=False)


@asynccontextmanager
async def stream_delivery(
    message: AbstractIncomingMessage, reader: StreamReader
) -> AsyncIterator[None]:
    """Ack a stream delivery once its handling ends, however it ends but cancelled."""
    try:
        yield
    except Exception:
        # The handler's error is the one to report; an ack lost with it adds nothing.
        with suppress(*_UNSETTLED):
            await message.ack()
        raise
    try:
        await message.ack()
    except _UNSETTLED as exc:
        if not reader.resumes_by_offset:
            raise
        log.debug("stream ack lost with its channel", reader=reader.name, error=repr(exc))


def stream_record(message: AbstractIncomingMessage, reader: StreamReader) -> Record | DecodeError:
    """The record a stream delivery carries, or, for one that does not decode, the
    error (logged here), which the reader counts and skips: never raised."""
    try:
        return codec.decode(message.body)
    except DecodeError as exc:
        offset = (message.headers or {}).get(_OFFSET_HEADER)
        log.warning(
            "undecodable stream record skipped", reader=reader.name, offset=offset, error=str(exc)
        )
        return exc
