"""The contract between the GRPO loop and a model backend.

The loop (hpcq.train.loop) depends on `Policy` only; the backends in `bridges/` (transformers,
vLLM) implement it with torch. A policy samples completions with the token ids and the
per-token log-probabilities of the sampling distribution, learns from samples scored
with advantages, saves and loads itself (weights, optimizer, RNG), and counts its
updates in `version`: every task carries the version that wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hpcq.train.prompts import Message


@dataclass(frozen=True)
class Sample:
    """One completion of one prompt."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]  # up to and including the end-of-turn token
    logprobs: tuple[float, ...]  # log pi_old(token), one per completion token
    text: str  # the decoded completion, special tokens removed
    truncated: bool  # hit max_new_tokens before the end-of-turn token
    policy_version: int


@dataclass(frozen=True)
class Scored:
    """A sample with its advantage: what an update learns from."""

    sample: Sample
    advantage: float


@dataclass(frozen=True)
class UpdateStats:
    loss: float
    kl: float  # mean per-token KL to the reference (k3 estimator); 0 without beta
    clip_low: float  # fraction of tokens whose ratio was clipped below 1 - eps_low
    clip_high: float  # ... above 1 + eps_high
    entropy: float  # mean per-token entropy of the policy (nats)
    grad_norm: float  # before clipping
    tokens: int  # completion tokens trained on
    sampler_kl: float = 0.0  # sampler log-probs vs the trainer's, k3 (vLLM vs HF drift)
    is_clip_frac: float = 0.0  # fraction of tokens whose importance weight hit tis_cap
    is_weight_mean: float = 1.0  # mean truncated importance weight min(pi_old / mu, C)


class Policy(Protocol):
    @property
    def version(self) -> int:
        """Updates applied so far (0: the initial weights)."""
        ...

    def generate(self, prompts: Sequence[Sequence[Message]], n: int) -> list[list[Sample]]:
        """`n` sampled completions for each prompt, in prompt order."""
        ...

    def update(self, batch: Sequence[Scored]) -> UpdateStats:
        """One GRPO update (one optimizer step per epoch) from the scored samples."""
        ...

    def save(self, directory: Path) -> None:
        """Weights, tokenizer, optimizer state, version and RNG into `directory`."""
        ...

    def load(self, directory: Path) -> None:
        """Restore what `save` wrote (resume after a crash)."""
        ...
