"""When a problem leaves its SQD stage: the advancement rules and the progress they read.

A stage counts the *steps* of the policy that produced results for it (a step counts as
soon as its first result arrives) and the best GFLOPS measured in it. Any rule that fires
ends the stage; rules left out are off:

    target_gflops            best >= this (absolute)
    target_fraction          best >= this x the problem's reference (for example the
                             node's library DGEMM, measured once and written in the config)
    plateau_pct, _steps      the best has not improved by plateau_pct percent during the
                             last plateau_steps steps
    max_steps                the stage has seen this many steps
    min_steps                no rule fires before this many steps (one lucky kernel does
                             not end a stage on its first step)

Everything here is a pure function of the results fed in order, so a replay of the result
stream reaches the same decisions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpcq.errors import ConfigError

RULE_KEYS: tuple[str, ...] = (
    "target_gflops", "target_fraction", "plateau_pct", "plateau_steps", "max_steps", "min_steps",
)  # fmt: skip


@dataclass(frozen=True)
class AdvanceRule:
    target_gflops: float | None = None
    target_fraction: float | None = None
    plateau_pct: float | None = None
    plateau_steps: int | None = None
    max_steps: int | None = None
    min_steps: int = 1

    def __post_init__(self) -> None:
        for name in ("target_gflops", "target_fraction", "plateau_steps", "max_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"advance.{name} = {value}: must be > 0 (or left out)")
        if self.plateau_pct is not None and self.plateau_pct < 0:
            raise ConfigError(f"advance.plateau_pct = {self.plateau_pct}: must be >= 0")
        if (self.plateau_pct is None) != (self.plateau_steps is None):
            raise ConfigError("advance: plateau_pct and plateau_steps go together; set both")
        if self.min_steps < 0:
            raise ConfigError(f"advance.min_steps = {self.min_steps}: must be >= 0")
        if self.max_steps is not None and self.max_steps < self.min_steps:
            raise ConfigError(f"advance: max_steps {self.max_steps} < min_steps {self.min_steps}")

    @property
    def can_fire(self) -> bool:
        """False when no rule is set: a stage under it never ends."""
        return any(
            v is not None
            for v in (self.target_gflops, self.target_fraction, self.plateau_steps, self.max_steps)
        )

    def merged(self, table: Mapping[str, Any], where: str) -> AdvanceRule:
        """This rule with the keys of a config table (`advance = {...}`) replacing its own."""
        unknown = sorted(set(table) - set(RULE_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: unknown advance key(s) {', '.join(unknown)}; "
                f"known: {', '.join(RULE_KEYS)}"
            )
        values: dict[str, Any] = {}
        for key, value in table.items():
            integral = key in ("plateau_steps", "max_steps", "min_steps")
            ok = isinstance(value, int) if integral else isinstance(value, int | float)
            if isinstance(value, bool) or not ok:
                kind = "an integer" if integral else "a number"
                raise ConfigError(f"{where}: advance.{key} = {value!r}: expected {kind}")
            values[key] = value if integral else float(value)
        try:
            return dataclasses.replace(self, **values)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


@dataclass
class StageProgress:
    """What one stage of one problem has seen so far (part of the controller's state)."""

    steps: list[int] = field(default_factory=list)  # distinct policy steps, sorted
    results: int = 0  # results counted for the stage (infra errors excluded)
    ok: int = 0
    best_gflops: float | None = None
    best_task_id: str = ""
    best_techniques: list[str] = field(default_factory=list)  # sorted
    plateau_base: float | None = None  # the best at the last significant improvement
    plateau_mark: int = 0  # len(steps) at that moment

    def observe(
        self,
        step: int,
        gflops: float | None,
        task_id: str,
        techniques: frozenset[str],
        plateau_pct: float,
    ) -> None:
        if step not in self.steps:
            self.steps.append(step)
            self.steps.sort()
        self.results += 1
        if gflops is None:
            return
        self.ok += 1
        if self.best_gflops is None or gflops > self.best_gflops:
            self.best_gflops = gflops
            self.best_task_id = task_id
            self.best_techniques = sorted(techniques)
        if self.plateau_base is None or gflops > self.plateau_base * (1 + plateau_pct / 100):
            self.plateau_base = gflops
            self.plateau_mark = len(self.steps)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageProgress:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def reason_to_advance(
    rule: AdvanceRule, progress: StageProgress, reference_gflops: float | None
) -> str | None:
    """Why the stage ends now, or None. Rules are checked in the order of the module doc."""
    n = len(progress.steps)
    if n < rule.min_steps or n == 0:
        return None
    best = progress.best_gflops
    if best is not None and rule.target_gflops is not None and best >= rule.target_gflops:
        return f"target: best {best:.2f} GFLOPS >= {rule.target_gflops:.2f}"
    if best is not None and rule.target_fraction is not None and reference_gflops:
        target = rule.target_fraction * reference_gflops
        if best >= target:
            return (
                f"target: best {best:.2f} GFLOPS >= {rule.target_fraction:g} x reference "
                f"{reference_gflops:.2f}"
            )
    if rule.plateau_steps is not None and n - progress.plateau_mark >= rule.plateau_steps:
        return (
            f"plateau: no gain of {rule.plateau_pct:g}% in {rule.plateau_steps} steps "
            f"(best {_fmt(best)})"
        )
    if rule.max_steps is not None and n >= rule.max_steps:
        return f"max_steps: {n} steps (best {_fmt(best)})"
    return None


def _fmt(gflops: float | None) -> str:
    return "none" if gflops is None else f"{gflops:.2f} GFLOPS"
