"""Stage advancement under each rule, with scripted results fed in order."""

from __future__ import annotations

from hpcq.outcome import Constraints, Status
from hpcq.sqd.controller import Controller

from .helpers import FIRST, Script, config, run, two_stages


def test_target_absolute() -> None:
    c, s = Controller(two_stages(target_gflops=50.0)), Script()
    assert run(c, s.kernel(0, 10.0), s.kernel(1, 49.9)) == ["first"]  # the start only
    assert run(c, s.kernel(2, 50.0)) == ["second"]
    assert c.problems["p"].timeline[0].ended_by.startswith("target: best 50.00")


def test_target_fraction_of_reference() -> None:
    c, s = Controller(two_stages(target_fraction=0.5, max_steps=100)), Script()
    assert run(c, s.kernel(0, 49.0, problem="p-ref")) == ["first"]
    assert run(c, s.kernel(1, 50.0, problem="p-ref")) == ["second"]
    assert "0.5 x reference 100.00" in c.problems["p-ref"].timeline[0].ended_by
    # Without a reference the fraction rule is off; nothing else fires here.
    assert run(c, s.kernel(0, 1000.0, problem="p")) == ["first"]


def test_plateau() -> None:
    c, s = Controller(two_stages(plateau_pct=10.0, plateau_steps=3)), Script()
    run(c, s.kernel(0, 10.0))  # base 10 at step count 1
    assert run(c, s.kernel(1, 10.5), s.kernel(2, 10.9)) == []  # under +10%: no gain
    assert run(c, s.kernel(3, 10.0)) == ["second"]  # 3 steps without a gain
    assert c.problems["p"].timeline[0].ended_by.startswith("plateau: no gain of 10% in 3 steps")


def test_plateau_restarts_on_a_real_gain() -> None:
    c, s = Controller(two_stages(plateau_pct=10.0, plateau_steps=3)), Script()
    run(c, s.kernel(0, 10.0), s.kernel(1, 11.5))  # +15%: new base at step count 2
    assert run(c, s.kernel(2, 11.6), s.kernel(3, 11.6)) == []
    assert run(c, s.kernel(4, 11.6)) == ["second"]


def test_failed_kernels_count_as_steps_without_gain() -> None:
    c, s = Controller(two_stages(plateau_pct=1.0, plateau_steps=2)), Script()
    assert run(c, s.kernel(0, None), s.kernel(1, None)) == ["first", "second"]


def test_max_steps_counts_distinct_steps() -> None:
    c, s = Controller(two_stages(max_steps=3)), Script()
    assert run(c, *(s.kernel(step, 5.0) for step in (0, 0, 0, 1, 1))) == ["first"]
    assert run(c, s.kernel(2, 5.0)) == ["second"]
    assert c.problems["p"].timeline[0].ended_by == "max_steps: 3 steps (best 5.00 GFLOPS)"


def test_min_steps_holds_a_reached_target() -> None:
    c, s = Controller(two_stages(target_gflops=5.0, min_steps=2)), Script()
    assert run(c, s.kernel(0, 9.0)) == ["first"]
    assert run(c, s.kernel(1, 1.0)) == ["second"]


def test_results_of_another_stage_fill_the_archive_only() -> None:
    c, s = Controller(two_stages(max_steps=2)), Script()
    run(c, s.kernel(0, 5.0))
    other = Constraints()  # generated before the stage began, or by another producer
    assert run(c, s.kernel(1, 9.0, ("openmp",), constraints=other)) == []
    state = c.problems["p"]
    assert state.off_stage == 1 and state.current.stage.name == "first"
    assert c.archive.cells[("p", frozenset({"openmp"}))].elite.gflops == 9.0


