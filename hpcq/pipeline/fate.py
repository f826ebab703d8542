"""Message fate, declared in one place.

Handlers of deliveries return normally (their answer was published and confirmed) or
raise. `verdict_for` maps that outcome to what happens to the delivery, and `settle`
does it. No other module acks, nacks or rejects.

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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, MessageProcessError
from pamqp.common import FieldValue

from hpcq.errors import DecodeError, InfraError, InputError, PoisonTaskError

log = structlog.get_logger()

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
    except (MessageProcessError, *CONNECTION_EXCEPTIONS) as exc:
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
