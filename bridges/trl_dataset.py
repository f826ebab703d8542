"""Prompts for TRL's GRPOTrainer that follow each problem's current SQD stage.

A row holds only a problem id; its prompt is built when the trainer fetches the row,
from the stage its `StageSource` (`hpcq.sqd.client.StageClient` under `hpcq sqd`,
`hpcq.train.prompts.FixedStages` otherwise) gives now, with `hpcq.train.prompts.build_prompt`, the
same text `hpcq producer` sends. A row carries the constraints it was asked under
(`stage`, `forbidden`, `required` columns), which TRL hands to the reward function with
the completions, so a member is judged under what it was asked even if the stage
moved while it was being generated.

One call of the transform builds a whole fetched batch, the stage of each problem read
once: TRL's sampler puts the G copies of a prompt in one process's batch, so a group
never mixes stages. Accelerate fetches one batch ahead, so a prompt can be one step
behind a stage change, as in the producer's loop, where the stage is read when a step
starts. Rows are built in the trainer's process (`dataloader_num_workers` = 0, TRL's
default): a worker process would hold a copy of the stage client that never updates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from datasets import Dataset  # type: ignore[import-untyped]

from hpcq.errors import ConfigError
from hpcq.eval.problems import Problem
from hpcq.eval.techniques import CATALOGUE
from hpcq.train.prompts import PromptStage, StageSource, build_prompt


def _ordered(techniques: frozenset[str]) -> list[str]:
    return [t for t in CATALOGUE if t in techniques] + sorted(techniques - set(CATALOGUE))


def staged_prompts(
    problems: Sequence[Problem], stages: StageSource, rows: int, cores: int = 1
) -> Dataset:
    """`rows` rows cycling over `problems` (TRL's sampler draws whole batches of distinct
    rows: give at least the prompts of one generation batch). `cores`: what the prompt
    tells the model about the slot (`[loop] cores_per_task`)."""
    if not problems or rows < 1:
        raise ConfigError("staged_prompts needs at least one problem and one row")
    by_id = {p.id: p for p in problems}

    def transform(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        now: dict[str, PromptStage] = {}
        for pid in batch["problem_id"]:
            if pid not in now:
                now[pid] = stages.stage_for(pid)
        columns: dict[str, list[Any]] = {
            k: [] for k in ("prompt", "problem_id", "stage", "forbidden", "required")
        }
        for pid in batch["problem_id"]:
            stage = now[pid]
            messages = build_prompt(by_id[pid], stage, cores)
            columns["prompt"].append([dataclasses.asdict(m) for m in messages])
            columns["problem_id"].append(pid)
            columns["stage"].append(stage.name)
            columns["forbidden"].append(_ordered(stage.constraints.forbidden))
            columns["required"].append(_ordered(stage.constraints.required))
        return columns

    ids = [problems[i % len(problems)].id for i in range(rows)]
    return Dataset.from_dict({"problem_id": ids}).with_transform(transform)