def test_duplicates_and_infra_errors_are_not_counted() -> None:
    c, s = Controller(two_stages(max_steps=2)), Script()
    task, result = s.kernel(0, 5.0)
    run(c, (task, result))
    assert c.feed(result) == [] and c.duplicates == 1
    assert c.archive.cells[("p", frozenset())].count == 1
    # An infra error does not count; the retry's result does.
    task2, result2 = s.kernel(1, 6.0)
    _, infra = s.kernel(1, None, status=Status.INFRA_ERROR, task_id=task2.task_id)
    c.feed(task2)
    assert c.feed(infra) == [] and c.infra_errors == 1
    assert [ch.stage.name for ch in c.feed(result2)] == ["second"]
    assert c.results == 2


def test_the_last_stage_of_a_fixed_schedule_stays() -> None:
    c, s = Controller(two_stages(max_steps=1)), Script()
    assert run(c, s.kernel(0, 1.0)) == ["first", "second"]
    free = Constraints()
    assert run(c, *(s.kernel(step, 2.0, constraints=free) for step in range(1, 10))) == []
    assert c.problems["p"].current.index == 1


DIVERSITY = """
default_schedule = "d"
[schedules.d]
diversity = true
max_stages = {max_stages}
keep_forbidden = {keep}
tie_order = ["simd", "openmp"]
advance = {{ max_steps = 1 }}
diversity_prompt = "Relied on {{technique}}."
[[schedules.d.stages]]
name = "open"
advance = {{ max_steps = 2 }}
"""


def diversity(max_stages: int = 4, keep: bool = False) -> Controller:
    text = DIVERSITY.format(max_stages=max_stages, keep=str(keep).lower())
    return Controller(config(text))


def test_diversity_forbids_what_the_best_relies_on_most() -> None:
    c, s = diversity(), Script()
    free = Constraints()
    # openmp costs the best kernel 100-30 = 70 GFLOPS, simd only 100-80 = 20.
    run(c, s.kernel(0, 30.0, ("simd",), free), s.kernel(0, 80.0, ("openmp",), free))
    assert run(c, s.kernel(1, 100.0, ("openmp", "simd"), free)) == ["1-no-openmp"]
    stage = c.problems["p"].current.stage
    assert stage.constraints == Constraints(forbidden=frozenset({"openmp"}))
    assert stage.prompt == "Relied on openmp."
    # In that stage the best uses simd + cache_blocking; simd matters most (60 vs 30).
    no_omp = stage.constraints
    assert run(c, s.kernel(2, 60.0, ("simd", "cache_blocking"), no_omp)) == ["2-no-simd"]
    assert c.problems["p"].current.stage.constraints.forbidden == {"simd"}
    # max_stages = 4: stage 3 is the final free stage, which stays.
    assert run(c, s.kernel(3, 50.0, ("openmp",), Constraints(frozenset({"simd"})))) == ["3-free"]
    assert run(c, s.kernel(4, 50.0, (), Constraints()), s.kernel(5, 9.0, (), free)) == []


def test_diversity_keep_forbidden_and_ties() -> None:
    c, s = diversity(max_stages=5, keep=True), Script()
    free = Constraints()
    # Nothing else on the map: both techniques cost all 40 GFLOPS; tie_order says simd.
    run(c, s.kernel(0, 1.0, (), free))
    assert run(c, s.kernel(1, 40.0, ("openmp", "simd"), free)) == ["1-no-simd"]
    no_simd = c.problems["p"].current.stage.constraints
    assert run(c, s.kernel(2, 30.0, ("openmp",), no_simd)) == ["2-no-openmp"]
    assert c.problems["p"].current.stage.constraints.forbidden == {"simd", "openmp"}
    # The best of that stage uses no technique: nothing left to forbid, final stage.
    both = c.problems["p"].current.stage.constraints
    assert run(c, s.kernel(3, 3.0, (), both)) == ["3-free"]


def test_first_stage_constraints_come_from_the_schedule() -> None:
    c, s = Controller(two_stages(max_steps=5)), Script()
    run(c, s.kernel(0, 1.0))
    assert c.problems["p"].current.stage.constraints == FIRST
