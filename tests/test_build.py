"""Building a candidate in the sandbox: the compiler's limits hold against bombs, and a
stage that forbids simd compiles without the auto-vectoriser."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hpcq.eval.build import NO_VECTORIZE, Builder
from hpcq.eval.engine import Engine
from hpcq.eval.problems import load_problem
from hpcq.eval.settings import EngineSettings, SandboxSettings
from hpcq.outcome import Constraints, EvalRequest, Status
from tests.conftest import CORPUS, needs_sandbox

pytestmark = needs_sandbox
INTEGRITY = CORPUS / "integrity"


def _tight(settings: EngineSettings) -> EngineSettings:
    sandbox = SandboxSettings(compile_cpu_s=5.0, compile_memory_bytes=512 << 20)
    return dataclasses.replace(settings, sandbox=sandbox, use_cache=False)


async def test_macro_bomb_ends_at_the_compilers_limits(engine_settings: EngineSettings) -> None:
    settings = _tight(engine_settings)
    result = await Engine(settings).evaluate(
        EvalRequest("dgemm-256", (INTEGRITY / "macro_bomb.c").read_text())
    )
    assert result.status is Status.COMPILE_ERROR
    assert "exceeded" in result.message, result.message
    # bounded by the CPU limit (5 s here), not by the host's memory or patience
    assert result.compile_s < settings.sandbox.compile_cpu_s + 10


async def test_a_source_cannot_include_itself(engine_settings: EngineSettings) -> None:
    result = await Engine(_tight(engine_settings)).evaluate(
        EvalRequest("dgemm-256", (INTEGRITY / "include_self_bomb.c").read_text())
    )
    assert result.status is Status.COMPILE_ERROR
    assert "No such file" in result.message
    assert result.compile_s < 10


async def test_an_error_flood_is_cut_short(engine_settings: EngineSettings) -> None:
    result = await Engine(_tight(engine_settings)).evaluate(
        EvalRequest("dgemm-256", (INTEGRITY / "error_flood.c").read_text())
    )
    assert result.status is Status.COMPILE_ERROR
    assert result.message.count("error:") <= engine_settings.sandbox.max_errors + 1
    assert len(result.message) < 4000


async def test_forbidding_simd_turns_the_auto_vectoriser_off(
    engine_settings: EngineSettings,
) -> None:
    """An honest scalar kernel the compiler would vectorise is not a simd violation: with
    simd forbidden it is compiled with NO_VECTORIZE, so any packed arithmetic left in the
    object is the candidate's own."""
    stage = Constraints(forbidden=frozenset({"simd"}))
    source = (CORPUS / "honest" / "ladder2_ikj.c").read_text()
    request = EvalRequest("dgemm-256", source, constraints=stage)
    builder = Builder(
        engine_settings, Engine(engine_settings).sandbox, load_problem("dgemm-256"), request,
        Path("/nonexistent"), None,
    )  # fmt: skip
    assert set(NO_VECTORIZE) <= set(builder.compile_flags())
    plain = dataclasses.replace(request, constraints=Constraints())
    assert not set(NO_VECTORIZE) & set(dataclasses.replace(builder, request=plain).compile_flags())
    result = await Engine(dataclasses.replace(engine_settings, use_cache=False)).evaluate(request)
    assert result.status is Status.OK, result.message
    assert "simd" not in result.techniques
