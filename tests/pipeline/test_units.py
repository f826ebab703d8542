"""Pure logic of the pipeline: slot planning, message fate, the scripted evaluator."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiormq.exceptions import ChannelInvalidStateError

from hpcq.errors import (
    ConfigError,
    DecodeError,
    InfraError,
    PoisonTaskError,
    UnknownProblemError,
)
from hpcq.outcome import EvalRequest, Status
from hpcq.pipeline.fate import REASON_HEADER, Fate, Verdict, settle, verdict_for
from hpcq.pipeline.journal import CrashJournal
from hpcq.pipeline.replay import stream_offset
from hpcq.pipeline.slots import plan_slots
from tests.support.scripted import ScriptedEvaluator

# --- slots -------------------------------------------------------------------------------


def test_slots_default_reserves_one_core() -> None:
    plan = plan_slots(tuple(range(8)))
    assert plan.reserved == (0,)
    assert [s.cores for s in plan.slots] == [(c,) for c in range(1, 8)]


def test_slots_are_disjoint_with_wider_slots() -> None:
    plan = plan_slots(tuple(range(8)), cores_per_slot=2)
    assert [s.cores for s in plan.slots] == [(1, 2), (3, 4), (5, 6)]
    cores = [c for s in plan.slots for c in s.cores] + list(plan.reserved)
    assert len(cores) == len(set(cores))


def test_single_core_node_keeps_no_reserve() -> None:
    plan = plan_slots((3,))
    assert plan.reserved == () and plan.slots[0].cores == (3,)


def test_too_many_slots_names_the_fix() -> None:
    with pytest.raises(ConfigError, match="lower --slots"):
        plan_slots((0, 1), slots=2)
    with pytest.raises(ConfigError, match="reserve-cores"):
        plan_slots((0, 1), reserve_cores=2)


def test_shared_slots_only_when_asked() -> None:
    plan = plan_slots((0, 1), slots=4, share_cores=True)
    assert len(plan.slots) == 4 and all(s.cores == (1,) for s in plan.slots)


# --- fate --------------------------------------------------------------------------------


def test_verdicts() -> None:
    assert verdict_for(None).fate is Fate.ACK
    assert verdict_for(DecodeError("malformed: x")).fate is Fate.DEAD_LETTER
    assert verdict_for(DecodeError("malformed: x")).reason == "malformed: x"
    unknown = verdict_for(UnknownProblemError("unknown problem id 'p'"))
    assert unknown == Verdict(Fate.DEAD_LETTER, "bad_input: unknown problem id 'p'")
    poison = verdict_for(PoisonTaskError("poison: crashed 2 time(s)"))
    assert poison == Verdict(Fate.DEAD_LETTER, "poison: crashed 2 time(s)")
    assert verdict_for(InfraError("publish failed")).fate is Fate.REQUEUE
    assert verdict_for(asyncio.CancelledError()).fate is Fate.REQUEUE
    assert verdict_for(ZeroDivisionError()).fate is Fate.REQUEUE


class FakeMessage:
    def __init__(self, broken: bool = False) -> None:
        self.calls: list[str] = []
        self.broken = broken
        self.body = b"body"
        self.headers: dict[str, Any] = {"a": 1}
        self.routing_key = "rk"
        self.message_id = "m"

    async def _call(self, name: str) -> None:
        if self.broken:
            raise ChannelInvalidStateError("channel closed")
        self.calls.append(name)

    async def ack(self) -> None:
        await self._call("ack")

    async def nack(self, requeue: bool = True) -> None:
        await self._call(f"nack:{requeue}")

    async def reject(self, requeue: bool = False) -> None:
        await self._call(f"reject:{requeue}")


async def test_settle_paths() -> None:
    published: list[Mapping[str, Any]] = []

    async def dead_letter(body: bytes, headers: Mapping[str, Any]) -> None:
        published.append(headers)

    async def failing(body: bytes, headers: Mapping[str, Any]) -> None:
        raise InfraError("broker gone")

    m = FakeMessage()
    await settle(m, verdict_for(None), dead_letter)  # type: ignore[arg-type]
    assert m.calls == ["ack"]
    m = FakeMessage()
    await settle(m, verdict_for(InfraError("x")), dead_letter)  # type: ignore[arg-type]
    assert m.calls == ["nack:True"]
    m = FakeMessage()
    await settle(m, verdict_for(DecodeError("oversized: y")), dead_letter)  # type: ignore[arg-type]
    assert m.calls == ["ack"] and published[0][REASON_HEADER] == "oversized: y"
    assert published[0]["a"] == 1  # original headers kept
    m = FakeMessage()
    await settle(m, verdict_for(DecodeError("invalid: z")), failing)  # type: ignore[arg-type]
    assert m.calls == ["reject:False"]  # the queue's DLX still parks it
    # A delivery of a dead channel cannot be settled; the broker redelivers it.
    await settle(FakeMessage(broken=True), verdict_for(None), dead_letter)  # type: ignore[arg-type]


# --- scripted evaluator --------------------------------------------------------------------


async def test_scripted_evaluator() -> None:
    ev = ScriptedEvaluator("x")
    ok = await ev.evaluate(EvalRequest("dgemm-256", "// hpcq-test: gflops=3.5\n"))
    assert ok.status is Status.OK and ok.gflops == 3.5 and ok.reward == 3.5
    bad = await ev.evaluate(EvalRequest("dgemm-256", "// hpcq-test: status=compile_error\n"))
    assert bad.status is Status.COMPILE_ERROR and bad.gflops is None
    with pytest.raises(InfraError):
        await ev.evaluate(EvalRequest("dgemm-256", "// hpcq-test: raise\n"))


def test_consumer_side_imports_no_ml_framework() -> None:
    code = (
        "import sys, hpcq.pipeline.consumer, hpcq.pipeline.producer, hpcq.cli.pipeline, "
        "hpcq.pipeline.replay, hpcq.pipeline.status; "
        "bad = {'torch', 'transformers', 'trl', 'vllm', 'aiomqtt'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_replay_offsets() -> None:
    assert stream_offset("first") == "first"
    assert stream_offset("90m") == "90m"
    when = stream_offset("2026-11-21T08:00:00Z")
    assert not isinstance(when, str) and when.timestamp() == 1795248000
    assert not isinstance(naive := stream_offset("2026-11-21T08:00:00"), str)
    assert naive.utcoffset() is not None  # read as UTC
    with pytest.raises(ConfigError, match="ISO time"):
        stream_offset("yesterday")


# --- crash journal -----------------------------------------------------------------------


def crash_in_a_subprocess(folder: Path, *events: str) -> None:
    """A consumer process that writes these events ('start:t', 'end:t') and dies."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from hpcq.pipeline.journal import CrashJournal\n"
        "j = CrashJournal(Path(sys.argv[1]), max_tasks=2)\n"
        "for event in sys.argv[2:]:\n"
        "    kind, task = event.split(':')\n"
        "    j.started(task) if kind == 'start' else j.ended(task, completed=True)\n"
        "os._exit(9)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder), *events], check=False)
    assert done.returncode == 9


