"""`hpcq eval` from a user's shell: clear errors, no tracebacks, the JSON contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS, sandbox_ready


def hpcq(
    *args: str, cwd: Path | None = None, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "hpcq", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


@pytest.fixture
def sandbox() -> None:
    """Judging a kernel needs the sandbox: a node without its tools is broken, and the
    test fails naming the fix instead of skipping."""
    if not sandbox_ready():
        pytest.fail("bubblewrap/util-linux/binutils missing: run `make install-system`")


@pytest.fixture
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    files = {
        "missing": tmp_path / "missing.c",
        "empty": tmp_path / "empty.c",
        "binary": tmp_path / "garbage.c",
        "huge": tmp_path / "huge.c",
        "directory": tmp_path,
    }
    files["empty"].write_text("")
    files["binary"].write_bytes(bytes(range(256)) * 64)
    files["huge"].write_text("/* padding */\n" * (10 * 1024 * 1024 // 14))
    return files


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("missing", "no such file"),
        ("empty", "file is empty"),
        ("binary", "not C source"),
        ("huge", "at most"),
        ("directory", "is a directory"),
    ],
)
def test_bad_file_gives_clear_error(bad_inputs: dict[str, Path], kind: str, fragment: str) -> None:
    out = hpcq("eval", str(bad_inputs[kind]), "--problem", "dgemm-256", "--json")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert fragment in out.stderr
    assert out.stdout == ""


def test_unknown_problem_lists_known_ones() -> None:
    src = next((CORPUS / "honest").glob("ladder2*.c"))
    out = hpcq("eval", str(src), "--problem", "dgemm-257")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown problem id 'dgemm-257'" in out.stderr and "dgemm-256" in out.stderr


def test_unknown_technique() -> None:
    src = next((CORPUS / "honest").glob("ladder2*.c"))
    out = hpcq("eval", str(src), "--forbid", "openmp,quantum")
    assert out.returncode == 2 and "unknown technique(s) quantum" in out.stderr


def test_bad_config() -> None:
    src = next((CORPUS / "honest").glob("ladder2*.c"))
    out = hpcq("--config", "/nonexistent.toml", "eval", str(src))
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.usefixtures("sandbox")
def test_eval_json_contract(tmp_path: Path) -> None:
    src = next((CORPUS / "honest").glob("ladder2*.c"))
    out = hpcq("--cache-dir", str(tmp_path), "eval", str(src), "--problem", "dgemm-256", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    for key in (
        "status",
        "reward",
        "gflops",
        "gflops_min",
        "gflops_max",
        "cv",
        "techniques",
        "compile_s",
        "run_s",
        "message",
        "peak_gflops",
    ):
        assert key in d, key
    assert d["status"] == "ok" and d["gflops"] > 0 and isinstance(d["techniques"], list)


@pytest.mark.usefixtures("sandbox")
def test_eval_human_line_and_exit_zero_for_bad_kernel(tmp_path: Path) -> None:
    src = tmp_path / "bad.c"
    src.write_text(
        "void dgemm(int M, int N, int K, const double *A, const double *B, double *C) { oops }\n"
    )
    out = hpcq("--cache-dir", str(tmp_path), "eval", str(src))
    assert out.returncode == 0, out.stderr
    assert "compile_error reward=-40" in out.stdout
    assert "'oops' undeclared" in out.stdout  # the compiler's own diagnostic is shown
