"""The statistics of `hpcq evaluate`: from judged samples to figures per problem, per
model, and differences between models. Pure functions, no I/O.

Per problem and model, over the n samples the cluster judged (samples the pipeline left
out, an infra failure, are not the model's and are not counted; their number is shown):

- compiles: share with a code block that did not end in `compile_error`;
- pass@1 and pass@k: the unbiased estimator of Chen et al. (2021),
  pass@k = 1 - C(n-c, k) / C(n, k) with c correct (`ok`) samples of n >= k;
- mean and best GFLOPS of the correct samples, and the same as a fraction of the
  slot's peak (`peak_gflops` of each result);
- fast_p (KernelBench's measure): share of the n samples that are correct and at least
  p times the reference, for p in FAST_P, against the naive kernel measured through the
  same engine, and against the library reference where one was measured (None: not
  measured; never estimated);
- the techniques the correct kernels use.

Overall figures are means over problems (every problem weighs the same). Two models are
compared problem by problem: the mean of the paired differences with a Student-t 95 %
interval over problems and a paired bootstrap interval (problems resampled). With few
problems the intervals are wide, as they should be.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

FAST_P: tuple[float, ...] = (0.5, 0.8, 1.0)
LEFT_OUT = "left_out"  # a sample the pipeline could not judge (infra_error, deadline)
OK = "ok"
COMPILE_ERROR = "compile_error"

# Two-sided 95 % quantiles of Student's t, df 1..30; above 30 the Cornish-Fisher
# expansion around the normal quantile (error below 1e-3).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959963984540054


@dataclass(frozen=True)
class Judged:
    """One completion of one model for one problem, as the cluster judged it."""

    model: str
    problem_id: str
    index: int  # sample number within (model, problem)
    status: str  # a hpcq.outcome.Status value, or LEFT_OUT
    extracted: bool = True  # False: no usable code block (a format violation, never sent)
    gflops: float | None = None  # median of the timed calls; None unless ok
    cv: float | None = None
    peak_gflops: float | None = None  # the slot's peak the kernel ran against
    techniques: tuple[str, ...] = ()
    node_class: str = ""
    compiler: str = ""  # as the consumer reported it with the result
    flags: tuple[str, ...] = ()
    consumer: str = ""
    cached: bool = False  # answered from the engine's result cache (same measurement)
    message: str = ""
    source: str = ""


@dataclass(frozen=True)
class Reference:
    """A reference figure for one problem; `gflops` None means not measured (`note` says why)."""

    name: str  # "naive" | "library"
    gflops: float | None
    how: str  # what was measured, where
    cv: float | None = None
    node_class: str = ""
    note: str = ""


@dataclass(frozen=True)
class ProblemStats:
    problem_id: str
    n: int  # judged samples
    left_out: int
    compiled: int
    correct: int
    compile_share: float | None
    pass1: float | None
    passk: float | None  # None when n < k
    gflops_mean: float | None
    gflops_best: float | None
    peak_fraction_mean: float | None
    peak_fraction_best: float | None
    cv_median: float | None  # of the correct samples' timings
    fast_naive: dict[float, float | None]
    fast_library: dict[float, float | None]
    techniques: dict[str, int]  # technique -> correct samples using it
    statuses: dict[str, int]
    node_classes: tuple[str, ...]


@dataclass(frozen=True)
class Overall:
    """Means over the problems where the figure is defined (`problems` counts them)."""

    values: dict[str, float | None]
    problems: dict[str, int]


@dataclass(frozen=True)
class Difference:
    """b - a over the problems where both are defined."""

    metric: str
    diffs: tuple[float, ...]
    mean: float | None
    t_ci: tuple[float, float] | None
    bootstrap_ci: tuple[float, float] | None


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    differences: tuple[Difference, ...]


@dataclass(frozen=True)
class Summary:
    k: int
    models: tuple[str, ...]
    problems: tuple[str, ...]
    per_problem: dict[str, dict[str, ProblemStats]]  # model -> problem -> stats
    overall: dict[str, Overall]
    comparisons: tuple[Comparison, ...]
    references: dict[str, dict[str, Reference]] = field(default_factory=dict)


# --- estimators ---------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c,k)/C(n,k),
    computed as a product (no huge binomials)."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def fast_p(
    gflops_of_correct: Sequence[float], n: int, reference: float | None, p: float
) -> float | None:
    """Share of the n samples that are correct and reach p x the reference."""
    if reference is None or reference <= 0 or n == 0:
        return None
    return sum(1 for g in gflops_of_correct if g >= p * reference) / n


def t_quantile_975(df: int) -> float:
    if df < 1:
        raise ValueError("df >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """95 % Student-t interval of the mean; None below two values."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return (mean - half, mean + half)


