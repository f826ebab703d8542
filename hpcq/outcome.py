"""What an evaluation is asked and what it answers: the engine's contract.

`EvalRequest` carries everything needed to judge one candidate alone; `EvalResult` is
the verdict. Both are frozen; `EvalResult.to_dict()` is the JSON shape of `hpcq eval --json`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Status(StrEnum):
    """The seven outcomes of an evaluation (DESIGN.md, "Evaluating untrusted code")."""

    OK = "ok"
    VIOLATION = "violation"  # static/format/library/technique violation, forbidden syscall
    COMPILE_ERROR = "compile_error"
    TIMEOUT = "timeout"
    RUNTIME_ERROR = "runtime_error"
    WRONG_RESULT = "wrong_result"
    INFRA_ERROR = "infra_error"  # the node failed, not the kernel: never rewarded or penalised


@dataclass(frozen=True)
class Constraints:
    """Stage constraints over optimization techniques (names from hpcq.eval.techniques.CATALOGUE).

    `forbidden` techniques make a kernel a `violation`; `required` ones must be present or
    the kernel is a `violation` too. Techniques in neither set are allowed.
    """

    forbidden: frozenset[str] = frozenset()
    required: frozenset[str] = frozenset()

    def key(self) -> str:
        """Canonical text, part of the result-cache key."""
        return (
            "forbid="
            + ",".join(sorted(self.forbidden))
            + ";require="
            + ",".join(sorted(self.required))
        )


@dataclass(frozen=True)
class EvalRequest:
    problem_id: str  # e.g. "dgemm-256"
    source: str  # the candidate C translation unit
    constraints: Constraints = field(default_factory=Constraints)
    cores: tuple[int, ...] = (0,)  # the slot's cores; the candidate is pinned to them
    judge_cores: tuple[int, ...] = ()  # cores the trusted judge may run on, off the slot's
    # cores; () lets the engine choose (the allowed cores outside the slot)


@dataclass(frozen=True)
class EvalResult:
    """The verdict on one candidate.

    `reward` is the evaluating node's own figure, from its TOML `[reward]`: what
    `hpcq eval` and `hpcq submit` show. Training never reads it; a run computes its
    reward from the raw measurement (status, gflops, peak_gflops) with its own settings
    (`hpcq.eval.reward.training_reward`).
    """

    status: Status
    reward: float | None  # None only for infra_error
    message: str = ""
    gflops: float | None = None  # median over timed calls; None unless status is ok
    gflops_min: float | None = None
    gflops_max: float | None = None
    cv: float | None = None  # coefficient of variation of the per-call times
    # The slot's FP64 peak (per-core peak x threads) the kernel was measured against;
    # None unless ok. A run shaping its reward as fraction_of_peak divides by it.
    peak_gflops: float | None = None
    techniques: tuple[str, ...] = ()
    compile_s: float = 0.0
    run_s: float = 0.0
    calls: int = 0  # timed calls, each verified
    problem_id: str = ""
    node_class: str = ""
    compiler: str = ""  # the compiler's version line ("gcc (Debian 12.2.0-14) 12.2.0")
    flags: tuple[str, ...] = ()  # the node's cflags the candidate was compiled with
    cached: bool = False
    cache_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = str(self.status)
        d["techniques"] = list(self.techniques)
        return d


class Evaluator(Protocol):
    """Anything that judges a candidate: the real engine, or a fake in unit tests."""

    async def evaluate(self, request: EvalRequest) -> EvalResult: ...
