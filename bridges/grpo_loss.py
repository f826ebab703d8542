"""The GRPO objective in torch, term by term.

For completion o_i of a group, token t, with rho = pi_theta / pi_old:

    l_{i,t} = -w^IS_{i,t} min(rho_{i,t} A_i, clip(rho_{i,t}, 1 - eps_low, 1 + eps_high) A_i)
              + beta * KL_{i,t}[pi_theta || pi_ref]

    w^IS_{i,t} = min(pi_old / mu, C)    truncated importance sampling (TIS)

mu is the behaviour policy, the one that actually drew the tokens: the sampler (vLLM's
kernels differ from the trainer's forward, so mu != pi_old even at the same weights), or
the weights of an older policy version when groups arrive late (asynchronous rollouts).
pi_old is the trainer's own forward at the current weights, recomputed before the update
(the "proximal" policy of decoupled PPO): the clip bounds the step away from pi_old, and
w^IS re-weights the samples from mu to pi_old, capped at C so one token the sampler
found unlikely cannot dominate the batch. C = 0 switches the correction off (w = 1).

    L = sum_{i,t} w_{i,t} l_{i,t}, with the aggregation w chosen by `loss_type`:
        grpo     w = 1 / (|o_i| * n)          mean over a sequence's tokens, then over n sequences
        dr_grpo  w = 1 / (L_max * n)          a constant: no length bias (Dr. GRPO)
        dapo     w = 1 / sum_i |o_i|          every token of the batch alike (DAPO)

n and sum_i |o_i| are counted over the whole optimizer batch, not one micro-batch, so
gradient accumulation gives the same update as one big batch.
"""

from __future__ import annotations

import torch

from hpcq.train.settings import LossType


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token losses -min(rho A, clip(rho) A), and where the low/high clip was active."""
    ratio = torch.exp(logp - old_logp)  # (B, T) rho_{i,t}
    a = adv[:, None]  # (B, 1) one advantage per sequence
    unclipped = ratio * a  # (B, T)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * a  # (B, T)
    loss = -torch.min(unclipped, clipped)  # (B, T)
    # The clip binds (and zeroes the gradient) only on the side the advantage pushes to.
    low = (ratio < 1 - eps_low) & (a < 0)
    high = (ratio > 1 + eps_high) & (a > 0)
    return loss, low, high


def truncated_is_weights(
    old_logp: torch.Tensor, behaviour_logp: torch.Tensor, have: torch.Tensor, cap: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """w^IS = min(pi_old / mu, C) per token, and where the cap bound.

    `have` (B, T) marks tokens whose behaviour log-prob is known; elsewhere w = 1 (no
    correction rather than a made-up one). cap <= 0: no correction at all."""
    if cap <= 0:
        return torch.ones_like(old_logp), torch.zeros_like(old_logp, dtype=torch.bool)
    log_ratio = torch.where(have, old_logp - behaviour_logp, torch.zeros_like(old_logp))  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T) pi_old / mu
    return torch.clamp(ratio, max=cap), ratio > cap


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref), the k3 estimator the GRPO paper uses (>= 0)."""
    d = ref_logp - logp  # (B, T)
    return torch.exp(d) - d - 1  # (B, T)


def token_weights(
    loss_type: LossType, mask: torch.Tensor, n_seqs: int, n_tokens: int, max_len: int
) -> torch.Tensor:
    """w_{i,t} of the docstring's sum; `mask` (B, T) is 1 on this micro-batch's tokens."""
    if loss_type == "grpo":
        return mask / (mask.sum(dim=1, keepdim=True).clamp(min=1) * n_seqs)
    if loss_type == "dr_grpo":
        return mask / (max_len * n_seqs)
    return mask / max(1, n_tokens)  # dapo


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    adv: torch.Tensor,
    weights: torch.Tensor,
    eps_low: float,
    eps_high: float,
    beta: float,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This micro-batch's share of L, and token sums for the metrics (not normalized).

    `is_weights` (B, T) is w^IS (constants, no gradient); None means 1 everywhere."""
    mask = weights > 0  # (B, T)
    surrogate, low, high = clipped_surrogate(logp, old_logp, adv, eps_low, eps_high)
    if is_weights is not None:
        surrogate = surrogate * is_weights.detach()  # the KL term is not re-weighted
    per_token = surrogate  # (B, T)
    kl = torch.zeros_like(logp)
    if ref_logp is not None and beta > 0:
        kl = kl_k3(logp, ref_logp)
        per_token = per_token + beta * kl
    loss = (per_token * weights).sum()
    sums = {
        "kl": (kl.detach() * mask).sum(),
        "clip_low": (low & mask).sum(),
        "clip_high": (high & mask).sum(),
    }
    return loss, sums
