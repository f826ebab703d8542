"""The vLLM backend, on a GPU only: sampling through vLLM agrees with the trainer's
log-probs, and an update reaches vLLM's copy of the weights. Skipped (with the reason)
without vllm or CUDA, which is every CPU machine."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from .conftest import needs_torch

needs_torch()

import torch  # noqa: E402

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed (the gpu extra; GPU machines only)", allow_module_level=True)
if not torch.cuda.is_available():
    pytest.skip("the vllm backend needs a CUDA GPU", allow_module_level=True)

from bridges.vllm_policy import VLLMPolicy  # noqa: E402
from hpcq.eval.problems import load_problem  # noqa: E402
from hpcq.train.policy import Scored  # noqa: E402
from hpcq.train.prompts import DEFAULT_STAGE, build_prompt  # noqa: E402
from hpcq.train.settings import PolicySettings  # noqa: E402

PROMPT = build_prompt(load_problem("dgemm-256"), DEFAULT_STAGE)


def test_vllm_samples_then_syncs_after_an_update(tiny_model: Path) -> None:
    s = PolicySettings(backend="vllm", lr=3e-3, max_new_tokens=160, vllm_gpu_memory_utilization=0.3)
    policy = VLLMPolicy(s, str(tiny_model))
    (group,) = policy.generate([PROMPT], 8)
    assert len(group) == 8 and all(len(x.logprobs) == len(x.completion_ids) for x in group)
    stats = policy.update([Scored(group[0], 1.0), Scored(group[1], -1.0)])
    assert stats.sampler_kl < 0.05  # vLLM's and the trainer's pi_old agree
    assert policy._synced_version == policy.version == 1
    (after,) = policy.generate([PROMPT], 4)
    assert all(x.policy_version == 1 for x in after)
    pairs = [(x.prompt_ids, x.completion_ids) for x in after]
    trainer = policy.token_logprobs(pairs, grad=False)[0]
    for b, x in enumerate(after):  # vLLM sampled from the updated weights
        got = torch.tensor(x.logprobs, device=trainer.device)
        assert (got - trainer[b, : len(x.logprobs)]).abs().mean() < 0.05


def test_transformers_and_vllm_generation_speed(tiny_model: Path) -> None:
    """Not an assertion of speed: a smoke test of both paths on the same prompts."""
    from bridges.hf_policy import HFPolicy

    s = PolicySettings(max_new_tokens=160, vllm_gpu_memory_utilization=0.3)
    assert HFPolicy(s, str(tiny_model)).generate([PROMPT], 4)
    assert VLLMPolicy(dataclasses.replace(s, backend="vllm"), str(tiny_model)).generate([PROMPT], 4)
