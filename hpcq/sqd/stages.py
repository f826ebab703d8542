"""SQD stages and schedules, loaded from a TOML file (kernels/sqd/default.toml by default).

A stage is a named set of constraints over the techniques of `hpcq.eval.techniques.CATALOGUE`
(forbidden and required; everything else is allowed) plus the prompt text that states
them. A schedule is the ordered list of stages a problem goes through. Two kinds:

- fixed: the listed stages in order; the last one stays.
- diversity: the listed opening stages, then stages made at run time, each forbidding
  the technique the current best kernel relies on most (chosen by the controller from
  the archive), up to `max_stages`; then a final free stage that stays.

The paper's stage definitions are not public; this is a reconstruction meant to be
edited (docs/sqd.md). Everything is validated at load, so a typo in a technique name
stops `hpcq sqd` at start with the file, the stage and the known names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcq.errors import ConfigError
from hpcq.eval.techniques import CATALOGUE, DESCRIPTIONS, unknown_names
from hpcq.outcome import Constraints
from hpcq.sqd.advance import AdvanceRule
from hpcq.tomlfile import read_toml_and_bytes

DEFAULT_CONFIG_NAME = "default.toml"


@dataclass(frozen=True)
class Stage:
    name: str
    constraints: Constraints = field(default_factory=Constraints)
    prompt: str = ""
    """Free text put before the generated statement of the constraints."""
    advance: AdvanceRule = field(default_factory=AdvanceRule)

    def prompt_text(self) -> str:
        """What the producer adds to the problem's prompt during this stage."""
        parts = [self.prompt.strip()] if self.prompt.strip() else []
        parts.append(constraint_text(self.constraints))
        return "\n".join(parts)


def constraint_text(c: Constraints) -> str:
    """The constraints in words, naming each technique as the detector understands it."""

    def listed(names: frozenset[str]) -> str:
        return "\n".join(f"- {n}: {DESCRIPTIONS.get(n, n)}" for n in _ordered(names))

    lines = []
    if c.forbidden:
        lines.append(
            "Do not use these optimization techniques (a kernel that uses one is rejected):\n"
            + listed(c.forbidden)
        )
    if c.required:
        lines.append("Your kernel must use all of these techniques:\n" + listed(c.required))
    if not lines:
        lines.append("Every optimization technique is allowed.")
    return "\n".join(lines)


def _ordered(names: frozenset[str]) -> list[str]:
    """Catalogue order first (a stable, readable order), then anything else sorted."""
    return [n for n in CATALOGUE if n in names] + sorted(names - set(CATALOGUE))


@dataclass(frozen=True)
class Schedule:
    name: str
    stages: tuple[Stage, ...]
    """Fixed: all stages. Diversity: the opening stages."""
    diversity: bool = False
    advance: AdvanceRule = field(default_factory=AdvanceRule)
    """The rule of stages made at run time (each listed stage has its own)."""
    max_stages: int = 0
    """Diversity: stages in all, opening and final free stage included."""
    keep_forbidden: bool = False
    """Diversity: a new stage also forbids what earlier stages forbade."""
    tie_order: tuple[str, ...] = CATALOGUE
    """Diversity: which technique is forbidden first when the archive cannot tell."""
    diversity_prompt: str = ""
    """Diversity: prompt of a made stage; {technique} and {description} are filled in."""
    final_prompt: str = ""
    description: str = ""

    def listed(self, index: int) -> Stage | None:
        return self.stages[index] if index < len(self.stages) else None

    def made_stage(self, index: int, forbidden: frozenset[str], technique: str) -> Stage:
        """Stage `index` of a diversity schedule, forbidding `forbidden` (which holds
        `technique`, the one the best kernel relied on most)."""
        prompt = self.diversity_prompt.format(
            technique=technique, description=DESCRIPTIONS.get(technique, technique)
        )
        return Stage(
            name=f"{index}-no-{technique}",
            constraints=Constraints(forbidden=forbidden),
            prompt=prompt,
            advance=self.advance,
        )

    def final_stage(self, index: int) -> Stage:
        # No rule can fire: the last stage of a diversity schedule stays.
        return Stage(name=f"{index}-free", prompt=self.final_prompt, advance=AdvanceRule())


