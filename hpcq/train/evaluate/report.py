"""What `hpcq evaluate` writes: `report.md`, `evaluation.json` and `evaluation.png`.

The markdown puts the models side by side (overall, then per problem), with the
reference points and where every figure was measured (node class, compiler, flags, CV).
The JSON holds the same figures plus every judged sample. The PNG needs matplotlib
(the `plots` extra), imported only when drawing: without it the report says so.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcq.figures import PlotsUnavailable, new_figure, png_bytes
from hpcq.train.evaluate.stats import FAST_P, Comparison, Difference, Judged, ProblemStats, Summary

SCHEMA = 1
PNG_NAME = "evaluation.png"


@dataclass(frozen=True)
class Meta:
    """Where and how the figures were obtained."""

    suite: str
    split: str
    description: str
    models: dict[str, str]  # label -> what was loaded (path or hub id, checkpoint)
    shapes: dict[str, str]  # problem id -> "M x N x K"
    sampling: dict[str, Any]  # temperature, top_p, max_new_tokens, seed, backend
    node_classes: tuple[str, ...]  # where the consumers measured
    compiler: str  # version line of the configured compiler
    cflags: tuple[str, ...]
    namespace: str = ""
    created_at: str = ""
    sample_s: float = 0.0
    judge_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)


# --- text helpers --------------------------------------------------------------------

SHARES = {"compiles", "pass@1", "pass@k"} | {
    f"fast_{p:g}_{ref}" for p in FAST_P for ref in ("naive", "library")
}
FRACTIONS = {"peak_fraction_mean", "peak_fraction_best"}


def _label(metric: str, k: int) -> str:
    names = {
        "compiles": "compiles",
        "pass@1": "pass@1 (correct)",
        "pass@k": f"pass@{k}",
        "gflops_mean": "mean GFLOPS of correct kernels",
        "gflops_best": "best GFLOPS",
        "peak_fraction_mean": "mean fraction of peak",
        "peak_fraction_best": "best fraction of peak",
    }
    if metric in names:
        return names[metric]
    _, p, ref = metric.split("_")
    return f"fast_{p} vs {ref} (>= {p} x {ref})"


def fmt(metric: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    sign = "+" if signed else ""
    if metric in SHARES:
        return f"{100 * value:{sign}.0f}%" if not signed else f"{100 * value:+.0f} pp"
    if metric in FRACTIONS:
        return f"{100 * value:{sign}.1f}%" if not signed else f"{100 * value:+.1f} pp"
    return f"{value:{sign}.2f}"


def _ci(metric: str, ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "n/a"
    return f"[{fmt(metric, ci[0], True)}, {fmt(metric, ci[1], True)}]"


def _diff_cell(d: Difference) -> str:
    if d.mean is None:
        return "n/a"
    return (
        f"{fmt(d.metric, d.mean, True)} (t {_ci(d.metric, d.t_ci)}; "
        f"bootstrap {_ci(d.metric, d.bootstrap_ci)}; {len(d.diffs)} problems)"
    )


def _ref_cell(gflops: float | None, cv: float | None, note: str) -> str:
    if gflops is None:
        return note or "not measured"
    return f"{gflops:.2f}" + ("" if cv is None else f" (CV {100 * cv:.1f}%)")


# --- markdown ------------------------------------------------------------------------


def _overall_table(s: Summary) -> list[str]:
    head = "| metric | " + " | ".join(f"`{m}`" for m in s.models)
    diffs = {c.b: {d.metric: d for d in c.differences} for c in s.comparisons}
    head += "".join(f" | `{b}` - `{s.models[0]}` (95% CIs over problems)" for b in diffs)
    lines = [head + " |", "|---" * (1 + len(s.models) + len(diffs)) + "|"]
    for metric in s.overall[s.models[0]].values:
        row = f"| {_label(metric, s.k)} | "
        row += " | ".join(fmt(metric, s.overall[m].values[metric]) for m in s.models)
        row += "".join(f" | {_diff_cell(diffs[b][metric])}" for b in diffs)
        lines.append(row + " |")
    return lines


def _fast_cell(values: dict[float, float | None]) -> str:
    if all(v is None for v in values.values()):
        return "not measured"
    return " / ".join(fmt("pass@1", values[p]) for p in FAST_P)


def _problem_table(s: Summary, problem: str) -> list[str]:
    p = "/".join(f"{x:g}" for x in FAST_P)
    lines = [
        f"| model | n (left out) | compiles | pass@1 | pass@{s.k} | mean / best GFLOPS | "
        f"CV median | fraction of peak mean / best | fast_{p} vs naive | "
        f"fast_{p} vs library | techniques of correct kernels | statuses |",
        "|---" * 12 + "|",
    ]
    for m in s.models:
        st: ProblemStats = s.per_problem[m][problem]
        tech = ", ".join(f"{t} {n}" for t, n in st.techniques.items()) or "-"
        status = ", ".join(f"{t} {n}" for t, n in st.statuses.items())
        cv = "n/a" if st.cv_median is None else f"{100 * st.cv_median:.1f}%"
        lines.append(
            f"| `{m}` | {st.n} ({st.left_out}) | {fmt('compiles', st.compile_share)} | "
            f"{fmt('pass@1', st.pass1)} | {fmt('pass@k', st.passk)} | "
            f"{fmt('gflops_mean', st.gflops_mean)} / {fmt('gflops_best', st.gflops_best)} | "
            f"{cv} | {fmt('peak_fraction_mean', st.peak_fraction_mean)} / "
            f"{fmt('peak_fraction_best', st.peak_fraction_best)} | "
            f"{_fast_cell(st.fast_naive)} | {_fast_cell(st.fast_library)} | {tech} | {status} |"
        )
    return lines


def _references(s: Summary, meta: Meta) -> list[str]:
    lines = [
        "| problem | shape (M x N x K) | naive GFLOPS | library GFLOPS |",
        "|---|---|---|---|",
    ]
    hows: set[str] = set()
    for p in s.problems:
        refs = s.references.get(p, {})
        naive, lib = refs.get("naive"), refs.get("library")
        cells = []
        for r in (naive, lib):
            cells.append("not measured" if r is None else _ref_cell(r.gflops, r.cv, r.note))
            if r is not None and r.gflops is not None:
                hows.add(f"{r.name}: {r.how}")
        lines.append(f"| {p} | {meta.shapes.get(p, '')} | {cells[0]} | {cells[1]} |")
    return lines + [""] + [f"- {h}" for h in sorted(hows)]


def markdown(s: Summary, meta: Meta, png: str | None) -> str:
    models = ", ".join(f"`{m}` ({meta.models[m]})" for m in s.models)
    sampling = ", ".join(f"{k} {v}" for k, v in meta.sampling.items())
    lines = [
        f"# Evaluation on suite `{meta.suite}` ({meta.split})",
        "",
        f"{meta.description}. Problems: {', '.join(s.problems)}.",
        "",
        f"Models: {models}.",
        "",
        f"K = {s.k} completions per problem and model, the same prompts (default stage, "
        f"every technique allowed) and sampling for every model: {sampling}.",
        "",
        f"Every kernel and the naive reference were compiled, sandboxed, verified and timed "
        f"by the consumers of node class {', '.join(meta.node_classes) or 'n/a'} "
        f"(namespace `{meta.namespace}`), compiler `{meta.compiler}`, flags "
        f"`{' '.join(meta.cflags)}` (as the consumers reported them with each result). "
        "CV is the coefficient of variation of a kernel's timed calls.",
        "",
        f"## Overall: means over {len(s.problems)} problem(s)",
        "",
        *_overall_table(s),
        "",
        "Differences are b - a per problem, averaged; the intervals are 95 % Student-t and "
        "paired-bootstrap intervals over problems (n/a below two problems).",
        "",
        "## Reference points",
        "",
        *_references(s, meta),
        "",
        "## Per problem",
    ]
    for p in s.problems:
        lines += ["", f"### {p} ({meta.shapes.get(p, '')})", "", *_problem_table(s, p)]
    lines += [
        "",
        "## Definitions",
        "",
        "- n: completions the cluster judged (left out: the pipeline could not judge them, "
        "not counted). compiles: a code block that did not end in `compile_error`.",
        "- pass@k: unbiased estimator 1 - C(n-c, k) / C(n, k), c = correct (`ok`) samples; "
        "n/a when n < k. pass@1 = c / n.",
        "- fast_p: share of the n samples that are correct and at least p x the reference's "
        "GFLOPS (naive: the ijk kernel judged the same way; library: see above).",
        "- fraction of peak: GFLOPS / the slot's measured FP64 peak (`peak_gflops`).",
        "- Overall figures are means over the problems where the figure is defined.",
        "",
    ]
    if png:
        lines += [f"![pass@k, GFLOPS and fast_p per model]({png})", ""]
    lines += [f"- {n}" for n in meta.notes]
    lines += [
        "",
        f"Sampling took {meta.sample_s:.0f} s, judging {meta.judge_s:.0f} s. Every judged "
        "sample, with its source: `evaluation.json`.",
    ]
    return "\n".join(lines) + "\n"


BEFORE_AFTER = (
    "compiles",
    "pass@1",
    "pass@k",
    "gflops_mean",
    "gflops_best",
    "peak_fraction_mean",
    "fast_1_naive",
    "fast_1_library",
)


def before_after_markdown(s: Summary, meta: Meta, link: str) -> str:
    """A short before/after section (the first two models) for a run's report."""
    if len(s.models) < 2 or not s.comparisons:
        return ""
    a, b = s.models[0], s.models[1]
    diffs = {d.metric: d for d in s.comparisons[0].differences}
    lines = [
        f"## Before and after training: `hpcq evaluate` on the `{meta.suite}` suite",
        "",
        f"{meta.description} ({', '.join(s.problems)}); K = {s.k} completions per problem, "
        f"same prompts and seed for both models; measured by the consumers of "
        f"{', '.join(meta.node_classes) or 'n/a'} (`{meta.compiler}`, "
        f"`{' '.join(meta.cflags)}`).",
        "",
        f"| mean over problems | before (`{a}`) | after (`{b}`) | after - before (95% t CI) |",
        "|---|---|---|---|",
    ]
    for metric in BEFORE_AFTER:
        va, vb = s.overall[a].values[metric], s.overall[b].values[metric]
        d = diffs[metric]
        change = "n/a" if d.mean is None else f"{fmt(metric, d.mean, True)} {_ci(metric, d.t_ci)}"
        lines.append(
            f"| {_label(metric, s.k)} | {fmt(metric, va)} | {fmt(metric, vb)} | {change} |"
        )
    naive = [r["naive"].gflops for r in s.references.values() if "naive" in r]
    lib = [r["library"] for r in s.references.values() if "library" in r]
    lib_note = next((r.note for r in lib if r.gflops is None and r.note), "")
    lines += [
        "",
        f"Naive reference per problem: {', '.join(fmt('gflops_mean', g) for g in naive)} GFLOPS; "
        f"library: {', '.join(fmt('gflops_mean', r.gflops) for r in lib)} GFLOPS"
        + (f" ({lib_note})" if lib_note else "")
        + f". Details per problem: `{link}`.",
        "",
    ]
    return "\n".join(lines)


