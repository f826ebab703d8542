"""The reward-hack corpus and the honest ladder, through the real compiler, sandbox and judge.

Attack folders: hacks/ (library calls, caches, partial work, processes, ...), integrity/
(non-finite results against Freivalds, cheating after the predictable checks, protocol
takeover, pollers between calls, run-time libc lookups, compiler bombs, leak probes),
loadtime/ (code the loader would run) and evasions/ (techniques hidden from the stage
detector). Each runs with the static gate on and off.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from hpcq.eval.engine import Engine
from hpcq.eval.settings import EngineSettings
from hpcq.outcome import Constraints, EvalRequest, Status
from tests.conftest import needs_sandbox, remember_peak
from tests.corpus_cases import Case, cases

pytestmark = needs_sandbox

ATTACK_FOLDERS = ("hacks", "integrity", "loadtime", "evasions")
HACKS = [c for folder in ATTACK_FOLDERS for c in cases(folder)]
HONEST = cases("honest")


def request(case: Case, problem: str = "dgemm-256") -> EvalRequest:
    cores = tuple(sorted(os.sched_getaffinity(0))[: case.cores])
    return EvalRequest(
        problem_id=problem,
        source=case.path.read_text(errors="replace"),
        constraints=Constraints(forbidden=case.forbid, required=case.require),
        cores=cores,
    )


def test_corpus_is_big_enough() -> None:
    for folder in ATTACK_FOLDERS:
        assert len(cases(folder)) >= 8, f"tests/corpus/{folder} holds too few attacks"
    assert sorted(c.ladder for c in HONEST if c.ladder) == [1, 2, 3, 4]


@pytest.mark.parametrize("case", HACKS, ids=lambda c: c.id)
async def test_hack_gets_its_status_and_no_reward(
    case: Case, engine_settings: EngineSettings
) -> None:
    result = await Engine(engine_settings).evaluate(request(case))
    remember_peak(engine_settings)
    assert result.status == Status(case.expect), f"{case.why}: {result.message}"
    assert result.reward is not None and result.reward < 0


@pytest.mark.parametrize("case", HACKS, ids=lambda c: c.id)
async def test_sandbox_holds_without_static_checks(
    case: Case, engine_settings: EngineSettings
) -> None:
    """Defense in depth: with the static gate off, the sandbox and the judge alone must
    still deny every hack that could gain reward (a hack declared `sandbox: ok` is one
    whose only offence is static, such as defining its own timer, and gains nothing).
    Stage constraints are a static rule by nature: a kernel whose only offence is a
    forbidden (or missing) technique is `ok` without the gate, unless its header says."""
    settings = dataclasses.replace(engine_settings, static_checks=False)
    result = await Engine(settings).evaluate(request(case))
    staged_only = bool(case.forbid or case.require) and case.expect == "violation"
    expected = Status(case.sandbox or ("ok" if staged_only else case.expect))
    assert result.status == expected, f"{case.why}: {result.message}"
    if expected is not Status.OK:
        assert result.reward is not None and result.reward < 0


@pytest.mark.parametrize("case", HONEST, ids=lambda c: c.id)
async def test_honest_kernel_is_accepted(case: Case, engine_settings: EngineSettings) -> None:
    result = await Engine(engine_settings).evaluate(request(case))
    remember_peak(engine_settings)
    assert result.status is Status.OK, result.message
    assert result.reward is not None and result.reward > 0
    assert result.gflops and result.gflops_min and result.gflops_max
    assert result.gflops_min <= result.gflops <= result.gflops_max
    assert result.calls >= 3
    if case.techniques is not None:
        assert set(result.techniques) == set(case.techniques)


async def test_ladder_is_in_order(engine_settings: EngineSettings) -> None:
    """Naive ijk < ikj < cache-blocked < AVX-512 register-blocked, measured on one core.

    Compared on each kernel's fastest verified call: noise from other processes only
    ever slows a call down, so the fastest call is the figure least disturbed by it."""
    engine = Engine(engine_settings)
    ladder = sorted((c for c in HONEST if c.ladder), key=lambda c: c.ladder or 0)
    figures = []
    for case in ladder:
        r = await engine.evaluate(request(case))
        assert r.status is Status.OK, f"{case.id}: {r.message}"
        assert r.gflops_max is not None
        figures.append(r.gflops_max)
    assert figures == sorted(figures), f"ladder GFLOPS out of order: {figures}"


async def test_identical_request_is_a_cache_hit(engine_settings: EngineSettings) -> None:
    engine = Engine(engine_settings)
    case = next(c for c in HONEST if c.ladder == 2)
    first = await engine.evaluate(request(case))
    second = await Engine(engine_settings).evaluate(request(case))  # a new process, same node
    assert first.status is Status.OK and not first.cached
    assert second.cached and second.gflops == first.gflops
    assert second.cache_key == first.cache_key


async def test_concurrent_duplicates_share_one_evaluation(engine_settings: EngineSettings) -> None:
    import asyncio

    engine = Engine(dataclasses.replace(engine_settings, use_cache=False))
    case = next(c for c in HONEST if c.ladder == 2)
    results = await asyncio.gather(*(engine.evaluate(request(case)) for _ in range(4)))
    assert all(r.status is Status.OK for r in results)
    assert sum(not r.cached for r in results) == 1
    assert len({r.gflops for r in results}) == 1


async def test_constraints_change_the_verdict_not_the_cache(
    engine_settings: EngineSettings,
) -> None:
    engine = Engine(engine_settings)
    case = next(c for c in HONEST if c.ladder == 4)
    ok = await engine.evaluate(request(case))
    forbidden = await engine.evaluate(
        dataclasses.replace(request(case), constraints=Constraints(forbidden=frozenset({"simd"})))
    )
    assert ok.status is Status.OK
    assert forbidden.status is Status.VIOLATION and "simd" in forbidden.message
