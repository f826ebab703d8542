"""Per-step training metrics, one JSON object per line in `RUN_DIR/metrics.jsonl`.

Appended and flushed after every step, so a crashed run keeps its curve; on resume the
lines after the checkpoint's step are cut (`truncate_after`), so no step is counted twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class StepMetrics:
    step: int
    policy_version: int
    samples: int  # completions generated this step (all rounds)
    groups: int
    groups_dropped: int
    frac_groups_dropped: float
    drop_reasons: dict[str, int]
    reward_mean: float | None  # over every member with a reward
    reward_std: float | None
    gflops_best: float | None  # over `ok` results
    gflops_mean: float | None
    status_fractions: dict[str, float]  # ok, violation, ..., left_out
    kl: float
    clip_low: float
    clip_high: float
    entropy: float
    loss: float
    grad_norm: float
    completion_tokens_mean: float
    truncated_fraction: float
    resample_rounds: int
    time_generate_s: float
    time_rewards_s: float
    time_update_s: float
    eval_busy_s: float  # sum of evaluation time on the CPU nodes for this step's results
    problems: dict[str, float] = field(default_factory=dict)  # problem id -> mean reward
    wall_time: float = 0.0  # unix seconds at the end of the step
    sampler_kl: float = 0.0  # sampler's log-probs vs the trainer's (vLLM drift), per token
    # Asynchronous rollouts (hpcq.train.loop). time_rewards_s is the generating side's idle time:
    # it neither sampled nor trained, waiting for a group's rewards.
    time_step_s: float = 0.0  # wall time of the step
    idle_fraction: float = 0.0  # time_rewards_s / time_step_s
    staleness: dict[str, int] = field(default_factory=dict)  # versions behind -> groups taken
    groups_stale: int = 0  # groups older than max_staleness: dropped, never trained on
    in_flight: int = 0  # groups sampled and not yet taken, after the step
    is_clip_frac: float = 0.0  # tokens whose importance weight min(pi_old / mu, C) hit C
    is_weight_mean: float = 1.0  # mean of that weight over the trained tokens

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def append(run_dir: Path, m: StepMetrics) -> None:
    path = run_dir / METRICS_FILE
    with path.open("a") as f:
        f.write(m.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a crash: everything before it is good
    return rows


def truncate_after(run_dir: Path, step: int) -> None:
    """Keep only the steps <= `step` (the last checkpoint's) and drop a torn last line."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return
    rows = [r for r in read(run_dir) if int(r["step"]) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    tmp.replace(path)
