"""The estimators and aggregation of `hpcq evaluate` against values computed by hand."""

from __future__ import annotations

import math

import pytest

from hpcq.train.evaluate.stats import (
    LEFT_OUT,
    Judged,
    Reference,
    bootstrap_interval,
    fast_p,
    pass_at_k,
    problem_stats,
    summarize,
    t_interval,
    t_quantile_975,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "want"),
    [
        (5, 2, 1, 2 / 5),
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
        (5, 2, 4, 1.0),  # n - c < k: some draw of 4 always holds a correct one
        (5, 0, 3, 0.0),
        (5, 5, 1, 1.0),
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (200, 1, 100, 0.5),
    ],
)
def test_pass_at_k_matches_the_binomial_formula(n: int, c: int, k: int, want: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


@pytest.mark.parametrize(("n", "c", "k"), [(3, 1, 4), (3, 4, 1), (3, 1, 0), (0, 0, 1)])
def test_pass_at_k_refuses_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


def test_fast_p_counts_correct_samples_at_p_times_the_reference() -> None:
    correct = [1.0, 2.0, 4.0]  # 3 correct of n = 5
    assert fast_p(correct, 5, 2.0, 0.5) == pytest.approx(3 / 5)  # >= 1.0
    assert fast_p(correct, 5, 2.0, 0.8) == pytest.approx(2 / 5)  # >= 1.6
    assert fast_p(correct, 5, 2.0, 1.0) == pytest.approx(2 / 5)  # >= 2.0, equality counts
    assert fast_p(correct, 5, 4.5, 1.0) == 0.0
    assert fast_p(correct, 5, None, 1.0) is None  # not measured: never estimated
    assert fast_p([], 0, 2.0, 1.0) is None


def test_t_interval_over_problems() -> None:
    assert t_quantile_975(2) == pytest.approx(4.303)
    assert t_quantile_975(30) == pytest.approx(2.042)
    assert t_quantile_975(60) == pytest.approx(2.000, abs=2e-3)  # Cornish-Fisher branch
    lo, hi = t_interval([1.0, 2.0, 3.0]) or (0.0, 0.0)  # mean 2, sd 1, se 1/sqrt(3)
    half = 4.303 / math.sqrt(3)
    assert (lo, hi) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert t_interval([1.0]) is None


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    values = [0.1, 0.3, 0.2, 0.6, 0.4]
    ci = bootstrap_interval(values, seed=3)
    assert ci == bootstrap_interval(values, seed=3)
    assert ci is not None and ci[0] < 0.32 < ci[1] and ci[0] >= 0.1 and ci[1] <= 0.6
    assert bootstrap_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert bootstrap_interval([1.0]) is None


def _j(
    model: str, problem: str, i: int, status: str, g: float | None = None, **kw: object
) -> Judged:
    return Judged(model, problem, i, status, gflops=g, **kw)  # type: ignore[arg-type]


def test_problem_stats_by_hand() -> None:
    samples = [
        _j("m", "p", 0, "ok", 2.0, peak_gflops=20.0, cv=0.02, techniques=("simd",)),
        _j("m", "p", 1, "ok", 6.0, peak_gflops=20.0, cv=0.04, techniques=("simd", "openmp")),
        _j("m", "p", 2, "wrong_result"),
        _j("m", "p", 3, "compile_error"),
        _j("m", "p", 4, "violation", extracted=False),  # no code block: did not compile
        _j("m", "p", 5, LEFT_OUT),  # the pipeline's failure: not counted
    ]
    refs = {
        "naive": Reference("naive", 2.5, "naive"),
        "library": Reference("library", None, "numpy", note="not measured: no numpy"),
    }
    s = problem_stats("p", samples, 2, refs)
    assert (s.n, s.left_out, s.compiled, s.correct) == (5, 1, 3, 2)
    assert s.compile_share == pytest.approx(3 / 5)
    assert s.pass1 == pytest.approx(2 / 5)
    assert s.passk == pytest.approx(0.7)
    assert (s.gflops_mean, s.gflops_best) == (pytest.approx(4.0), 6.0)
    assert s.peak_fraction_mean == pytest.approx(0.2) and s.peak_fraction_best == 0.3
    assert s.cv_median == pytest.approx(0.03)
    # naive 2.5: p=0.5 -> 1.25 (both), 0.8 -> 2.0 (both), 1.0 -> 2.5 (only 6.0)
    assert s.fast_naive == {0.5: 0.4, 0.8: 0.4, 1.0: 0.2}
    assert s.fast_library == {0.5: None, 0.8: None, 1.0: None}
    assert s.techniques == {"openmp": 1, "simd": 2}
    assert s.statuses[LEFT_OUT] == 1 and s.statuses["ok"] == 2
    assert problem_stats("p", samples, 6, refs).passk is None  # n = 5 < k


def test_summary_compares_models_problem_by_problem() -> None:
    judged = []
    # model a: 1 of 4 correct on p1, 2 of 4 on p2; model b: 3 of 4 and 4 of 4.
    for model, counts in (("a", (1, 2)), ("b", (3, 4))):
        for problem, c in zip(("p1", "p2"), counts, strict=True):
            for i in range(4):
                status = "ok" if i < c else "wrong_result"
                judged.append(_j(model, problem, i, status, 1.0 if i < c else None))
    s = summarize(judged, ["a", "b"], ["p1", "p2"], 2, {})
    assert s.overall["a"].values["pass@1"] == pytest.approx((0.25 + 0.5) / 2)
    assert s.overall["b"].values["pass@1"] == pytest.approx((0.75 + 1.0) / 2)
    (cmp,) = s.comparisons
    d = {x.metric: x for x in cmp.differences}["pass@1"]
    assert (cmp.a, cmp.b) == ("a", "b")
    assert d.diffs == (0.5, 0.5) and d.mean == pytest.approx(0.5)
    assert d.t_ci == (pytest.approx(0.5), pytest.approx(0.5))  # no spread over problems
    # pass@2 of a on p1: 1 - C(3,2)/C(4,2) = 0.5; on p2: 1 - C(2,2)/C(4,2) = 5/6
    assert s.per_problem["a"]["p1"].passk == pytest.approx(0.5)
    assert s.per_problem["a"]["p2"].passk == pytest.approx(5 / 6)
    fast = {x.metric: x for x in cmp.differences}["fast_1_naive"]
    assert fast.mean is None and s.overall["a"].problems["fast_1_naive"] == 0
