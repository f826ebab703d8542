"""The SQD report plots, drawn with `hpcq.png` (no matplotlib on a CPU node).

- `timeline_png`: one problem's stages as bands over the policy steps, the best GFLOPS
  of each step as dots and the running best as a line.
- `heatmap_png`: the archive as MAP-Elites maps, one per problem: rows are the subsets of
  the first half of the catalogue, columns the subsets of the second half; each filled
  cell shows its elite's GFLOPS and its count, coloured by GFLOPS.
"""

from __future__ import annotations

from itertools import combinations

from hpcq.archive import Archive
from hpcq.png import BLACK, GREY, LIGHT, RGB, Canvas, text_width
from hpcq.sqd import ProblemState
from hpcq.techniques import CATALOGUE

ABBREVIATIONS = {
    "openmp": "OMP",
    "simd": "SIMD",
    "cache_blocking": "CB",
    "register_blocking": "RB",
    "loop_unrolling": "UNR",
    "packing": "PACK",
}
_BANDS: tuple[RGB, ...] = ((222, 235, 247), (253, 235, 215), (229, 245, 224), (240, 228, 245))
_DOT: RGB = (40, 70, 160)
_BEST: RGB = (200, 30, 30)


def abbreviation(technique: str) -> str:
    return ABBREVIATIONS.get(technique, technique[:4].upper())


