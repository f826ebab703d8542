"""Message fate is declared in hpcq.pipeline.fate and nowhere else; its stream rules.

No broker: the stream rules are checked with a fake delivery. The readers themselves
are tested on the real broker (tests/sqd/test_service.py, tests/pipeline/test_cli.py).
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiormq.exceptions import ChannelInvalidStateError
from structlog.testing import capture_logs

import hpcq
from hpcq.errors import DecodeError
from hpcq.pipeline import codec
from hpcq.pipeline.fate import (
    REPLAY_READER,
    SQD_READER,
    STATUS_READER,
    StreamReader,
    stream_delivery,
    stream_record,
)
from hpcq.pipeline.messages import StageUpdate

PACKAGE = Path(hpcq.__file__).parent
FATE = PACKAGE / "pipeline" / "fate.py"
SETTLING = {"ack", "nack", "reject", "basic_ack", "basic_nack", "basic_reject"}


def settling_calls(path: Path) -> list[str]:
    """`name:line` of every call of a method that settles a delivery in one module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{node.func.attr}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in SETTLING
    ]


def test_only_fate_settles_deliveries() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert FATE in modules and len(modules) > 20  # the walk sees the package
    offenders = {
        str(path.relative_to(PACKAGE.parent)): calls
        for path in modules
        if path != FATE and (calls := settling_calls(path))
    }
    assert offenders == {}, "ack/nack/reject belong in hpcq/pipeline/fate.py"
    assert settling_calls(FATE)  # and the check would see them there


class FakeDelivery:
    """What stream_delivery and stream_record use of an aio-pika incoming message."""

    def __init__(self, body: bytes = b"", offset: int = 7, lost: bool = False) -> None:
        self.body = body
        self.headers: dict[str, Any] = {"x-stream-offset": offset}
        self.lost = lost  # the channel is gone: settling fails
        self.acks = 0

    async def ack(self) -> None:
        if self.lost:
            raise ChannelInvalidStateError("channel closed")
        self.acks += 1


READERS = [SQD_READER, REPLAY_READER, STATUS_READER]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
async def test_a_handled_delivery_is_acked_once(reader: StreamReader) -> None:
    m = FakeDelivery()
    async with stream_delivery(m, reader):  # type: ignore[arg-type]
        pass
    assert m.acks == 1


async def test_leaving_the_block_early_acks_too() -> None:
    seen = []
    for m in (FakeDelivery(), FakeDelivery()):
        async with stream_delivery(m, REPLAY_READER):  # type: ignore[arg-type]
            seen.append(m)
            if len(seen) == 1:
                continue
            break
    assert [m.acks for m in seen] == [1, 1]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
async def test_a_handler_error_acks_then_goes_on(reader: StreamReader) -> None:
    m = FakeDelivery()
    with pytest.raises(ZeroDivisionError):
        async with stream_delivery(m, reader):  # type: ignore[arg-type]
            raise ZeroDivisionError
    assert m.acks == 1  # a reader that survives the error keeps its prefetch credit
    # On a lost channel too, the handler's error is the one that comes out.
    with pytest.raises(ZeroDivisionError):
        async with stream_delivery(FakeDelivery(lost=True), reader):  # type: ignore[arg-type]
            raise ZeroDivisionError


async def test_a_cancelled_handler_is_not_acked() -> None:
    m = FakeDelivery()
    with pytest.raises(asyncio.CancelledError):
        async with stream_delivery(m, SQD_READER):  # type: ignore[arg-type]
            raise asyncio.CancelledError
    assert m.acks == 0


async def test_a_lost_ack_is_declared_per_reader() -> None:
    assert SQD_READER.resumes_by_offset  # skips what it saw: the lost ack is harmless
    async with stream_delivery(FakeDelivery(lost=True), SQD_READER):  # type: ignore[arg-type]
        pass
    for one_pass in (REPLAY_READER, STATUS_READER):
        assert not one_pass.resumes_by_offset  # would count re-read records twice: stop
        with pytest.raises(ChannelInvalidStateError):
            async with stream_delivery(FakeDelivery(lost=True), one_pass):  # type: ignore[arg-type]
                pass


async def test_a_record_is_decoded() -> None:
    update = StageUpdate(run_id="r", problem_id="dgemm-256", stage=2, stage_name="simd")
    m = FakeDelivery(codec.encode(update))
    with capture_logs() as logs:
        async with stream_delivery(m, SQD_READER):  # type: ignore[arg-type]
            record = stream_record(m, SQD_READER)  # type: ignore[arg-type]
    assert record == update and m.acks == 1 and logs == []


@pytest.mark.parametrize("body", [b"", b"\xc1 not msgpack", codec.encode(
    StageUpdate(run_id="r", problem_id="p", stage=0))[:-3]])  # fmt: skip
@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
async def test_a_poison_record_is_skipped_logged_and_acked(
    reader: StreamReader, body: bytes
) -> None:
    m = FakeDelivery(body, offset=41)
    with capture_logs() as logs:
        async with stream_delivery(m, reader):  # type: ignore[arg-type]
            record = stream_record(m, reader)  # type: ignore[arg-type]
    assert isinstance(record, DecodeError)  # returned, never raised
    assert m.acks == 1  # the subscription moves past it: it cannot come back and loop
    [line] = logs
    assert line["log_level"] == "warning" and line["event"] == "undecodable stream record skipped"
    assert line["reader"] == reader.name and line["offset"] == 41 and line["error"] == str(record)
