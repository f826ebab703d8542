"""report.md, evaluation.json and the PNG from a summary built by hand."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import pytest

from hpcq.train.evaluate import report as eval_report
from hpcq.train.evaluate.stats import Judged, Reference, summarize

PROBLEMS = ("dgemm-255", "dgemm-1000x300x700")


def _summary() -> tuple[Any, eval_report.Meta, list[Judged]]:
    judged = []
    for model, gflops in (("before", (2.0, None, None, None)), ("after", (2.0, 5.0, 9.0, None))):
        for p in PROBLEMS:
            for i, g in enumerate(gflops):
                status = "ok" if g is not None else "compile_error"
                judged.append(
                    Judged(model, p, i, status, gflops=g, cv=0.01 if g else None,
                           peak_gflops=40.0 if g else None, node_class="x86_64-test",
                           techniques=("simd",) if g and g > 4 else ())
                )  # fmt: skip
    refs = {
        p: {
            "naive": Reference("naive", 1.5, "naive ijk kernel", 0.05, "x86_64-test"),
            "library": Reference("library", None, "numpy", note="not measured: numpy missing"),
        }
        for p in PROBLEMS
    }
    s = summarize(judged, ["before", "after"], list(PROBLEMS), 2, refs)
    meta = eval_report.Meta(
        suite="held-out",
        split="held-out",
        description="DGEMM at odd and non-square shapes",
        models={"before": "`/m/initial`", "after": "checkpoint `/r/step-40` over `/m/initial`"},
        shapes={"dgemm-255": "255 x 255 x 255", "dgemm-1000x300x700": "1000 x 300 x 700"},
        sampling={"temperature": 1.0, "seed": 0},
        node_classes=("x86_64-test",),
        compiler="gcc (Debian 12.2.0-14) 12.2.0",
        cflags=("-O3", "-march=native"),
    )
    return s, meta, judged


def test_report_puts_models_side_by_side_with_references(tmp_path: Path) -> None:
    s, meta, judged = _summary()
    path = eval_report.write(tmp_path, s, meta, judged)
    text = path.read_text()
    assert "# Evaluation on suite `held-out` (held-out)" in text
    assert "x86_64-test" in text and "gcc (Debian 12.2.0-14) 12.2.0" in text
    assert "`-O3 -march=native`" in text and "CV" in text
    # before: 1 of 4 correct per problem, after: 3 of 4 -> +50 pp, no spread over problems
    row = next(line for line in text.splitlines() if line.startswith("| pass@1 (correct)"))
    assert "| 25% | 75% | +50 pp (t [+50 pp, +50 pp]" in row
    assert "| pass@2 | 50% | 100% |" in text  # 1 - C(3,2)/C(4,2) = 0.5; 1 - 0 = 1
    # the library reference is stated as not measured, never invented
    assert "not measured: numpy missing" in text
    assert "| fast_1 vs library (>= 1 x library) | n/a | n/a | n/a |" in text
    # after: correct kernels at 2, 5, 9 GFLOPS vs naive 1.5 -> all three >= 1.5x1.0
    assert "75% / 75% / 75%" in text
    assert "### dgemm-1000x300x700 (1000 x 300 x 700)" in text
    assert "simd 2" in text
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert data["overall"]["after"]["values"]["pass@1"] == pytest.approx(0.75)
    assert data["per_problem"]["after"]["dgemm-255"]["fast_naive"]["1"] == pytest.approx(0.75)
    assert len(data["samples"]) == 16 and data["meta"]["node_classes"] == ["x86_64-test"]
    assert data["references"]["dgemm-255"]["library"]["gflops"] is None


def test_png_is_drawn_with_matplotlib(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    s, meta, judged = _summary()
    text = eval_report.write(tmp_path, s, meta, judged).read_text()
    assert (tmp_path / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](evaluation.png)" in text


def test_without_matplotlib_the_report_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    s, meta, judged = _summary()
    text = eval_report.write(tmp_path, s, meta, judged).read_text()
    assert not (tmp_path / "evaluation.png").exists()
    assert "no PNG: matplotlib is not installed" in text
    assert "evaluation.png" not in text


def test_before_after_section() -> None:
    s, meta, _ = _summary()
    text = eval_report.before_after_markdown(s, meta, "eval/report.md")
    assert text.startswith("## Before and after training")
    assert "| pass@1 (correct) | 25% | 75% | +50 pp [+50 pp, +50 pp] |" in text
    assert "Naive reference per problem: 1.50, 1.50 GFLOPS" in text
    assert "not measured: numpy missing" in text and "`eval/report.md`" in text