def _ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top`."""
    raw = max(top, 1e-9) / count
    magnitude = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 0.1
    while magnitude > raw:
        magnitude /= 10
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [step * i for i in range(count + 1)]


def _label(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def timeline_png(state: ProblemState, width: int = 960, height: int = 440) -> bytes:
    c = Canvas(width, height)
    left, right, top, bottom = 70, width - 20, 60, height - 50
    steps = sorted({s for r in state.timeline for s in (*r.progress.steps, r.start_step)})
    first, last = (steps[0], steps[-1]) if steps else (0, 1)
    last = max(last, first + 1)
    best_all = max((v for r in state.timeline for v in r.step_best.values()), default=0.0)
    ticks = _ticks(best_all * 1.05 if best_all > 0 else 1.0)
    y_top = ticks[-1]

    def px(step: float) -> int:
        return left + round((step - first) / (last - first) * (right - left))

    def py(gflops: float) -> int:
        return bottom - round(gflops / y_top * (bottom - top))

    # Stage bands: from the stage's first step to the next stage's first step.
    starts = [min(r.progress.steps, default=r.start_step) for r in state.timeline]
    for i, record in enumerate(state.timeline):
        x0 = px(max(starts[i], first))
        x1 = px(starts[i + 1]) if i + 1 < len(starts) else right
        c.rect(x0, top, x1, bottom, _BANDS[i % len(_BANDS)])
        c.line(x0, top - 14, x0, bottom, GREY)
        name = record.stage.name
        label = name if text_width(name) < x1 - x0 - 4 else str(record.index)
        c.text(x0 + 3, top - 12, label)
    for t in ticks:
        y = py(t)
        c.line(left - 4, y, right, y, LIGHT if t else BLACK)
        c.text(left - 8 - text_width(_label(t)), y - 3, _label(t))
    for t in _ticks(float(last - first), 6):
        x = px(first + t)
        if x <= right:
            c.line(x, bottom, x, bottom + 4, BLACK)
            c.text(x - text_width(_label(first + t)) // 2, bottom + 8, _label(first + t))
    c.line(left, top, left, bottom, BLACK)
    # Per-step best as dots; the running best as a step line.
    points = sorted((s, g) for r in state.timeline for s, g in r.step_best.items())
    running = 0.0
    prev: tuple[int, int] | None = None
    for step, gflops in points:
        c.rect(px(step) - 2, py(gflops) - 2, px(step) + 2, py(gflops) + 2, _DOT)
        if gflops > running:
            if prev is not None:
                c.line(prev[0], prev[1], px(step), prev[1], _BEST, 2)
                c.line(px(step), prev[1], px(step), py(gflops), _BEST, 2)
            running = gflops
            prev = (px(step), py(gflops))
    if prev is not None:
        c.line(prev[0], prev[1], right, prev[1], _BEST, 2)
    title = f"{state.problem_id}  schedule {state.schedule}  best {best_all:.2f} GFLOPS"
    c.text(left, 12, title, scale=2)
    c.text(left + (right - left) // 2 - text_width("policy step") // 2, height - 18, "policy step")
    c.text(4, top - 30, "GFLOPS")
    c.rect(right - 190, 12, right - 184, 18, _DOT)
    c.text(right - 178, 12, "best of step")
    c.rect(right - 90, 14, right - 80, 16, _BEST)
    c.text(right - 74, 12, "running best")
    return c.png()


def _subsets(names: tuple[str, ...]) -> list[frozenset[str]]:
    return [frozenset(combo) for k in range(len(names) + 1) for combo in combinations(names, k)]


def _subset_label(subset: frozenset[str], order: tuple[str, ...]) -> str:
    return "+".join(abbreviation(t) for t in order if t in subset) or "none"


def _colour(fraction: float) -> RGB:
    """Dark blue (slow) to yellow (fast)."""
    stops = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
    f = min(max(fraction, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(f), len(stops) - 2)
    a, b = stops[i], stops[i + 1]
    t = f - i
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def heatmap_png(archive: Archive, problems: list[str] | None = None) -> bytes:
    problems = problems if problems is not None else archive.problems()
    half = (len(CATALOGUE) + 1) // 2
    rows_t, cols_t = CATALOGUE[:half], CATALOGUE[half:]
    rows, cols = _subsets(rows_t), _subsets(cols_t)
    cell_w, cell_h = 78, 30
    label_w = max(text_width(_subset_label(r, rows_t)) for r in rows) + 12
    panel_h = 40 + 16 + len(rows) * cell_h + 16
    width = label_w + len(cols) * cell_w + 20
    height = 30 + max(1, len(problems)) * panel_h + 40
    c = Canvas(width, height)
    c.text(10, 8, "SQD archive: elite GFLOPS and count per technique set", scale=2)
    for n, problem in enumerate(problems):
        y0 = 30 + n * panel_h
        filled, possible = archive.coverage(problem)
        head = f"{problem}  coverage {filled}/{possible}  QD-score {archive.qd_score(problem):.1f}"
        c.text(10, y0 + 12, head)
        grid_top = y0 + 40
        for j, col in enumerate(cols):
            label = _subset_label(col, cols_t)
            x = label_w + j * cell_w + (cell_w - text_width(label)) // 2
            c.text(x, grid_top - 12, label)
        top = max((e.gflops for e in archive.elites(problem)), default=0.0) or 1.0
        for i, row in enumerate(rows):
            y = grid_top + i * cell_h
            c.text(label_w - 6 - text_width(_subset_label(row, rows_t)), y + 11,
                   _subset_label(row, rows_t))  # fmt: skip
            for j, col in enumerate(cols):
                x = label_w + j * cell_w
                cell = archive.cells.get((problem, row | col))
                if cell is None:
                    c.rect(x + 1, y + 1, x + cell_w - 1, y + cell_h - 1, LIGHT)
                    continue
                fraction = cell.elite.gflops / top
                c.rect(x + 1, y + 1, x + cell_w - 1, y + cell_h - 1, _colour(fraction))
                ink = BLACK if fraction > 0.55 else (255, 255, 255)
                c.text(x + 4, y + 5, f"{cell.elite.gflops:.1f}", ink)
                c.text(x + 4, y + 17, f"N={cell.count}", ink)
    key = "  ".join(f"{abbreviation(t)}={t}" for t in CATALOGUE)
    c.text(10, height - 20, key)
    return c.png()