@dataclass(frozen=True)
class ProblemPlan:
    schedule: str
    reference_gflops: float | None = None
    """The figure `target_fraction` is a fraction of (the node's library DGEMM, say)."""


@dataclass(frozen=True)
class SqdConfig:
    schedules: Mapping[str, Schedule]
    default_schedule: str
    problems: Mapping[str, ProblemPlan] = field(default_factory=dict)
    default_reference_gflops: float | None = None
    source: str = ""
    """Where it was loaded from (messages only)."""
    fingerprint: str = ""
    """sha256 of the file's bytes: a controller refuses a state made under another config."""

    def plan(self, problem_id: str) -> ProblemPlan:
        return self.problems.get(
            problem_id, ProblemPlan(self.default_schedule, self.default_reference_gflops)
        )

    def schedule_for(self, problem_id: str) -> Schedule:
        return self.schedules[self.plan(problem_id).schedule]

    def first_stage(self, problem_id: str) -> Stage:
        return self.schedule_for(problem_id).stages[0]


# --------------------------------------------------------------------------- loading


def default_config_path(kernels_dir: Path) -> Path:
    return kernels_dir / "sqd" / DEFAULT_CONFIG_NAME


def load_config(path: Path) -> SqdConfig:
    """Read and validate a schedule file; every error names the file and the fix."""
    data, raw = read_toml_and_bytes(path, "SQD config", hint="see kernels/sqd/")
    config = parse_config(data, str(path))
    return SqdConfig(
        schedules=config.schedules,
        default_schedule=config.default_schedule,
        problems=config.problems,
        default_reference_gflops=config.default_reference_gflops,
        source=str(path),
        fingerprint=hashlib.sha256(raw).hexdigest(),
    )


_TOP_KEYS = {"default_schedule", "default_reference_gflops", "schedules", "problems"}
_SCHEDULE_KEYS = {
    "description", "diversity", "advance", "stages", "max_stages", "keep_forbidden",
    "tie_order", "diversity_prompt", "final_prompt",
}  # fmt: skip
_STAGE_KEYS = {"name", "prompt", "forbidden", "required", "allowed", "advance"}
_PROBLEM_KEYS = {"schedule", "reference_gflops"}


def parse_config(data: Mapping[str, Any], where: str) -> SqdConfig:
    _known(data, _TOP_KEYS, where)
    tables = _table(data.get("schedules"), f"{where}: [schedules]")
    if not tables:
        raise ConfigError(f"{where}: define at least one [schedules.NAME]")
    schedules = {
        name: _schedule(
            name, _table(t, f"{where}: [schedules.{name}]"), f"{where}: schedule {name!r}"
        )
        for name, t in tables.items()
    }
    default = data.get("default_schedule", next(iter(schedules)))
    if default not in schedules:
        raise ConfigError(
            f"{where}: default_schedule = {default!r} is not defined; "
            f"defined: {', '.join(schedules)}"
        )
    problems: dict[str, ProblemPlan] = {}
    for pid, t in _table(data.get("problems", {}), f"{where}: [problems]").items():
        table = _table(t, f"{where}: [problems.{pid}]")
        _known(table, _PROBLEM_KEYS, f"{where}: [problems.{pid}]")
        schedule = table.get("schedule", default)
        if schedule not in schedules:
            raise ConfigError(
                f"{where}: problem {pid!r} uses schedule {schedule!r}, which is not defined; "
                f"defined: {', '.join(schedules)}"
            )
        ref = _positive(table.get("reference_gflops"), f"{where}: {pid}.reference_gflops")
        problems[pid] = ProblemPlan(schedule, ref)
    return SqdConfig(
        schedules=schedules,
        default_schedule=default,
        problems=problems,
        default_reference_gflops=_positive(
            data.get("default_reference_gflops"), f"{where}: default_reference_gflops"
        ),
        source=where,
    )


