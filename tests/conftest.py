"""Shared fixtures. Tests use the real compiler, sandbox and broker; nothing is faked
except where a test says so."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from hpcq.eval.settings import EngineSettings

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "corpus"


SANDBOX_TOOLS = ("bwrap", "setpriv", "prlimit", "gcc", "objdump", "ldd", "taskset")


def sandbox_ready() -> bool:
    return all(shutil.which(t) for t in SANDBOX_TOOLS)


@pytest.fixture
def sandbox_tools() -> None:
    """Tests of the real sandbox FAIL (never skip) on a node without its tools: a suite
    that skips them would pass on a machine that cannot evaluate anything."""
    missing = [t for t in SANDBOX_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make install-system`")


needs_sandbox = pytest.mark.usefixtures("sandbox_tools")


@pytest.fixture
def engine_settings(tmp_path: Path) -> EngineSettings:
    """Engine settings with a private result cache; the harness build and the measured
    peak are shared across tests (work_dir default, cache_dir per test but peak copied)."""
    shared = Path(os.environ.get("HPCQ_TEST_SHARED", "/tmp/hpcq-test-shared"))
    shared.mkdir(parents=True, exist_ok=True)
    cache = tmp_path / "cache"
    cache.mkdir()
    peak = shared / "peak.json"
    if peak.exists():
        shutil.copy(peak, cache / "peak.json")
    return dataclasses.replace(EngineSettings(), cache_dir=cache)


def remember_peak(settings: EngineSettings) -> None:
    src = settings.cache_dir / "peak.json"
    dst = Path(os.environ.get("HPCQ_TEST_SHARED", "/tmp/hpcq-test-shared")) / "peak.json"
    if src.exists() and not dst.exists():
        shutil.copy(src, dst)
