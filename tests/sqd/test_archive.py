"""The MAP-Elites archive, and the controller's determinism and snapshots (no broker)."""

from __future__ import annotations

import json

from hpcq.outcome import Constraints
from hpcq.sqd.archive import Archive, Elite, cell_name
from hpcq.sqd.controller import Controller, Limits

from .helpers import fast_default, random_stream


def elite(
    gflops: float, techniques: tuple[str, ...] = (), task: str = "t", problem: str = "p"
) -> Elite:
    return Elite(task, problem, frozenset(techniques), gflops, "src", 0, 0, "s")


def test_cells_elites_counts_coverage_and_qd_score() -> None:
    a = Archive()
    assert a.add(elite(5.0, (), "a"))
    assert a.add(elite(7.0, ("simd",), "b"))
    assert not a.add(elite(6.0, ("simd",), "c"))  # slower: counted, not the elite
    assert not a.add(elite(7.0, ("simd",), "d"))  # a tie keeps the earlier elite
    assert a.add(elite(9.0, ("simd",), "e"))
    cell = a.cells[("p", frozenset({"simd"}))]
    assert (cell.elite.task_id, cell.count, cell.replaced) == ("e", 4, 1)
    assert a.coverage("p") == (2, 64)
    assert a.qd_score() == 14.0
    assert [e.task_id for e in a.elites()] == ["e", "a"]
    assert cell_name(frozenset({"simd", "openmp"})) == "openmp+simd"
    assert cell_name(()) == "scalar"


def test_prompt_elites_obey_the_stage() -> None:
    a = Archive()
    for g, techs in ((9.0, ("openmp",)), (8.0, ("simd",)), (7.0, ("simd", "packing")), (1.0, ())):
        a.add(elite(g, techs, f"k{g}"))
    no_omp = Constraints(forbidden=frozenset({"openmp"}))
    assert [e.gflops for e in a.for_prompt("p", no_omp, 2)] == [8.0, 7.0]
    need_packing = Constraints(required=frozenset({"packing"}))
    assert [e.gflops for e in a.for_prompt("p", need_packing, 5)] == [7.0]


def _default() -> Controller:
    return Controller(fast_default())


def test_same_records_same_state() -> None:
    records = random_stream(seed=7)
    a, b = _default(), _default()
    for r in records:
        a.feed(r)
    for r in records:
        b.feed(r)
    assert a.to_json() == b.to_json()
    assert a.duplicates > 0 and a.infra_errors > 0
    for problem in ("dgemm-256", "dgemm-512"):  # the stream did move stages
        assert len(a.problems[problem].timeline) > 2


def test_restarts_from_snapshots_reach_the_same_state() -> None:
    """A kill between snapshots: restore the last snapshot, re-read what followed."""
    records = random_stream(seed=11)
    straight = _default()
    for r in records:
        straight.feed(r)
    cfg = straight.config
    kills = {101, 250, 251, len(records) - 1}
    c, snapshot, at = _default(), json.dumps(_default().to_json()), 0
    i = 0
    while i < len(records):
        c.feed(records[i])
        i += 1
        if i % 37 == 0:
            snapshot, at = json.dumps(c.to_json()), i
        if i in kills:  # killed: back to the snapshot and its offset, once per point
            kills.discard(i)
            c, i = Controller.from_json(cfg, json.loads(snapshot)), at
    assert json.dumps(c.to_json()) == json.dumps(straight.to_json())


def test_bounded_memory_is_deterministic_too() -> None:
    records = random_stream(seed=3)
    small = Limits(pending_tasks=5, dedupe_window=50)
    a, b = Controller(_default().config, small), Controller(_default().config, small)
    for r in records:
        a.feed(r)
        b.feed(r)
    assert a.to_json() == b.to_json()
    assert len(a.counted) == 50