# --- JSON and PNG --------------------------------------------------------------------


def _stats_dict(st: ProblemStats) -> dict[str, Any]:
    d = dataclasses.asdict(st)
    d["fast_naive"] = {f"{p:g}": v for p, v in st.fast_naive.items()}
    d["fast_library"] = {f"{p:g}": v for p, v in st.fast_library.items()}
    d["node_classes"] = list(st.node_classes)
    return d


def _comparison_dict(c: Comparison) -> dict[str, Any]:
    return {
        "a": c.a,
        "b": c.b,
        "differences": {
            d.metric: {
                "diffs": list(d.diffs),
                "mean": d.mean,
                "t_ci": list(d.t_ci) if d.t_ci else None,
                "bootstrap_ci": list(d.bootstrap_ci) if d.bootstrap_ci else None,
            }
            for d in c.differences
        },
    }


def to_json(s: Summary, meta: Meta, judged: Sequence[Judged]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "meta": {**dataclasses.asdict(meta), "cflags": list(meta.cflags)},
        "k": s.k,
        "models": list(s.models),
        "problems": list(s.problems),
        "references": {
            p: {name: dataclasses.asdict(r) for name, r in refs.items()}
            for p, refs in s.references.items()
        },
        "per_problem": {
            m: {p: _stats_dict(st) for p, st in by.items()} for m, by in s.per_problem.items()
        },
        "overall": {m: {"values": o.values, "problems": o.problems} for m, o in s.overall.items()},
        "comparisons": [_comparison_dict(c) for c in s.comparisons],
        "samples": [dataclasses.asdict(j) | {"techniques": list(j.techniques)} for j in judged],
    }


