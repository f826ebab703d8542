"""The quality-diversity archive, in the MAP-Elites sense.

One cell per (problem, set of techniques the kernel uses, as detected by the engine).
A cell keeps its elite, the fastest correct kernel seen with exactly that set (source,
GFLOPS, step, policy version), and counts. Only `ok` results enter: a kernel without a
trusted measurement has no place on the map.

Coverage is filled cells over the 2^n possible technique sets of each problem; the
QD-score is the sum of the elites' GFLOPS. Ties keep the earlier elite, so feeding the
same results in the same order always gives the same archive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hpcq.eval.techniques import CATALOGUE
from hpcq.outcome import Constraints


def cell_name(techniques: Iterable[str]) -> str:
    """`simd+cache_blocking` in catalogue order; `scalar` for the empty set."""
    names = set(techniques)
    ordered = [n for n in CATALOGUE if n in names] + sorted(names - set(CATALOGUE))
    return "+".join(ordered) or "scalar"


@dataclass(frozen=True)
class Elite:
    task_id: str
    problem_id: str
    techniques: frozenset[str]
    gflops: float
    source: str
    step: int
    policy_version: int
    stage: str  # the stage the problem was in when the result arrived

    @property
    def cell(self) -> str:
        return cell_name(self.techniques)

    def satisfies(self, c: Constraints) -> bool:
        return not (self.techniques & c.forbidden) and c.required <= self.techniques

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "problem_id": self.problem_id,
            "techniques": sorted(self.techniques),
            "gflops": self.gflops,
            "source": self.source,
            "step": self.step,
            "policy_version": self.policy_version,
            "stage": self.stage,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Elite:
        return cls(
            task_id=d["task_id"],
            problem_id=d["problem_id"],
            techniques=frozenset(d["techniques"]),
            gflops=float(d["gflops"]),
            source=d["source"],
            step=int(d["step"]),
            policy_version=int(d["policy_version"]),
            stage=d["stage"],
        )


@dataclass
class Cell:
    elite: Elite
    count: int = 1  # correct kernels that landed here
    replaced: int = 0  # times a faster kernel took the elite's place


CellKey = tuple[str, frozenset[str]]


@dataclass
class Archive:
    cells: dict[CellKey, Cell] = field(default_factory=dict)

    def add(self, candidate: Elite) -> bool:
        """Count a correct kernel; True when it became its cell's elite."""
        key = (candidate.problem_id, candidate.techniques)
        cell = self.cells.get(key)
        if cell is None:
            self.cells[key] = Cell(candidate)
            return True
        cell.count += 1
        if candidate.gflops > cell.elite.gflops:
            cell.elite = candidate
            cell.replaced += 1
            return True
        return False

    # --- reports ---------------------------------------------------------------------

    def problems(self) -> list[str]:
        return sorted({p for p, _ in self.cells})

    def elites(self, problem_id: str | None = None) -> list[Elite]:
        """Fastest first; equal GFLOPS in cell-name order (deterministic)."""
        found = [c.elite for (p, _), c in self.cells.items() if problem_id in (None, p)]
        return sorted(found, key=lambda e: (-e.gflops, e.problem_id, e.cell))

    def coverage(self, problem_id: str | None = None) -> tuple[int, int]:
        """(filled cells, possible cells) for one problem or over all problems seen."""
        problems = [problem_id] if problem_id else self.problems()
        filled = sum(1 for p, _ in self.cells if p in problems)
        return filled, len(problems) * 2 ** len(CATALOGUE)

    def qd_score(self, problem_id: str | None = None) -> float:
        return sum(e.gflops for e in self.elites(problem_id))

    def for_prompt(self, problem_id: str, constraints: Constraints, k: int) -> list[Elite]:
        """Up to k elites a stage's prompt may show: each satisfies the stage's
        constraints (an example using a forbidden technique would teach a violation)."""
        return [e for e in self.elites(problem_id) if e.satisfies(constraints)][:k]

    # --- diversity --------------------------------------------------------------------

    def reliance(
        self, problem_id: str, techniques: frozenset[str], gflops: float
    ) -> dict[str, float]:
        """How much a kernel (its techniques and GFLOPS) relies on each of its techniques:
        its GFLOPS minus the best elite of the problem whose techniques are a subset of
        its own without that one (an ablation read off the map; 0 GFLOPS when no such cell
        is filled)."""
        out: dict[str, float] = {}
        for t in sorted(techniques):
            rest = techniques - {t}
            without = [
                c.elite.gflops
                for (p, techs), c in self.cells.items()
                if p == problem_id and techs <= rest
            ]
            out[t] = gflops - max(without, default=0.0)
        return out

    def most_relied_on(
        self,
        problem_id: str,
        techniques: frozenset[str],
        gflops: float,
        tie_order: tuple[str, ...],
    ) -> str | None:
        """The technique whose removal costs the kernel the most; ties go to the one
        first in `tie_order`. None for a kernel that uses no technique."""
        loss = self.reliance(problem_id, techniques, gflops)
        if not loss:
            return None
        rank = {t: i for i, t in enumerate(tie_order)}
        return min(loss, key=lambda t: (-loss[t], rank.get(t, len(rank)), t))

    # --- persistence --------------------------------------------------------------------

    def to_json(self) -> list[dict[str, Any]]:
        ordered = sorted(self.cells.items(), key=lambda kv: (kv[0][0], cell_name(kv[0][1])))
        return [
            {"elite": c.elite.to_json(), "count": c.count, "replaced": c.replaced}
            for _, c in ordered
        ]

    @classmethod
    def from_json(cls, rows: Iterable[Mapping[str, Any]]) -> Archive:
        archive = cls()
        for row in rows:
            elite = Elite.from_json(row["elite"])
            archive.cells[(elite.problem_id, elite.techniques)] = Cell(
                elite, count=int(row["count"]), replaced=int(row["replaced"])
            )
        return archive
