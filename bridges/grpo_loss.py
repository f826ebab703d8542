"""The GRPO objective in torch, term by term.

For completion o_i of a group, token t, with rho = pi_theta / pi_old:

    l_{i,t} = -min(rho_{i,t} A_i, clip(rho_{i,t}, 1 - eps_low, 1 + eps_high) A_i)
              + beta * KL_{i,t}[pi_theta || pi_ref]

    L = sum_{i,t} w_{i,t} l_{i,t}, with the aggregation w chosen by `loss_type`:
        grpo     w = 1 / (|o_i| * n)          mean over a sequence's tokens, then over n sequences
        dr_grpo  w = 1 / (L_max * n)          a constant: no length bias (Dr. GRPO)
        dapo     w = 1 / sum_i |o_i|          every token of the batch alike (DAPO)

n and sum_i |o_i| are counted over the whole optimizer batch, not one micro-batch, so
gradient accumulation gives the same update as one big batch.
"""

from __future__ import annotations

import torch

from hpcq.train_settings import LossType


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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This micro-batch's share of L, and token sums for the metrics (not normalized)."""
    mask = weights > 0  # (B, T)
    surrogate, low, high = clipped_surrogate(logp, old_logp, adv, eps_low, eps_high)
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
