"""The GRPO loss terms and the three aggregations, on hand-made tensors."""

from __future__ import annotations

import math

import pytest

from .conftest import needs_torch

needs_torch()

import torch  # noqa: E402

from bridges.grpo_loss import clipped_surrogate, grpo_loss, kl_k3, token_weights  # noqa: E402


def test_surrogate_clips_on_the_side_the_advantage_pushes() -> None:
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[0.5, 0.9, 1.2, 1.5]]))  # ratios 0.5, 0.9, 1.2, 1.5
    loss, low, high = clipped_surrogate(logp, old, torch.tensor([1.0]), 0.2, 0.28)
    # A > 0: min(rho, clip(rho)) -> the ratio is capped at 1.28 but never raised to 0.8
    assert loss.tolist()[0] == pytest.approx([-0.5, -0.9, -1.2, -1.28])
    assert high.tolist() == [[False, False, False, True]] and not low.any()
    loss, low, high = clipped_surrogate(logp, old, torch.tensor([-1.0]), 0.2, 0.28)
    # A < 0: the ratio is held at >= 0.8 (pessimistic), unbounded above
    assert loss.tolist()[0] == pytest.approx([0.8, 0.9, 1.2, 1.5])
    assert low.tolist() == [[True, False, False, False]] and not high.any()


def test_kl_k3_is_zero_at_equality_and_positive_elsewhere() -> None:
    a = torch.tensor([[-1.0, -2.0]])
    assert kl_k3(a, a).abs().max() == 0
    assert (kl_k3(a, a + 0.3) > 0).all() and (kl_k3(a, a - 0.3) > 0).all()


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_weights_sum_to_the_right_normalizer(loss_type: str) -> None:
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    w = token_weights(loss_type, mask, n_seqs=2, n_tokens=4, max_len=8)  # type: ignore[arg-type]
    if loss_type == "grpo":  # each sequence weighs 1/n, however long
        assert w.sum(1).tolist() == pytest.approx([0.5, 0.5])
    elif loss_type == "dr_grpo":  # every token 1/(n L)
        assert w[mask > 0].unique().tolist() == pytest.approx([1 / 16])
    else:  # every token 1/(total tokens)
        assert w.sum().item() == pytest.approx(1.0)
    assert (w[mask == 0] == 0).all()


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_micro_batches_sum_to_the_full_batch_loss(loss_type: str) -> None:
    torch.manual_seed(0)
    logp = torch.randn(4, 6) * 0.1 - 1
    old = logp + torch.randn(4, 6) * 0.05
    ref = logp + torch.randn(4, 6) * 0.05
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0])
    mask = (torch.arange(6)[None, :] < torch.tensor([6, 2, 4, 5])[:, None]).float()
    n_tokens = int(mask.sum())

    def part(rows: slice) -> torch.Tensor:
        w = token_weights(loss_type, mask[rows], 4, n_tokens, 6)  # type: ignore[arg-type]
        return grpo_loss(logp[rows], old[rows], ref[rows], adv[rows], w, 0.2, 0.28, 0.04)[0]

    assert (part(slice(0, 2)) + part(slice(2, 4))).item() == pytest.approx(part(slice(0, 4)).item())


def test_truncated_importance_weights_by_hand() -> None:
    from bridges.grpo_loss import truncated_is_weights

    old = torch.log(torch.tensor([[0.5, 0.4, 0.9, 0.3]]))  # pi_old of four tokens
    mu = torch.log(torch.tensor([[0.5, 0.8, 0.3, 0.3]]))  # the sampler's (behaviour) probs
    have = torch.tensor([[True, True, True, False]])  # no behaviour log-prob for the last
    w, clipped = truncated_is_weights(old, mu, have, cap=2.0)
    # pi_old / mu = 1, 0.5, 3 -> capped at 2; unknown -> 1
    assert w.tolist()[0] == pytest.approx([1.0, 0.5, 2.0, 1.0])
    assert clipped.tolist() == [[False, False, True, False]]
    off, none = truncated_is_weights(old, mu, have, cap=0.0)
    assert off.tolist() == [[1.0, 1.0, 1.0, 1.0]] and not none.any()


def test_importance_weights_scale_the_surrogate_and_leave_the_kl_alone() -> None:
    logp = torch.log(torch.tensor([[0.5, 0.5]]))
    old = logp.clone()  # rho = 1: the surrogate of a token is -A
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    adv = torch.tensor([2.0])
    w = torch.tensor([[0.5, 0.5]])  # dapo over two tokens
    is_w = torch.tensor([[3.0, 0.5]])
    loss, sums = grpo_loss(logp, old, ref, adv, w, 0.2, 0.28, 0.1, is_weights=is_w)
    kl0 = 0.5 - math.log(0.5) - 1  # k3 with pi_ref / pi_theta = 0.5 on token 0
    expected = 0.5 * (-2.0 * 3.0 + 0.1 * kl0) + 0.5 * (-2.0 * 0.5 + 0.0)
    assert loss.item() == pytest.approx(expected)
    assert sums["kl"].item() == pytest.approx(kl0)
    plain, _ = grpo_loss(logp, old, ref, adv, w, 0.2, 0.28, 0.1)
    assert plain.item() == pytest.approx(0.5 * (-2.0 + 0.1 * kl0) + 0.5 * -2.0)
