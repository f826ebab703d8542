"""The run report: windows, the verdict in words, the PNG."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from hpcq.train import report as run_report
from hpcq.train.report import Baselines, summarize


def row(step: int, reward: float | None, gflops: float | None, ok: float = 1.0) -> dict[str, Any]:
    return {
        "step": step,
        "reward_mean": reward,
        "gflops_mean": gflops,
        "gflops_best": None if gflops is None else gflops + 1,
        "status_fractions": {"ok": ok},
    }


def test_windows_of_five_compare_first_and_last() -> None:
    rows = [row(i, float(i), 2.0 * i) for i in range(1, 31)]
    s = summarize(rows)
    assert s.window == 5 and s.steps == 30
    assert s.reward_first == 3.0 and s.reward_last == 28.0 and s.rose
    assert s.gflops_first == 6.0 and s.gflops_last == 56.0 and s.best_gflops == 61.0


def test_short_runs_use_a_third_and_missing_values_are_skipped() -> None:
    rows = [row(1, 5.0, None, ok=0.0), row(2, None, None), row(3, 1.0, 3.0)]
    s = summarize(rows)
    assert s.window == 1 and s.reward_first == 5.0 and s.reward_last == 1.0
    assert not s.rose and s.gflops_first is None


def test_report_says_plainly_whether_it_rose(tmp_path: Path) -> None:
    up = [row(i, float(i), 1.0) for i in range(1, 7)]
    text = run_report.report_markdown("r", up, Baselines(0.5, 30.0))
    assert "The mean reward ROSE: 1.50 over the first 2 step(s) -> 5.50" in text
    assert "in 6 steps" in text and "0.50 GFLOPS" in text and "30.00 GFLOPS" in text
    down = list(reversed(up))
    assert "did NOT rise" in run_report.report_markdown("r", down, Baselines())
    assert "No step completed" in run_report.report_markdown("r", [], Baselines())
    path = run_report.write(tmp_path, "r", up, Baselines(0.5, None), notes=["a note"])
    assert "- a note" in path.read_text() and "n/a" in path.read_text()
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_report_is_written_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No plotting library: report.md still comes, with a note; curves.png does not."""
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError
    up = [row(i, float(i), 1.0) for i in range(1, 7)]
    path = run_report.write(tmp_path, "r", up, Baselines(0.5, None))
    assert "ROSE" in path.read_text() and "curves.png was not drawn" in path.read_text()
    assert not (tmp_path / "curves.png").exists()
