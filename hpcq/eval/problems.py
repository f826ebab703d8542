"""Problem specs: data under kernels/problems/*.toml, one file per problem family.

A problem id (for example `dgemm-256`, or `dgemm-1000x300x700` for M x N x K) names a
family and a shape. The family file says which C sources make its trusted judge and
runner, its entry point and contract (used by prompts), the shapes checked in full, and
per-size timeouts, measurement overrides and whether the problem is held out of training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from hpcq.errors import ConfigError, UnknownProblemError
from hpcq.tomlfile import read_toml

_MEASURE_KEYS = {"warmup_calls", "warmup_min_s", "min_calls", "min_time_s", "max_calls"}


def default_kernels_dir() -> Path:
    """kernels/ ships inside the wheel as hpcq/_kernels; a source checkout has it beside hpcq/."""
    here = Path(__file__).resolve().parents[1]  # the hpcq package
    for candidate in (here / "_kernels", here.parent / "kernels"):
        if (candidate / "problems").is_dir():
            return candidate
    raise ConfigError(
        f"kernels directory not found next to {here}: reinstall hpcq or set HPCQ_KERNELS_DIR"
    )


@dataclass(frozen=True)
class Problem:
    id: str
    family: str
    entry: str
    signature: str
    contract: str
    dims: tuple[int, ...]
    flops_formula: str
    judge_sources: tuple[Path, ...]
    call_sources: tuple[Path, ...]
    check_shapes: tuple[tuple[int, ...], ...]
    full_check_max_work: int
    call_timeout_s: float
    run_timeout_s: float
    measure: dict[str, float] = field(default_factory=dict)  # overrides of MeasureSettings
    # Kept out of training data (the bootstrap corpus) so evaluating on it measures
    # generalisation: the held-out suite lists only such problems (hpcq.train.evaluate.suites).
    held_out: bool = False

    @property
    def sources(self) -> tuple[Path, ...]:
        return self.judge_sources + self.call_sources


def _ints(value: Any, where: str) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and v > 0 for v in value)
    ):
        raise ConfigError(f"{where}: expected a list of positive integers, got {value!r}")
    return tuple(value)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _family(path: Path) -> list[Problem]:
    data = read_toml(path, "problem family")
    root = path.parent.parent
    try:
        family = str(data["family"])
        check_shapes = tuple(
            _ints(s, f"{path}: check_shapes") for s in data.get("check_shapes", [])
        )
        problems = []
        for pid, spec in data["ids"].items():
            measure = dict(spec.get("measure", {}))
            unknown = set(measure) - _MEASURE_KEYS
            if unknown:
                raise ConfigError(f"{path}: [ids.{pid}.measure] unknown keys {sorted(unknown)}")
            problems.append(
                Problem(
                    id=pid,
                    family=family,
                    entry=str(data["entry"]),
                    signature=str(data["signature"]),
                    contract=str(data["contract"]),
                    dims=_ints(spec["dims"], f"{path}: ids.{pid}.dims"),
                    flops_formula=str(data["flops"]),
                    judge_sources=tuple(root / s for s in data["judge_sources"]),
                    call_sources=tuple(root / s for s in data["call_sources"]),
                    check_shapes=check_shapes,
                    full_check_max_work=int(data.get("full_check_max_work", 0)),
                    call_timeout_s=float(spec["call_timeout_s"]),
                    run_timeout_s=float(spec["run_timeout_s"]),
                    measure=measure,
                    held_out=_flag(spec.get("held_out", False), f"{path}: ids.{pid}.held_out"),
                )
            )
    except KeyError as exc:
        raise ConfigError(f"{path}: missing key {exc}") from exc
    for p in problems:
        missing = [str(s) for s in p.sources if not s.is_file()]
        if missing:
            raise ConfigError(f"{path}: problem {p.id} names missing sources {missing}")
    return problems


@cache
def catalogue(kernels_dir: Path) -> dict[str, Problem]:
    problems: dict[str, Problem] = {}
    for path in sorted((kernels_dir / "problems").glob("*.toml")):
        for p in _family(path):
            if p.id in problems:
                raise ConfigError(f"{path}: problem id {p.id} is defined twice")
            problems[p.id] = p
    return problems


def load_problem(problem_id: str, kernels_dir: Path | None = None) -> Problem:
    problems = catalogue(kernels_dir or default_kernels_dir())
    try:
        return problems[problem_id]
    except KeyError:
        known = ", ".join(sorted(problems)) or "(none)"
        raise UnknownProblemError(
            f"unknown problem id {problem_id!r}; known problems: {known}"
        ) from None