def _schedule(name: str, t: Mapping[str, Any], where: str) -> Schedule:
    _known(t, _SCHEDULE_KEYS, where)
    diversity = _bool(t.get("diversity", False), f"{where}.diversity")
    rule = AdvanceRule().merged(_table(t.get("advance", {}), f"{where}.advance"), where)
    entries = t.get("stages")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: needs at least one [[schedules.{name}.stages]]")
    stages = tuple(_stage(e, rule, f"{where} stage {i}") for i, e in enumerate(entries))
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: stage names repeat: {', '.join(names)}")
    last_to_leave = stages if diversity else stages[:-1]
    for s in last_to_leave:
        if not s.advance.can_fire:
            raise ConfigError(
                f"{where} stage {s.name!r}: no advancement rule, so it would never end; "
                "set max_steps (or a target or plateau) in its advance table or the schedule's"
            )
    tie_order = tuple(_names(t.get("tie_order", list(CATALOGUE)), f"{where}.tie_order"))
    max_stages = t.get("max_stages", len(stages) + len(CATALOGUE) + 1)
    if diversity and (not isinstance(max_stages, int) or max_stages <= len(stages)):
        raise ConfigError(
            f"{where}: max_stages = {max_stages!r} must be an integer > the {len(stages)} "
            "opening stage(s)"
        )
    diversity_prompt = _text(t.get("diversity_prompt", ""), f"{where}.diversity_prompt")
    try:
        diversity_prompt.format(technique="simd", description="d")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"{where}.diversity_prompt: only {{technique}} and {{description}} may be filled "
            f"in (write {{{{ and }}}} for literal braces): {exc!r}"
        ) from None
    if diversity and not rule.can_fire:
        raise ConfigError(f"{where}: a diversity schedule needs an [advance] rule for made stages")
    return Schedule(
        name=name,
        stages=stages,
        diversity=diversity,
        advance=rule,
        max_stages=max_stages if diversity else len(stages),
        keep_forbidden=_bool(t.get("keep_forbidden", False), f"{where}.keep_forbidden"),
        tie_order=tie_order + tuple(n for n in CATALOGUE if n not in tie_order),
        diversity_prompt=diversity_prompt,
        final_prompt=_text(t.get("final_prompt", ""), f"{where}.final_prompt"),
        description=_text(t.get("description", ""), f"{where}.description"),
    )


def _stage(entry: Any, rule: AdvanceRule, where: str) -> Stage:
    t = _table(entry, where)
    name = t.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: needs a name")
    where = f"{where} ({name!r})"
    _known(t, _STAGE_KEYS, where)
    forbidden = set(_names(t.get("forbidden", []), f"{where}.forbidden"))
    required = set(_names(t.get("required", []), f"{where}.required"))
    if "allowed" in t:
        if "forbidden" in t:
            raise ConfigError(f"{where}: give `allowed` or `forbidden`, not both")
        allowed = set(_names(t["allowed"], f"{where}.allowed"))
        if not required <= allowed:
            missing = ", ".join(sorted(required - allowed))
            raise ConfigError(f"{where}: required technique(s) {missing} are not allowed")
        forbidden = set(CATALOGUE) - allowed - required
    both = forbidden & required
    if both:
        raise ConfigError(f"{where}: {', '.join(sorted(both))} both forbidden and required")
    advance = rule.merged(_table(t.get("advance", {}), f"{where}.advance"), where)
    return Stage(
        name=name,
        constraints=Constraints(forbidden=frozenset(forbidden), required=frozenset(required)),
        prompt=_text(t.get("prompt", ""), f"{where}.prompt"),
        advance=advance,
    )


# --------------------------------------------------------------------------- checks


def _known(t: Mapping[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(t) - keys)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(keys))}"
        )


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def _names(value: Any, where: str) -> Sequence[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of technique names, got {value!r}")
    bad = unknown_names(value)
    if bad:
        raise ConfigError(
            f"{where}: unknown technique name(s) {', '.join(map(repr, bad))}; "
            f"known: {', '.join(CATALOGUE)}"
        )
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} = {value!r}: expected true or false")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string")
    return value


def _positive(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where} = {value!r}: expected a number > 0")
    return float(value)