def test_journal_charges_what_a_dead_consumer_was_evaluating(tmp_path: Path) -> None:
    crash_in_a_subprocess(tmp_path, "start:t1", "start:t2", "end:t2")
    survivor = CrashJournal(tmp_path)  # adopts the dead journal
    assert survivor.adopted == 1
    assert (survivor.crashes("t1"), survivor.crashes("t2")) == (1, 0)
    # Another consumer that starts now finds the survivor alive: nothing to adopt.
    crash_in_a_subprocess(tmp_path, "start:t1")  # ... and crashes on t1 itself
    assert len(list(tmp_path.glob("*.lock"))) == 2  # the survivor's was not taken
    survivor.close()  # clean exit, but it knows a crash: its journal stays
    heir = CrashJournal(tmp_path)
    assert heir.crashes("t1") == 2  # two deaths, each counted once
    heir.ended("t1", completed=True)  # a verdict proves it harmless
    assert heir.crashes("t1") == 0
    heir.close()
    assert list(tmp_path.iterdir()) == []  # nothing left to carry over


def test_journal_survives_compaction(tmp_path: Path) -> None:
    events = [f"{kind}:k{i}" for i in range(200) for kind in ("start", "end")]
    crash_in_a_subprocess(tmp_path, *events, "start:last")
    [journal] = tmp_path.glob("*.journal")
    assert journal.stat().st_size < 2000  # compacted (400 lines would be ~8 kB)
    heir = CrashJournal(tmp_path)
    assert heir.crashes("last") == 1 and heir.crashes("k7") == 0
    assert heir.adopted == 1
    heir.close()


def test_journal_in_memory() -> None:
    journal = CrashJournal(None)
    journal.started("t")
    journal.ended("t", completed=False)
    assert journal.crashes("t") == 0
    journal.close()
