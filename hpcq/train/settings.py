"""Settings of the GRPO producer: the policy backend and the training loop.

A TOML file (`hpcq producer --config FILE`) may override any field, section by section:

    [policy]     model, backend, lr, beta, clip_low, clip_high, loss_type, lora_r, ...
    [loop]       group_size, prompts_per_step, steps, on_tie, checkpoint_every, ...
    [advantage]  scale, tie_rtol, tie_atol, min_members, eps
    [reward]     violation, compile_error, ..., shaping, baseline_gflops

`[reward]` is the reward the run trains on, defined here once: the producer scores every
result with it from the raw measurement (hpcq.eval.reward.training_reward), whatever the
consumers' own TOMLs say, and the run directory's `config.json` records it.
Command-line flags win over the file. `ops/configs/qwen2.5-coder-14b-h200.toml` is the
paper's setup as far as it can be reconstructed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hpcq.errors import ConfigError
from hpcq.eval.settings import RewardSettings, check_reward_settings, load_section
from hpcq.tomlfile import read_toml
from hpcq.train.advantages import AdvantageSettings

LossType = Literal["grpo", "dr_grpo", "dapo"]
Backend = Literal["hf", "vllm"]
OnTie = Literal["drop", "resample"]


@dataclass(frozen=True)
class PolicySettings:
    model: str = ""
    """Hub id or local directory of a causal LM; "" means the bootstrap model."""
    backend: Backend = "hf"
    dtype: str = "float32"
    """torch dtype name: float32 on CPU, bfloat16 on GPUs."""
    device: str = "auto"
    """"auto": cuda when available, else cpu."""
    lr: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = 0.0
    """Coefficient of the per-token KL to the reference (initial) model; 0: no reference."""
    clip_low: float = 0.2
    clip_high: float = 0.28
    """PPO ratio clipped to [1 - clip_low, 1 + clip_high] (DAPO's clip-higher)."""
    loss_type: LossType = "dapo"
    """How token losses are averaged: grpo (per sequence, then over sequences), dr_grpo
    (sum / (sequences x max_new_tokens)), dapo (sum / tokens of the whole batch)."""
    epochs: int = 1
    """Optimizer steps on one batch (GRPO's mu); the clip only acts from the second."""
    micro_batch: int = 8
    """Sequences per forward/backward pass; gradients accumulate over the batch."""
    max_new_tokens: int = 512
    max_prompt_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    mask_truncated: bool = False
    """Leave completions that hit max_new_tokens out of the loss (DAPO's overlong filter)."""
    tis_cap: float = 2.0
    """C of truncated importance sampling: the surrogate of each token is weighted by
    min(pi_old / mu, C), mu the policy that sampled it (vLLM, or an older version under
    asynchronous rollouts); 0 turns the correction off."""
    logprob_chunk_tokens: int = 256
    """Completion positions whose (B, t, V) logits exist at once when log-probs are
    computed: the lm_head runs chunk by chunk (recomputed in the backward pass), so the
    fp32 (B, T, V) tensor of a 150k-token vocabulary is never built; 0: all at once."""
    lora_r: int = 0
    """0: train every weight; > 0: a LoRA adapter of this rank (peft)."""
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    """Dropout makes the training forward differ from the one that computed pi_old, so
    the ratio is not 1 on the first epoch; off by default."""
    lora_targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    gradient_checkpointing: bool = False
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    seed: int = 0
    vllm_mode: str = "colocate"
    """vLLM: "colocate" (in-process engine) or "server" (`vllm_url`)."""
    vllm_url: str = "http://127.0.0.1:8000"
    vllm_gpu_memory_utilization: float = 0.45
    vllm_sleep: bool = False
    """colocate: put the engine to sleep (level 2: weights and KV cache freed) while
    the trainer runs, and wake it for the next generation, so both fit on one GPU."""
    vllm_server_timeout_s: float = 240.0
    """server: how long to wait for the vLLM server to come up before failing."""

    def __post_init__(self) -> None:
        if self.loss_type not in ("grpo", "dr_grpo", "dapo"):
            raise ConfigError(f"loss_type {self.loss_type!r}: choose grpo, dr_grpo or dapo")
        if self.backend not in ("hf", "vllm"):
            raise ConfigError(f"backend {self.backend!r}: choose hf or vllm")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise ConfigError("clip_low in [0, 1) and clip_high >= 0")
        if self.beta < 0 or self.lr <= 0 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConfigError("beta >= 0, lr > 0, temperature > 0 and 0 < top_p <= 1")
        if self.epochs < 1 or self.micro_batch < 1 or self.max_new_tokens < 1:
            raise ConfigError("epochs, micro_batch and max_new_tokens must be >= 1")
        if self.tis_cap < 0 or self.logprob_chunk_tokens < 0:
            raise ConfigError("tis_cap >= 0 (0: off) and logprob_chunk_tokens >= 0 (0: off)")


@dataclass(frozen=True)
class LoopSettings:
    steps: int = 30
    group_size: int = 8
    """G: completions per prompt; a group is measured and compared as a whole."""
    prompts_per_step: int = 2
    on_tie: OnTie = "drop"
    """A group dropped for a tie (or too few survivors) is simply lost ("drop"), or
    replaced by sampling new groups until `prompts_per_step` count (DAPO, "resample")."""
    max_resample_rounds: int = 3
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    cores_per_task: int = 1
    """Cores of the slots measuring the kernels (told to the model in the prompt)."""
    reward_wait_s: float = 7200.0
    """Give up when no group's rewards come back for this long (the producer retries and
    leaves out members by itself; this only stops a hung run)."""
    max_staleness: int = 0
    """Asynchronous rollouts: how many policy versions older than the weights being
    trained a group may be. 0: the synchronous loop (generate, wait for every reward,
    update). k >= 1: generation runs up to k steps ahead of training while the CPU nodes
    measure; a group found older than k when it is trained is dropped and counted."""
    max_in_flight: int = 0
    """Asynchronous rollouts: at most this many groups sampled and not yet trained
    (being measured, or measured and waiting). 0: (max_staleness + 1) x
    prompts_per_step, everything the staleness bound admits."""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.group_size < 2 or self.prompts_per_step < 1:
            raise ConfigError("steps >= 0, group_size >= 2 and prompts_per_step >= 1")
        if self.max_staleness < 0 or self.max_in_flight < 0:
            raise ConfigError("max_staleness >= 0 and max_in_flight >= 0 (0: automatic)")
        if self.on_tie not in ("drop", "resample"):
            raise ConfigError(f"on_tie {self.on_tie!r}: choose drop or resample")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ConfigError("checkpoint_every and keep_checkpoints must be >= 1")

    @property
    def in_flight_limit(self) -> int:
        """Groups sampled and not yet trained, at most (`max_in_flight`, resolved)."""
        return self.max_in_flight or (self.max_staleness + 1) * self.prompts_per_step


@dataclass(frozen=True)
class TrainSettings:
    policy: PolicySettings = field(default_factory=PolicySettings)
    loop: LoopSettings = field(default_factory=LoopSettings)
    advantage: AdvantageSettings = field(default_factory=AdvantageSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    """What the run trains on (the paper's tiers and GFLOPS by default)."""

    def __post_init__(self) -> None:
        check_reward_settings(self.reward)


_SECTIONS: dict[str, type[Any]] = {
    "policy": PolicySettings,
    "loop": LoopSettings,
    "advantage": AdvantageSettings,
    "reward": RewardSettings,
}


def load_train_settings(path: Path | None = None, **sections: dict[str, Any]) -> TrainSettings:
    """Defaults, then the file's sections, then `sections` (from the command line),
    e.g. `load_train_settings(p, loop={"steps": 5})`."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path)
    unknown = sorted((set(data) | set(sections)) - set(_SECTIONS) - {"meta"})
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(_SECTIONS)}")
    parts = {}
    for name, cls in _SECTIONS.items():
        table = {**data.get(name, {}), **sections.get(name, {})}
        parts[name] = load_section(name, cls, table, cls())
    return dataclasses.replace(TrainSettings(), **parts)


RUN_CONFIG = "config.json"
"""In the run directory: the effective settings of the run, reward included."""


def recorded_reward(run_dir: Path) -> RewardSettings | None:
    """The reward settings `run_dir/config.json` records, or None when it records none
    (no file yet, or a run from before the reward was recorded)."""
    try:
        table = json.loads((run_dir / RUN_CONFIG).read_text())["train"]["reward"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    reward: RewardSettings = load_section("reward", RewardSettings, table, RewardSettings())
    return reward


def record_run(
    run_dir: Path, train: TrainSettings, problems: Sequence[str], *, resuming: bool
) -> Path:
    """Write `run_dir/config.json`. A run trains on one reward: resuming with settings
    that differ from the recorded ones is refused rather than mixed into one curve."""
    before = recorded_reward(run_dir) if resuming else None
    if before is not None and before != train.reward:
        raise ConfigError(
            f"{run_dir} was trained on [reward] {dataclasses.asdict(before)}, this resume asks "
            f"for {dataclasses.asdict(train.reward)}: resume with the recorded [reward] "
            f"({run_dir / RUN_CONFIG}) or start a new --run-dir"
        )
    path = run_dir / RUN_CONFIG
    record = {"train": dataclasses.asdict(train), "problems": list(problems)}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path
