"""Prompts built from a problem and the current stage's constraints.

A prompt is a list of chat messages; the policy backend renders it with its tokenizer's
chat template (the bootstrap model's tokenizer carries a small one). The SQD controller
decides the stages; until it runs, every problem sits in `DEFAULT_STAGE`, which allows
every technique.

The user message is deliberately plain and regular: the small bootstrap model is
trained on exactly these texts, and a large instruction-tuned model reads them as a
task description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from hpcq.eval.problems import Problem
from hpcq.eval.techniques import CATALOGUE, DESCRIPTIONS
from hpcq.outcome import Constraints

SYSTEM = "You are an expert in high-performance computing. You write fast, correct C code."


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class PromptStage:
    """A problem's stage as a prompt states it: the constraints and any hint (with elites,
    when asked for). The SQD schedule's own stage is `hpcq.sqd.stages.Stage`; the SQD
    client turns one into the other."""

    name: str = "default"
    constraints: Constraints = field(default_factory=Constraints)
    hint: str = ""  # optional extra guidance the controller wants in the prompt


DEFAULT_STAGE = PromptStage()


class StageSource(Protocol):
    """The current stage of a problem (the SQD controller's client implements this)."""

    def stage_for(self, problem_id: str) -> PromptStage: ...


@dataclass(frozen=True)
class FixedStages:
    """One stage for every problem: the default until the SQD controller runs."""

    stage: PromptStage = DEFAULT_STAGE

    def stage_for(self, problem_id: str) -> PromptStage:
        return self.stage


def _names(techniques: frozenset[str]) -> str:
    return ", ".join(t for t in CATALOGUE if t in techniques) or "none"


def dims_text(problem: Problem) -> str:
    """ "256 x 256 x 256" for a cube; a non-square shape names each size after the
    signature's leading int parameters ("M = 1000, N = 300, K = 700"), since a bare
    "1000 x 300 x 700" does not say which is which."""
    if len(set(problem.dims)) == 1:
        return " x ".join(str(d) for d in problem.dims)
    names = re.findall(r"\bint\s+(\w+)", problem.signature)[: len(problem.dims)]
    if len(names) != len(problem.dims):
        return " x ".join(str(d) for d in problem.dims)
    return ", ".join(f"{n} = {d}" for n, d in zip(names, problem.dims, strict=True))


def user_text(problem: Problem, stage: PromptStage, cores: int = 1) -> str:
    dims = dims_text(problem)
    c = stage.constraints
    lines = [
        f"Write the C function {problem.entry} for problem {problem.id} ({dims}).",
        f"Signature: {problem.signature}",
        f"Contract: {problem.contract}",
        f"It runs on {cores} core(s); double precision; no libraries (no BLAS).",
        f"Forbidden techniques: {_names(c.forbidden)}.",
        f"Required techniques: {_names(c.required)}.",
    ]
    for t in CATALOGUE:
        if t in c.required:
            lines.append(f"- {t}: {DESCRIPTIONS[t]}")
    if stage.hint:
        lines.append(stage.hint)
    lines.append("Answer with the complete C source in one ```c code block.")
    return "\n".join(lines)


def build_prompt(problem: Problem, stage: PromptStage, cores: int = 1) -> tuple[Message, ...]:
    return (Message("system", SYSTEM), Message("user", user_text(problem, stage, cores)))


def fenced(source: str) -> str:
    """The answer format the bootstrap corpus teaches (and extraction expects)."""
    return "```c\n" + source.rstrip("\n") + "\n```"
