"""The SQD controller's plots as PNG bytes (figures from `hpcq.figures`, the `plots` extra).

- `timeline_png`: one problem's stages as bands over the policy steps, the best GFLOPS
  of each step as dots and the running best as a step line.
- `heatmap_png`: the archive as MAP-Elites maps, one per problem: rows are the subsets of
  the first half of the catalogue, columns the subsets of the second half; each filled
  cell shows its elite's GFLOPS and its count, coloured by GFLOPS.
"""

from __future__ import annotations

from itertools import combinations

from hpcq.eval.techniques import CATALOGUE
from hpcq.figures import new_figure, png_bytes
from hpcq.sqd.archive import Archive
from hpcq.sqd.controller import ProblemState

ABBREVIATIONS = {
    "openmp": "OMP",
    "simd": "SIMD",
    "cache_blocking": "CB",
    "register_blocking": "RB",
    "loop_unrolling": "UNR",
    "packing": "PACK",
}
_BANDS = ("#deebf7", "#fdebd7", "#e5f5e0", "#f0e4f5")


def abbreviation(technique: str) -> str:
    return ABBREVIATIONS.get(technique, technique[:4].upper())


def timeline_png(state: ProblemState, width: int = 960, height: int = 440) -> bytes:
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    steps = sorted({s for r in state.timeline for s in (*r.progress.steps, r.start_step)})
    first, last = (steps[0], steps[-1]) if steps else (0, 1)
    last = max(last, first + 1)
    best_all = max((v for r in state.timeline for v in r.step_best.values()), default=0.0)
    # Stage bands: from the stage's first step to the next stage's first step.
    starts = [max(min(r.progress.steps, default=r.start_step), first) for r in state.timeline]
    for i, record in enumerate(state.timeline):
        x1 = starts[i + 1] if i + 1 < len(starts) else last
        ax.axvspan(starts[i], x1, color=_BANDS[i % len(_BANDS)], zorder=0)
        ax.axvline(starts[i], color="grey", linewidth=0.8, zorder=1)
        ax.annotate(
            record.stage.name,
            (starts[i], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
        )
    points = sorted((s, g) for r in state.timeline for s, g in r.step_best.items())
    if points:
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=12, color="#2846a0", label="best of step", zorder=3)
        running: list[float] = []
        for y in ys:
            running.append(max(y, running[-1]) if running else y)
        ax.step([*xs, last], [*running, running[-1]], where="post", color="#c81e1e",
                linewidth=2, label="running best", zorder=4)  # fmt: skip
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(first, last)
    ax.set_ylim(0, best_all * 1.1 if best_all > 0 else 1.0)
    ax.set_xlabel("policy step")
    ax.set_ylabel("GFLOPS")
    ax.set_title(f"{state.problem_id}  schedule {state.schedule}  best {best_all:.2f} GFLOPS")
    fig.tight_layout()
    return png_bytes(fig)


def _subsets(names: tuple[str, ...]) -> list[frozenset[str]]:
    return [frozenset(combo) for k in range(len(names) + 1) for combo in combinations(names, k)]


def _subset_label(subset: frozenset[str], order: tuple[str, ...]) -> str:
    return "+".join(abbreviation(t) for t in order if t in subset) or "none"


def heatmap_png(archive: Archive, problems: list[str] | None = None) -> bytes:
    problems = problems if problems is not None else archive.problems()
    half = (len(CATALOGUE) + 1) // 2
    rows_t, cols_t = CATALOGUE[:half], CATALOGUE[half:]
    rows, cols = _subsets(rows_t), _subsets(cols_t)
    panels = max(1, len(problems))
    fig = new_figure(100 + 80 * len(cols), 60 + panels * (60 + 32 * len(rows)))
    fig.suptitle("SQD archive: elite GFLOPS and count per technique set")
    for n, problem in enumerate(problems or [""]):
        ax = fig.add_subplot(panels, 1, n + 1)
        grid = [[float("nan")] * len(cols) for _ in rows]
        top = max((e.gflops for e in archive.elites(problem)), default=0.0) or 1.0
        for i, row in enumerate(rows):
            for j, col in enumerate(cols):
                cell = archive.cells.get((problem, row | col))
                if cell is None:
                    continue
                grid[i][j] = cell.elite.gflops
                ink = "black" if cell.elite.gflops / top > 0.55 else "white"
                ax.text(j, i, f"{cell.elite.gflops:.1f}\nN={cell.count}", ha="center",
                        va="center", fontsize=7, color=ink)  # fmt: skip
        ax.imshow(grid, cmap="viridis", vmin=0, vmax=top, aspect="auto")
        ax.set_xticks(range(len(cols)), [_subset_label(c, cols_t) for c in cols], fontsize=7)
        ax.set_yticks(range(len(rows)), [_subset_label(r, rows_t) for r in rows], fontsize=7)
        ax.xaxis.tick_top()
        if problem:
            filled, possible = archive.coverage(problem)
            qd = archive.qd_score(problem)
            ax.set_title(f"{problem}  coverage {filled}/{possible}  QD-score {qd:.1f}", fontsize=9)
    key = "  ".join(f"{abbreviation(t)}={t}" for t in CATALOGUE)
    fig.text(0.01, 0.005, key, fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    return png_bytes(fig)