def bootstrap_interval(
    values: Sequence[float], rounds: int = 4000, seed: int = 0
) -> tuple[float, float] | None:
    """95 % percentile interval of the mean, the values (paired differences, one per
    problem) resampled with replacement; None below two values."""
    if len(values) < 2:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(rounds))
    return (means[int(0.025 * rounds)], means[min(rounds - 1, int(0.975 * rounds))])


# --- aggregation ----------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def problem_stats(
    problem_id: str, samples: Sequence[Judged], k: int, refs: Mapping[str, Reference]
) -> ProblemStats:
    judged = [s for s in samples if s.status != LEFT_OUT]
    n = len(judged)
    good = [s for s in judged if s.status == OK and s.gflops is not None]
    gflops = [s.gflops for s in good if s.gflops is not None]
    fractions = [s.gflops / s.peak_gflops for s in good if s.gflops is not None and s.peak_gflops]
    compiled = sum(1 for s in judged if s.extracted and s.status != COMPILE_ERROR)
    naive = refs.get("naive")
    library = refs.get("library")
    techniques: Counter[str] = Counter(t for s in good for t in s.techniques)
    cvs = [s.cv for s in good if s.cv is not None]
    return ProblemStats(
        problem_id=problem_id,
        n=n,
        left_out=len(samples) - n,
        compiled=compiled,
        correct=len(good),
        compile_share=compiled / n if n else None,
        pass1=pass_at_k(n, len(good), 1) if n else None,
        passk=pass_at_k(n, len(good), k) if n >= k else None,
        gflops_mean=statistics.fmean(gflops) if gflops else None,
        gflops_best=max(gflops) if gflops else None,
        peak_fraction_mean=statistics.fmean(fractions) if fractions else None,
        peak_fraction_best=max(fractions) if fractions else None,
        cv_median=statistics.median(cvs) if cvs else None,
        fast_naive={p: fast_p(gflops, n, naive.gflops if naive else None, p) for p in FAST_P},
        fast_library={p: fast_p(gflops, n, library.gflops if library else None, p) for p in FAST_P},
        techniques=dict(sorted(techniques.items())),
        statuses=dict(sorted(Counter(s.status for s in samples).items())),
        node_classes=tuple(sorted({s.node_class for s in judged if s.node_class})),
    )


def metric_values(s: ProblemStats) -> dict[str, float | None]:
    """The per-problem figures that are averaged over problems and compared."""
    values: dict[str, float | None] = {
        "compiles": s.compile_share,
        "pass@1": s.pass1,
        "pass@k": s.passk,
        "gflops_mean": s.gflops_mean,
        "gflops_best": s.gflops_best,
        "peak_fraction_mean": s.peak_fraction_mean,
        "peak_fraction_best": s.peak_fraction_best,
    }
    for p in FAST_P:
        values[f"fast_{p:g}_naive"] = s.fast_naive[p]
        values[f"fast_{p:g}_library"] = s.fast_library[p]
    return values


def overall(stats: Iterable[ProblemStats]) -> Overall:
    rows = [metric_values(s) for s in stats]
    names = list(rows[0]) if rows else []
    return Overall(
        values={m: _mean(r[m] for r in rows) for m in names},
        problems={m: sum(1 for r in rows if r[m] is not None) for m in names},
    )


def compare(
    a: str, b: str, per_problem: Mapping[str, Mapping[str, ProblemStats]], seed: int = 0
) -> Comparison:
    diffs = []
    problems = [p for p in per_problem[a] if p in per_problem[b]]
    for metric in metric_values(per_problem[a][problems[0]]) if problems else []:
        d = []
        for p in problems:
            va = metric_values(per_problem[a][p])[metric]
            vb = metric_values(per_problem[b][p])[metric]
            if va is not None and vb is not None:
                d.append(vb - va)
        diffs.append(
            Difference(
                metric=metric,
                diffs=tuple(d),
                mean=statistics.fmean(d) if d else None,
                t_ci=t_interval(d),
                bootstrap_ci=bootstrap_interval(d, seed=seed),
            )
        )
    return Comparison(a, b, tuple(diffs))


def summarize(
    judged: Sequence[Judged],
    models: Sequence[str],
    problems: Sequence[str],
    k: int,
    references: Mapping[str, Mapping[str, Reference]],
) -> Summary:
    """Every figure of the report. The first model is the baseline the others are
    compared with (b - a, problem by problem)."""
    per_problem: dict[str, dict[str, ProblemStats]] = {}
    for m in models:
        per_problem[m] = {
            p: problem_stats(
                p,
                [s for s in judged if s.model == m and s.problem_id == p],
                k,
                references.get(p, {}),
            )
            for p in problems
        }
    return Summary(
        k=k,
        models=tuple(models),
        problems=tuple(problems),
        per_problem=per_problem,
        overall={m: overall(per_problem[m].values()) for m in models},
        comparisons=tuple(compare(models[0], m, per_problem) for m in models[1:]),
        references={p: dict(r) for p, r in references.items()},
    )
