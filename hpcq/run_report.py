"""A training run's report: `curves.png` (mean reward; mean and best GFLOPS of correct
kernels, per step) and `report.md`, which says plainly whether the mean reward rose.

"Rose" compares the mean over the first steps with the mean over the last ones (a
window of 5, or a third of the run when it is shorter), not two single steps: one step
of GRPO samples is a handful of kernels and its mean is noisy.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcq.png import BLACK, GREY, LIGHT, RGB, Canvas, text_width
from hpcq.reward import describe
from hpcq.settings import RewardSettings
from hpcq.train_settings import RUN_CONFIG, recorded_reward

BLUE: RGB = (31, 119, 180)
ORANGE: RGB = (230, 120, 20)
GREEN: RGB = (44, 160, 44)
RED: RGB = (200, 40, 40)


@dataclass(frozen=True)
class Baselines:
    """Reference points measured in the same run, on the same core."""

    naive_gflops: float | None = None  # the textbook ijk kernel through the engine
    library_gflops: float | None = None  # numpy's DGEMM (OpenBLAS, one thread)
    library_name: str = "numpy (OpenBLAS, 1 thread)"


@dataclass(frozen=True)
class Summary:
    steps: int
    window: int
    reward_first: float | None
    reward_last: float | None
    gflops_first: float | None
    gflops_last: float | None
    ok_first: float
    ok_last: float
    best_gflops: float | None

    @property
    def rose(self) -> bool:
        return (
            self.reward_first is not None
            and self.reward_last is not None
            and self.reward_last > self.reward_first
        )


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summarize(rows: Sequence[dict[str, Any]]) -> Summary:
    window = max(1, min(5, len(rows) // 3)) if rows else 0
    first, last = rows[:window], rows[-window:] if window else []
    best = [r["gflops_best"] for r in rows if r.get("gflops_best") is not None]
    return Summary(
        steps=len(rows),
        window=window,
        reward_first=_mean([r["reward_mean"] for r in first]),
        reward_last=_mean([r["reward_mean"] for r in last]),
        gflops_first=_mean([r["gflops_mean"] for r in first]),
        gflops_last=_mean([r["gflops_mean"] for r in last]),
        ok_first=_mean([r["status_fractions"].get("ok", 0.0) for r in first]) or 0.0,
        ok_last=_mean([r["status_fractions"].get("ok", 0.0) for r in last]) or 0.0,
        best_gflops=max(best) if best else None,
    )


def _fmt(x: float | None, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:.2f}{unit}"


def reward_sentence(reward: RewardSettings | None) -> str:
    if reward is None:
        return f"The run's reward settings are not recorded ({RUN_CONFIG} has no train.reward)."
    return describe(reward) + f" Recorded as train.reward in `{RUN_CONFIG}`."


def report_markdown(
    run_id: str,
    rows: Sequence[dict[str, Any]],
    base: Baselines,
    notes: Sequence[str] = (),
    reward: RewardSettings | None = None,
) -> str:
    """`reward`: the settings the run trained on (None: not recorded)."""
    s = summarize(rows)
    if s.steps == 0:
        verdict = "No step completed: there is nothing to compare."
    elif s.reward_first is None or s.reward_last is None:
        verdict = "No step had a scored kernel: the mean reward is undefined."
    else:
        change = s.reward_last - s.reward_first
        word = "ROSE" if s.rose else "did NOT rise"
        verdict = (
            f"The mean reward {word}: {s.reward_first:.2f} over the first {s.window} step(s) "
            f"-> {s.reward_last:.2f} over the last {s.window} ({change:+.2f}), in {s.steps} steps."
        )
    lines = [
        f"# Run {run_id}",
        "",
        verdict,
        "",
        f"| | first {s.window} steps | last {s.window} steps |",
        "|---|---|---|",
        f"| mean reward | {_fmt(s.reward_first)} | {_fmt(s.reward_last)} |",
        f"| mean GFLOPS of correct kernels | {_fmt(s.gflops_first)} | {_fmt(s.gflops_last)} |",
        f"| share of correct kernels (ok) | {100 * s.ok_first:.0f}% | {100 * s.ok_last:.0f}% |",
        "",
        f"Best kernel of the run: {_fmt(s.best_gflops, ' GFLOPS')}.",
        "",
        "Reference points, measured in this run on the consumer's core:",
        "",
        f"- naive ijk kernel (through the same engine): {_fmt(base.naive_gflops, ' GFLOPS')}",
        f"- {base.library_name}: {_fmt(base.library_gflops, ' GFLOPS')}",
        "",
        reward_sentence(reward),
        "The mean reward moves with both speed and the share of failures.",
        "",
        "![reward and GFLOPS per step](curves.png)",
        "",
        "Files: `metrics.jsonl` (one line per step), `config.json`, `checkpoints/`.",
    ]
    if notes:
        lines += ["", "Notes:", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _panel(
    c: Canvas,
    box: tuple[int, int, int, int],
    title: str,
    series: Sequence[tuple[str, RGB, Sequence[float | None]]],
    hlines: Sequence[tuple[str, RGB, float | None]] = (),
) -> None:
    x0, y0, x1, y1 = box
    values = [v for _, _, s in series for v in s if v is not None]
    values += [v for _, _, v in hlines if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    n = max((len(s) for _, _, s in series), default=1)

    def px(i: int) -> int:
        return x0 + round((x1 - x0) * (i / max(1, n - 1)))

    def py(v: float) -> int:
        return y1 - round((y1 - y0) * (v - lo) / (hi - lo))

    c.box(x0, y0, x1, y1, GREY)
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        c.line(x0, py(v), x1, py(v), LIGHT)
        label = f"{v:.1f}"
        c.text(x0 - text_width(label) - 4, py(v) - 3, label, GREY)
    if lo < 0 < hi:
        c.line(x0, py(0), x1, py(0), GREY)
    for _, color, value in hlines:
        if value is not None:
            for x in range(x0, x1, 8):  # dashed
                c.line(x, py(value), min(x + 4, x1), py(value), color)
    for _, color, points in series:
        prev: tuple[int, int] | None = None
        for i, y in enumerate(points):
            if y is None:
                prev = None
                continue
            point = (px(i), py(y))
            if prev is not None:
                c.line(*prev, *point, color, width=2)
            c.rect(point[0] - 1, point[1] - 1, point[0] + 1, point[1] + 1, color)
            prev = point
    c.text(x0, y0 - 14, title, BLACK)
    x = x0 + text_width(title) + 16
    for name, color, _ in [*series, *[(n, col, None) for n, col, _ in hlines]]:
        c.rect(x, y0 - 12, x + 8, y0 - 6, color)
        c.text(x + 12, y0 - 14, name, color)
        x += text_width(name) + 28
    c.text(x1 - text_width(f"STEP {n}"), y1 + 6, f"STEP {n}", GREY)
    c.text(x0, y1 + 6, "STEP 1", GREY)


def curves_png(rows: Sequence[dict[str, Any]], base: Baselines) -> bytes:
    c = Canvas(900, 560)
    _panel(
        c,
        (70, 30, 880, 250),
        "MEAN REWARD",
        [("REWARD", BLUE, [r["reward_mean"] for r in rows])],
    )
    _panel(
        c,
        (70, 310, 880, 530),
        "GFLOPS OF OK KERNELS",
        [
            ("MEAN", GREEN, [r["gflops_mean"] for r in rows]),
            ("BEST", ORANGE, [r["gflops_best"] for r in rows]),
        ],
        [("NAIVE", RED, base.naive_gflops), ("NUMPY", GREY, base.library_gflops)],
    )
    return c.png()


def write(
    run_dir: Path,
    run_id: str,
    rows: Sequence[dict[str, Any]],
    base: Baselines,
    notes: Sequence[str] = (),
) -> Path:
    """The PNG and report.md; the reward is the one the run directory's config records."""
    (run_dir / "curves.png").write_bytes(curves_png(rows, base))
    path = run_dir / "report.md"
    path.write_text(report_markdown(run_id, rows, base, notes, recorded_reward(run_dir)))
    return path
