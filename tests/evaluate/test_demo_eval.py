"""`make demo` ends with a before/after table from `hpcq evaluate` on the held-out suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train.conftest import needs_torch

needs_torch()

pytestmark = [pytest.mark.broker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_demo_report_gains_the_before_after_table(tiny_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "DEMO_EVAL_K": "2"}
    cmd = [sys.executable, "-m", "bridges.demo", "--steps", "1", "--model", str(tiny_model)]
    cmd += ["--runs-dir", str(tmp_path), "--group-size", "4", "--prompts-per-step", "1"]
    cmd += ["--max-new-tokens", "160"]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = Path(json.loads(out.stdout.strip().splitlines()[-1])["run_dir"])
    report = (run_dir / "report.md").read_text()
    section = report[report.index("## Before and after training") :]
    assert "`held-out` suite" in section and "K = 2 completions" in section
    assert "| mean over problems | before (`initial`) | after (`trained`) |" in section
    for row in ("| pass@1 (correct) |", "| pass@2 |", "| fast_1 vs naive (>= 1 x naive) |"):
        assert row in section
    data = json.loads((run_dir / "eval" / "evaluation.json").read_text())
    assert data["models"] == ["initial", "trained"]
    assert data["meta"]["models"]["trained"].startswith(f"checkpoint `{run_dir}")
    assert len(data["samples"]) == 2 * 3 * 2
