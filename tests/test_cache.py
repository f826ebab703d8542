"""The result cache: keyed on everything a stored verdict depends on, and a write that
fails never costs the measurement."""

from __future__ import annotations

import dataclasses
import errno
import types
from pathlib import Path

import pytest

from hpcq.eval import cache as cache_module
from hpcq.eval.cache import ResultCache, detector_digest
from hpcq.eval.engine import Engine
from hpcq.eval.harness import HarnessBinaries
from hpcq.eval.problems import load_problem
from hpcq.eval.settings import EngineSettings, MeasureSettings, RewardSettings, SandboxSettings
from hpcq.outcome import Constraints, EvalRequest, EvalResult, Status
from tests.conftest import CORPUS, needs_sandbox

BINARIES = HarnessBinaries(judge=Path("/j"), runner=Path("/r"), digest="h1")
REQUEST = EvalRequest("dgemm-256", "void dgemm(void) {}")


def _key(settings: EngineSettings, request: EvalRequest = REQUEST, **binaries: str) -> str:
    engine = Engine(settings)
    engine._cc_version = "gcc 12"  # what harness_binaries would have read
    return engine.cache_key_for(
        request, load_problem("dgemm-256"), dataclasses.replace(BINARIES, **binaries)
    )


def test_key_covers_every_setting_a_verdict_depends_on(engine_settings: EngineSettings) -> None:
    s = engine_settings
    base = _key(s)
    changed = {
        "measure": dataclasses.replace(s, measure=MeasureSettings(min_calls=11)),
        "full checks": dataclasses.replace(s, measure=MeasureSettings(full_checks=4)),
        "sandbox": dataclasses.replace(s, sandbox=SandboxSettings(memory_bytes=1 << 30)),
        "compile caps": dataclasses.replace(s, sandbox=SandboxSettings(max_include_depth=8)),
        "reward": dataclasses.replace(s, reward=RewardSettings(wrong_result=-11.0)),
        "shaping": dataclasses.replace(
            s, reward=RewardSettings(shaping="log_speedup", baseline_gflops=1.0)
        ),
        "flags": dataclasses.replace(s, node=dataclasses.replace(s.node, cflags=("-O2",))),
        "peak": dataclasses.replace(s, node=dataclasses.replace(s.node, peak_gflops_per_core=9.0)),
        "static gate": dataclasses.replace(s, static_checks=False),
    }
    keys = {name: _key(settings) for name, settings in changed.items()}
    for name, key in keys.items():
        assert key != base, f"changing the {name} settings keeps the cache key"
    assert len(set(keys.values())) == len(keys)
    assert _key(s, digest="h2") != base
    assert _key(s, dataclasses.replace(REQUEST, cores=(0, 1))) != base
    stage = Constraints(forbidden=frozenset({"simd"}))
    assert _key(s, dataclasses.replace(REQUEST, constraints=stage)) != base
    assert _key(s) == base  # and it is deterministic


def test_key_covers_the_detector_version(
    engine_settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _key(engine_settings)
    monkeypatch.setattr(cache_module, "detector_digest", lambda: "another-version")
    import hpcq.eval.engine

    monkeypatch.setattr(hpcq.eval.engine, "detector_digest", lambda: "another-version")
    assert _key(engine_settings) != base
    assert len(detector_digest()) == 16


def test_failed_write_is_logged_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ResultCache(tmp_path / "results")
    result = EvalResult(status=Status.OK, reward=5.0, gflops=5.0)

    def disk_full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "replace", disk_full)
    assert store.put("ab" * 32, result) is False
    leftovers = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert leftovers == []
    monkeypatch.undo()
    assert store.put("ab" * 32, result) is True
    assert store.get("ab" * 32) is not None


@needs_sandbox
async def test_a_measurement_survives_a_cache_that_cannot_be_written(
    engine_settings: EngineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, "No space left on device")

    # The cache's own view of tempfile only: the peak store (a first measurement on a fresh
    # machine) shares the tempfile module and must still write.
    monkeypatch.setattr(cache_module, "tempfile", types.SimpleNamespace(mkstemp=disk_full))
    source = (CORPUS / "honest" / "ladder2_ikj.c").read_text()
    result = await Engine(engine_settings).evaluate(EvalRequest("dgemm-256", source))
    assert result.status is Status.OK and result.gflops and not result.cached
    root = engine_settings.cache_dir / "results"
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]
    again = await Engine(engine_settings).evaluate(EvalRequest("dgemm-256", source))
    assert not again.cached  # nothing was stored: measured again, still a result


def test_detector_version_covers_every_module_the_build_reads() -> None:
    from hpcq.eval.cache import detector_modules

    modules = set(detector_modules())
    for name in ("build", "techniques", "csource.model", "csource.strip",
                 "csource.declarations", "csource.constexpr", "packing", "csource.preprocess",
                 "static_checks", "object_checks", "elf"):  # fmt: skip
        assert f"hpcq.eval.{name}" in modules, name