def plot_png(s: Summary, path: Path) -> str | None:
    """Draw the PNG; returns why it was not drawn, or None when it was."""
    try:
        fig = new_figure(1500, 450)
    except PlotsUnavailable:
        return "no PNG: matplotlib is not installed (pip install -e '.[plots]')"
    axes = fig.subplots(1, 3)
    width = 0.8 / len(s.models)
    xs = range(len(s.problems))
    for i, m in enumerate(s.models):
        st = [s.per_problem[m][p] for p in s.problems]
        offs = [x + (i - (len(s.models) - 1) / 2) * width for x in xs]
        axes[0].bar(offs, [x.pass1 or 0.0 for x in st], width, label=f"{m} pass@1")
        axes[0].scatter(offs, [x.passk or 0.0 for x in st], marker="_", s=200, color="black")
        axes[1].bar(offs, [x.gflops_mean or 0.0 for x in st], width, label=m)
        axes[2].plot(
            FAST_P, [s.overall[m].values[f"fast_{p:g}_naive"] or 0.0 for p in FAST_P],
            marker="o", label=m,
        )  # fmt: skip
    for j, p in enumerate(s.problems):
        refs = s.references.get(p, {})
        for name, style in (("naive", "r--"), ("library", "k:")):
            r = refs.get(name)
            if r is not None and r.gflops is not None:
                axes[1].plot([j - 0.45, j + 0.45], [r.gflops] * 2, style)
    axes[0].set_title(f"pass@1 (bars), pass@{s.k} (ticks)")
    axes[1].set_title("mean GFLOPS of correct kernels (red: naive, black: library)")
    axes[2].set_title("fast_p vs the naive kernel (overall)")
    for ax in axes[:2]:
        ax.set_xticks(list(xs), s.problems, rotation=15, fontsize=8)
    axes[0].set_ylim(0, 1.05)
    axes[2].set_xlabel("p")
    axes[2].set_ylim(0, 1.05)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.write_bytes(png_bytes(fig))
    return None


def write(out: Path, s: Summary, meta: Meta, judged: Sequence[Judged]) -> Path:
    """report.md, evaluation.json and (with matplotlib) evaluation.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    why_not = plot_png(s, out / PNG_NAME)
    if why_not:
        meta = dataclasses.replace(meta, notes=(*meta.notes, why_not))
    (out / "evaluation.json").write_text(json.dumps(to_json(s, meta, judged), indent=1) + "\n")
    path = out / "report.md"
    path.write_text(markdown(s, meta, None if why_not else PNG_NAME))
    return path
