"""The transformers backend on the bootstrap model: sampling log-probs are pi_old
exactly, an update moves probability toward positive advantages, the KL starts at zero,
save/load resumes, LoRA trains only the adapter."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from .conftest import needs_torch

needs_torch()

import torch  # noqa: E402

from bridges.hf_policy import HFPolicy  # noqa: E402
from hpcq.eval.problems import load_problem  # noqa: E402
from hpcq.train.extract import extract_code  # noqa: E402
from hpcq.train.policy import Scored  # noqa: E402
from hpcq.train.prompts import DEFAULT_STAGE, build_prompt  # noqa: E402
from hpcq.train.settings import PolicySettings  # noqa: E402

SETTINGS = PolicySettings(lr=3e-3, max_new_tokens=160, threads=1, micro_batch=3, seed=1)
PROMPT = build_prompt(load_problem("dgemm-256"), DEFAULT_STAGE)


def test_samples_are_code_with_their_own_log_probs(tiny_model: Path) -> None:
    policy = HFPolicy(SETTINGS, str(tiny_model))
    (group,) = policy.generate([PROMPT], 6)
    assert len(group) == 6 and all(s.policy_version == 0 for s in group)
    usable = [s for s in group if extract_code(s.text, "dgemm").source is not None]
    assert len(usable) >= 3, [s.text[:80] for s in group]
    for s in group:
        assert len(s.logprobs) == len(s.completion_ids) and all(lp <= 0 for lp in s.logprobs)
        if not s.truncated:
            assert s.completion_ids[-1] in policy.end_ids
    again, _, _ = policy.token_logprobs(
        [(s.prompt_ids, s.completion_ids) for s in group], grad=False
    )
    for b, s in enumerate(group):
        assert again[b, : len(s.logprobs)].tolist() == pytest.approx(list(s.logprobs), abs=1e-4)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_update_raises_the_logprob_of_the_better_sample(tiny_model: Path, loss_type: str) -> None:
    policy = HFPolicy(
        dataclasses.replace(SETTINGS, loss_type=loss_type, beta=0.04), str(tiny_model)
    )
    (group,) = policy.generate([PROMPT], 6)
    good = group[0]
    # Two different completions, or "after > before" could hold or fail by accident of
    # the two sharing all their tokens.
    distinct = [s for s in group[1:] if s.completion_ids != good.completion_ids]
    assert distinct, "six samples at temperature 1 were all the same completion"
    bad = distinct[0]
    pairs = [(good.prompt_ids, good.completion_ids), (bad.prompt_ids, bad.completion_ids)]
    before = policy.token_logprobs(pairs, grad=False)[0].sum(1)
    stats = policy.update([Scored(good, 1.0), Scored(bad, -1.0)])
    after = policy.token_logprobs(pairs, grad=False)[0].sum(1)
    assert policy.version == 1
    assert stats.kl == pytest.approx(0.0, abs=1e-6)  # pi_theta == pi_ref before the step
    assert stats.clip_low == 0 and stats.clip_high == 0  # one epoch: rho == 1
    assert stats.sampler_kl == pytest.approx(0.0, abs=1e-5)
    assert stats.tokens == len(good.completion_ids) + len(bad.completion_ids)
    assert after[0] > before[0] and after[1] < before[1]


def test_second_epoch_measures_kl_and_clipping(tiny_model: Path) -> None:
    s = dataclasses.replace(SETTINGS, beta=0.1, epochs=3, lr=2e-2)
    policy = HFPolicy(s, str(tiny_model))
    (group,) = policy.generate([PROMPT], 4)
    stats = policy.update(
        [Scored(x, a) for x, a in zip(group, (1.5, -0.5, -0.5, -0.5), strict=True)]
    )
    assert math.isfinite(stats.loss) and math.isfinite(stats.grad_norm) and stats.grad_norm > 0
    assert stats.kl > 0
    assert policy.version == 1


def test_save_and_load_restore_weights_optimizer_and_version(
    tiny_model: Path, tmp_path: Path
) -> None:
    policy = HFPolicy(SETTINGS, str(tiny_model))
    (group,) = policy.generate([PROMPT], 2)
    policy.update([Scored(group[0], 1.0), Scored(group[1], -1.0)])
    policy.save(tmp_path / "ckpt")
    reference = {k: v.clone() for k, v in policy.model.state_dict().items()}
    other = HFPolicy(SETTINGS, str(tiny_model))
    other.load(tmp_path / "ckpt")
    assert other.version == 1
    for k, v in other.model.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert (
        other.optimizer.state_dict()["state"].keys()
        == policy.optimizer.state_dict()["state"].keys()
    )


def test_lora_trains_only_the_adapter_and_uses_the_base_as_reference(
    tiny_model: Path, tmp_path: Path
) -> None:
    pytest.importorskip("peft", reason="LoRA needs peft (the ml extra)")
    s = dataclasses.replace(SETTINGS, lora_r=4, lora_alpha=8, lora_dropout=0.0, beta=0.05)
    policy = HFPolicy(s, str(tiny_model))
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    (group,) = policy.generate([PROMPT], 2)
    stats = policy.update([Scored(group[0], 1.0), Scored(group[1], -1.0)])
    assert stats.kl == pytest.approx(0.0, abs=1e-6)
    policy.save(tmp_path / "lora")
    assert (tmp_path / "lora" / "model" / "adapter_model.safetensors").is_file()
    other = HFPolicy(s, str(tiny_model))
    other.load(tmp_path / "lora")
    assert other.version == 1


def test_batched_log_probs_match_one_sequence_at_a_time(tiny_model: Path) -> None:
    """Right padding, different prompt lengths and the kept-logits window give the same
    numbers as a plain forward pass over each sequence alone."""
    policy = HFPolicy(dataclasses.replace(SETTINGS, temperature=0.7), str(tiny_model))
    (group,) = policy.generate([PROMPT], 3)
    short = build_prompt(load_problem("dgemm-512"), DEFAULT_STAGE)
    (other,) = policy.generate([short], 1)
    pairs = [(s.prompt_ids[k:], s.completion_ids) for s, k in zip(group, (0, 5, 11), strict=True)]
    pairs.append((other[0].prompt_ids, other[0].completion_ids))
    batched, _, mask = policy.token_logprobs(pairs, grad=False)
    with torch.no_grad():
        for b, (p, c) in enumerate(pairs):
            ids = torch.tensor([[*p, *c]])
            logits = policy.model(input_ids=ids).logits[0].float() / 0.7
            lp = torch.log_softmax(logits, -1)[len(p) - 1 : len(p) + len(c) - 1]
            alone = lp.gather(1, torch.tensor(c)[:, None]).squeeze(1)
            assert batched[b, : len(c)].tolist() == pytest.approx(alone.tolist(), abs=1e-4)
            assert mask[b].sum() == len(c)


def test_vllm_backend_without_gpu_is_a_clear_config_error(tiny_model: Path) -> None:
    import importlib.util

    from bridges.policies import make_policy
    from hpcq.errors import ConfigError

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and a GPU are here: test_vllm_policy.py covers this machine")
    with pytest.raises(ConfigError, match="--backend vllm needs"):
        make_policy(PolicySettings(backend="vllm", model=str(tiny_model)))
    assert isinstance(make_policy(PolicySettings(model=str(tiny_model))), HFPolicy)


@pytest.mark.parametrize("chunk", [1, 3, 0])
def test_chunked_logprobs_equal_the_full_logits_and_their_gradients(
    tiny_model: Path, chunk: int
) -> None:
    """Log-probs through the lm_head chunk by chunk (checkpointed under grad) are the
    log-softmax of the model's own full logits, and so are their gradients."""
    policy = HFPolicy(dataclasses.replace(SETTINGS, logprob_chunk_tokens=chunk), str(tiny_model))
    (group,) = policy.generate([PROMPT], 3)
    pairs = [(s.prompt_ids, s.completion_ids) for s in group]
    policy.model.zero_grad()
    logp, entropy, mask = policy.token_logprobs(pairs, grad=True)
    (logp.sum() * 0.5).backward()
    chunked_grads = [p.grad.clone() for p in policy.model.parameters()]
    policy.model.zero_grad()
    full = []
    for b, (p, c) in enumerate(pairs):
        ids = torch.tensor([[*p, *c]])
        logits = policy.model(input_ids=ids).logits[0].float() / SETTINGS.temperature
        lp = torch.log_softmax(logits[len(p) - 1 : len(p) + len(c) - 1], -1)
        full.append(lp.gather(1, torch.tensor(c)[:, None]).squeeze(1))
        assert logp[b, : len(c)].tolist() == pytest.approx(full[-1].tolist(), abs=1e-5)
        ent = -(lp.exp() * lp).sum(-1)
        assert entropy[b, : len(c)].tolist() == pytest.approx(ent.tolist(), abs=1e-4)
        assert mask[b].sum().item() == len(c)
    (torch.cat(full).sum() * 0.5).backward()
    for g, p in zip(chunked_grads, policy.model.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-5), "gradients differ"


def test_stale_samples_are_reweighted_and_capped(tiny_model: Path) -> None:
    """Behaviour log-probs far below pi_old (an old policy, or a sampler that differs)
    give importance weights above the cap on those tokens; equal ones give weight 1."""
    policy = HFPolicy(dataclasses.replace(SETTINGS, tis_cap=2.0), str(tiny_model))
    (group,) = policy.generate([PROMPT], 2)
    fresh = policy.update([Scored(group[0], 1.0), Scored(group[1], -1.0)])
    assert fresh.is_clip_frac == 0 and fresh.is_weight_mean == pytest.approx(1.0, abs=1e-3)
    stale = [
        dataclasses.replace(s, logprobs=tuple(lp - 2.0 for lp in s.logprobs)) for s in group
    ]  # mu = pi / e^2 by the sampler's account: pi_old / mu is about 7.4 > cap
    stats = policy.update([Scored(stale[0], 1.0), Scored(stale[1], -1.0)])
    assert stats.is_clip_frac > 0.9 and 1.5 < stats.is_weight_mean <= 2.0
    assert stats.sampler_kl > 0.5
