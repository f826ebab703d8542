"""The off-policy correction for stale groups (decoupled PPO): pi_old is the trainer's
forward at the current weights, mu the older version that sampled the tokens. The
clip bounds the step away from pi_old; min(pi_old / mu, C) re-weights the sample from
mu to pi_old. Hand-computed values, then the real policy on a group sampled one
version before the update that trains it."""

from __future__ import annotations

import math

import pytest

from .conftest import needs_torch

needs_torch()

import torch  # noqa: E402

from bridges.grpo_loss import grpo_loss, token_weights, truncated_is_weights  # noqa: E402

# Four tokens of one completion. pi_old: the current weights (the proximal policy) give
# each 0.5; mu: the version two updates back, which sampled them, gave 0.2, 0.4, 0.8 and
# 0.5. The new weights being trained move rho = pi_theta / pi_old to 1, 1.5, 0.5, 1.
PI_OLD = [0.5, 0.5, 0.5, 0.5]
MU = [0.2, 0.4, 0.8, 0.5]
RHO = [1.0, 1.5, 0.5, 1.0]
CAP = 2.0


def tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    old = torch.log(torch.tensor([PI_OLD]))  # (1, 4)
    mu = torch.log(torch.tensor([MU]))  # (1, 4)
    logp = (old + torch.log(torch.tensor([RHO]))).requires_grad_(True)  # (1, 4)
    return logp, old, mu


def test_stale_behaviour_weights_by_hand() -> None:
    _, old, mu = tensors()
    have = torch.ones_like(old, dtype=torch.bool)
    w, capped = truncated_is_weights(old, mu, have, CAP)
    # pi_old / mu = 2.5 (capped to 2), 1.25, 0.625, 1
    assert w.tolist()[0] == pytest.approx([2.0, 1.25, 0.625, 1.0])
    assert capped.tolist() == [[True, False, False, False]]


@pytest.mark.parametrize(
    ("adv", "want_loss", "want_grad"),
    [
        # A = +1: surrogate -min(rho, clip(rho, 0.8, 1.28)) = -1, -1.28, -0.5, -1;
        # x w = -2, -1.6, -0.3125, -1; dapo: / 4 tokens. d/dlogp = -w rho / 4 where the
        # clip does not bind, 0 on token 1 (1.5 > 1.28 with A > 0).
        (1.0, -(2.0 + 1.6 + 0.3125 + 1.0) / 4, [-0.5, 0.0, -0.625 * 0.5 / 4, -0.25]),
        # A = -1: surrogate max(rho, clip(rho)) = 1, 1.5, 0.8, 1; x w = 2, 1.875, 0.5, 1.
        # The clip binds on token 2 (0.5 < 0.8 with A < 0): no gradient there.
        (-1.0, (2.0 + 1.875 + 0.5 + 1.0) / 4, [0.5, 1.25 * 1.5 / 4, 0.0, 0.25]),
    ],
)
def test_stale_group_loss_and_gradient_by_hand(
    adv: float, want_loss: float, want_grad: list[float]
) -> None:
    logp, old, mu = tensors()
    have = torch.ones_like(old, dtype=torch.bool)
    w_is, _ = truncated_is_weights(old, mu, have, CAP)
    mask = torch.ones_like(old)
    weights = token_weights("dapo", mask, n_seqs=1, n_tokens=4, max_len=4)
    loss, sums = grpo_loss(logp, old, None, torch.tensor([adv]), weights, 0.2, 0.28, 0.0, w_is)
    assert loss.item() == pytest.approx(want_loss)
    loss.backward()  # type: ignore[no-untyped-call]
    assert logp.grad is not None
    assert logp.grad.tolist()[0] == pytest.approx(want_grad)
    assert int(sums["clip_high"] + sums["clip_low"]) == 1


def test_without_the_correction_the_stale_group_counts_as_on_policy() -> None:
    """cap 0 (off): the same stale group weighs like a fresh one; the difference from
    the corrected loss is exactly the re-weighting of tokens 0 and 2 (A = +1)."""
    logp, old, mu = tensors()
    have = torch.ones_like(old, dtype=torch.bool)
    w_off, _ = truncated_is_weights(old, mu, have, 0.0)
    weights = token_weights("dapo", torch.ones_like(old), 1, 4, 4)
    plain, _ = grpo_loss(logp, old, None, torch.tensor([1.0]), weights, 0.2, 0.28, 0.0, w_off)
    assert plain.item() == pytest.approx(-(1.0 + 1.28 + 0.5 + 1.0) / 4)


def test_policy_weights_a_stale_group_by_its_sampled_logprobs(tiny_model: object) -> None:
    """A group sampled at version 0 is trained after one update (version 1): the mean
    importance weight is min(pi_old / mu, C) over its tokens, with mu the log-probs the
    samples carry (version 0's) and pi_old the current weights' forward."""
    from bridges.hf_policy import HFPolicy
    from hpcq.eval.problems import load_problem
    from hpcq.train.policy import Scored
    from hpcq.train.prompts import DEFAULT_STAGE, build_prompt
    from hpcq.train.settings import PolicySettings

    s = PolicySettings(max_new_tokens=48, lr=5e-3, threads=1, seed=0, tis_cap=1.5)
    policy = HFPolicy(s, str(tiny_model))
    prompt = build_prompt(load_problem("dgemm-256"), DEFAULT_STAGE)
    (fresh,) = policy.generate([prompt], 4)
    (stale,) = policy.generate([prompt], 4)  # also version 0
    advantages = [1.5, -0.5, -0.5, -0.5]
    policy.update([Scored(x, a) for x, a in zip(fresh, advantages, strict=True)])
    assert policy.version == 1 and all(x.policy_version == 0 for x in stale)
    pairs = [(x.prompt_ids, x.completion_ids) for x in stale]
    old, _, mask = policy.token_logprobs(pairs, grad=False)  # (B, T) pi_old at version 1
    ratios = [
        math.exp(float(old[b, t]) - x.logprobs[t])
        for b, x in enumerate(stale)
        for t in range(len(x.completion_ids))
    ]
    assert int(mask.sum()) == len(ratios)
    assert any(abs(r - 1) > 1e-3 for r in ratios), "one update must move the policy"
    stats = policy.update([Scored(x, a) for x, a in zip(stale, advantages, strict=True)])
    want_mean = sum(min(r, 1.5) for r in ratios) / len(ratios)
    want_clip = sum(r > 1.5 for r in ratios) / len(ratios)
    assert stats.is_weight_mean == pytest.approx(want_mean, rel=1e-4)
    assert stats.is_clip_frac == pytest.approx(want_clip)
