"""The ML commands on a node without the ML stack: a clear error naming the extra (exit 2),
never an ImportError's traceback; the core's commands are unaffected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_NO_TORCH = """
import sys
sys.modules["torch"] = None  # as if not installed: importing it raises ModuleNotFoundError
from hpcq.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    top = ["--cache-dir", str(tmp_path / "cache")]
    return subprocess.run(
        [sys.executable, "-c", _NO_TORCH, *top, *argv],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_producer_without_torch_names_the_extra(tmp_path: Path) -> None:
    out = _run(tmp_path, "producer", "--run-dir", str(tmp_path / "run"), "--model", "x")
    assert out.returncode == 2, out.stderr
    assert "`hpcq producer` needs the ml extra (torch is missing)" in out.stderr
    assert "pip install 'hpcq[ml]'" in out.stderr and "Traceback" not in out.stderr


def test_bootstrap_without_torch_names_the_extra(tmp_path: Path) -> None:
    out = _run(tmp_path, "bootstrap-model", "--out", str(tmp_path / "m"))
    assert out.returncode == 2 and "needs the ml extra" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_core_commands_without_torch(tmp_path: Path) -> None:
    out = _run(tmp_path, "problems")
    assert out.returncode == 0 and "dgemm-256" in out.stdout, out.stderr
    listed = _run(tmp_path, "--help")
    assert "producer" in listed.stdout and "evaluate" in listed.stdout
