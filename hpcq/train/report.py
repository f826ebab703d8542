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
from typing import TYPE_CHECKING, Any

import structlog

from hpcq.eval.reward import describe
from hpcq.eval.settings import RewardSettings
from hpcq.figures import PlotsUnavailable, new_figure, png_bytes
from hpcq.train.settings import RUN_CONFIG, recorded_reward

if TYPE_CHECKING:
    from matplotlib.axes import Axes

log = structlog.get_logger()


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
    ax: Axes,
    title: str,
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    hlines: Sequence[tuple[str, str, float | None]] = (),
) -> None:
    """Lines over the steps (a None is a gap), with dashed reference levels."""
    for name, color, values in series:
        steps = range(1, len(values) + 1)
        ys = [float("nan") if v is None else v for v in values]
        ax.plot(steps, ys, color=color, marker="o", markersize=3, linewidth=2, label=name)
    for name, color, value in hlines:
        if value is not None:
            ax.axhline(value, color=color, linestyle="--", linewidth=1, label=name)
    ax.set_title(title, loc="left", fontsize=10)
    ax.set_xlabel("step")
    ax.grid(True, color="#e1e1e1")
    if any(v is not None for _, _, s in series for v in s) or any(
        v is not None for _, _, v in hlines
    ):
        ax.legend(fontsize=8, loc="best")


def curves_png(rows: Sequence[dict[str, Any]], base: Baselines) -> bytes:
    """Raises PlotsUnavailable without matplotlib."""
    fig = new_figure(900, 560)
    top, bottom = fig.subplots(2, 1)
    _panel(top, "mean reward", [("reward", "tab:blue", [r["reward_mean"] for r in rows])])
    top.axhline(0, color="grey", linewidth=0.8)
    _panel(
        bottom,
        "GFLOPS of ok kernels",
        [
            ("mean", "tab:green", [r["gflops_mean"] for r in rows]),
            ("best", "tab:orange", [r["gflops_best"] for r in rows]),
        ],
        [("naive", "tab:red", base.naive_gflops), ("numpy", "grey", base.library_gflops)],
    )
    fig.tight_layout()
    return png_bytes(fig)


def write(
    run_dir: Path,
    run_id: str,
    rows: Sequence[dict[str, Any]],
    base: Baselines,
    notes: Sequence[str] = (),
) -> Path:
    """The PNG and report.md; the reward is the one the run directory's config records."""
    try:
        (run_dir / "curves.png").write_bytes(curves_png(rows, base))
    except PlotsUnavailable as exc:  # the report stands without its picture
        log.warning("run report: curves.png skipped", reason=str(exc))
        notes = [*notes, f"curves.png was not drawn: {exc}"]
    path = run_dir / "report.md"
    path.write_text(report_markdown(run_id, rows, base, notes, recorded_reward(run_dir)))
    return path
