"""Split the cores this process may use into benchmark slots.

A slot is a disjoint set of cores that one evaluation at a time owns, so concurrent
benchmarks do not perturb each other. The first `reserve_cores` allowed cores are kept
for compiling and for the consumer process itself (event loop, heartbeats), away from
the timed runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hpcq.errors import ConfigError


@dataclass(frozen=True)
class Slot:
    index: int
    cores: tuple[int, ...]

    def label(self) -> str:
        return f"slot{self.index}[{','.join(map(str, self.cores))}]"


@dataclass(frozen=True)
class SlotPlan:
    slots: tuple[Slot, ...]
    reserved: tuple[int, ...]  # cores for compiling and the consumer process


def allowed_cores() -> tuple[int, ...]:
    """The cores this process may run on (Slurm's or taskset's cpuset included)."""
    return tuple(sorted(os.sched_getaffinity(0)))


def plan_slots(
    allowed: tuple[int, ...],
    *,
    slots: int | None = None,
    cores_per_slot: int = 1,
    reserve_cores: int | None = None,
    share_cores: bool = False,
) -> SlotPlan:
    """Disjoint slots of `cores_per_slot` cores each, after the reserved cores.

    `slots=None` takes as many as fit. `reserve_cores=None` keeps one core when at least
    one slot still fits beside it. `share_cores` lets slots overlap: only for stand-in
    evaluators that do not time anything (benchmarks of the pipeline itself).
    """
    if not allowed:
        raise ConfigError("no allowed cores (empty CPU affinity)")
    if cores_per_slot < 1:
        raise ConfigError("--cores-per-slot must be >= 1")
    if reserve_cores is None:
        reserve_cores = 1 if len(allowed) > cores_per_slot else 0
    if not 0 <= reserve_cores < len(allowed):
        raise ConfigError(
            f"--reserve-cores {reserve_cores}: must leave at least one of the "
            f"{len(allowed)} allowed cores for slots"
        )
    reserved, rest = allowed[:reserve_cores], allowed[reserve_cores:]
    if share_cores:
        count = slots or 1
        width = range(cores_per_slot)
        plan = tuple(
            Slot(i, tuple(rest[(i * cores_per_slot + j) % len(rest)] for j in width))
            for i in range(count)
        )
        return SlotPlan(slots=plan, reserved=reserved)
    fit = len(rest) // cores_per_slot
    if fit == 0 or (slots is not None and slots > fit):
        raise ConfigError(
            f"{slots or 1} slot(s) of {cores_per_slot} core(s) do not fit in the "
            f"{len(rest)} core(s) left after reserving {reserve_cores} of {list(allowed)}: "
            "lower --slots, --cores-per-slot or --reserve-cores"
        )
    count = fit if slots is None else slots
    if count < 1:
        raise ConfigError("--slots must be >= 1")
    plan = tuple(Slot(i, rest[i * cores_per_slot : (i + 1) * cores_per_slot]) for i in range(count))
    return SlotPlan(slots=plan, reserved=reserved)
