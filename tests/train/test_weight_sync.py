"""What vLLM receives, checked on the CPU with a stub in place of TRL's VLLMClient:
the effective weights W + delta W under LoRA (not the base weights), the trainer's own
weights untouched by the sync, metadata that matches the stream, and server log-probs
taken by token id."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import needs_torch

needs_torch()

import torch  # noqa: E402

from bridges.vllm_policy import VLLMPolicy, sampled_logprobs  # noqa: E402
from hpcq.eval.problems import load_problem  # noqa: E402
from hpcq.train.policy import Scored  # noqa: E402
from hpcq.train.prompts import DEFAULT_STAGE, build_prompt  # noqa: E402
from hpcq.train.settings import PolicySettings  # noqa: E402

PROMPT = build_prompt(load_problem("dgemm-256"), DEFAULT_STAGE)
SETTINGS = PolicySettings(
    backend="vllm", vllm_mode="server", lr=5e-2, max_new_tokens=40, threads=1, seed=3
)


class StubClient:
    """Records what a VLLMClient would send, and samples with a transformers policy."""

    def __init__(self) -> None:
        self.received: list[dict[str, torch.Tensor]] = []
        self.metadata: list[list[tuple[str, str, list[int]]]] = []
        self.in_update = False
        self.resets = 0
        self.sampler: Any = None
        self.shift = 0.0

    @contextlib.contextmanager
    def weight_update(self) -> Iterator[None]:
        self.in_update = True
        yield
        self.in_update = False

    def update_named_params(
        self, metadata: list[tuple[str, str, list[int]]], named: Iterator[tuple[str, torch.Tensor]]
    ) -> None:
        assert self.in_update, "weights sent outside weight_update()"
        got = {name: t.clone() for name, t in named}
        assert [m[0] for m in metadata] == list(got)  # announced in the order streamed
        for name, dtype, shape in metadata:
            assert str(got[name].dtype).removeprefix("torch.") == dtype
            assert list(got[name].shape) == shape
        self.metadata.append(metadata)
        self.received.append(got)

    def reset_prefix_cache(self) -> None:
        self.resets += 1

    def generate(self, prompts: list[list[int]], n: int, **_: Any) -> dict[str, Any]:
        """Like the server: prompt-major, per-step log-probs sorted with their ids; a
        decoy token more likely than the sampled one comes first."""
        completions, logprobs, ids = [], [], []
        for p in prompts:
            out = self.sampler.model.generate(
                input_ids=torch.tensor([p]),
                do_sample=True,
                max_new_tokens=12,
                num_return_sequences=n,
                pad_token_id=0,
            )
            for row in out:
                c = row[len(p) :].tolist()
                lp = self.sampler.token_logprobs([(p, c)], grad=False)[0][0].tolist()
                completions.append(c)
                logprobs.append([[0.0, v - self.shift] for v in lp])
                ids.append([[-1, t] for t in c])
        return {"completion_ids": completions, "logprobs": logprobs, "logprob_token_ids": ids}


def _policy(tiny_model: Path, **changes: Any) -> tuple[VLLMPolicy, StubClient]:
    client = StubClient()
    policy = VLLMPolicy(dataclasses.replace(SETTINGS, **changes), str(tiny_model), client=client)
    client.sampler = policy
    return policy, client


def test_lora_sends_the_merged_weights_and_leaves_the_base_alone(tiny_model: Path) -> None:
    policy, client = _policy(tiny_model, lora_r=4, lora_alpha=8)
    base_before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    (group,) = policy.generate([PROMPT], 4)
    policy.update([Scored(x, a) for x, a in zip(group, (1.0, -1.0, 0.5, -0.5), strict=True)])
    assert policy._synced_version == policy.version == 1 and client.resets == 1
    sent = client.received[-1]
    assert not any("lora_" in n or "base_layer" in n for n in sent)
    # The adapter moved, so the effective weights differ from the base weights ...
    inner = policy.model.base_model.model
    q = inner.model.layers[0].self_attn.q_proj
    expected = q.base_layer.weight.detach().float() + q.get_delta_weight("default").float()
    got = sent["model.layers.0.self_attn.q_proj.weight"]
    assert torch.allclose(got.float(), expected, atol=1e-6)
    assert not torch.allclose(got, q.base_layer.weight), "the server got the base weights"
    # ... and the trainer's base weights are exactly what they were (no merge/unmerge).
    for n, p in policy.model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base_before[n]), n
    # Every base weight is sent, under the base model's names.
    names = {n for n, _ in type(inner).from_pretrained(tiny_model).named_parameters()}
    assert set(sent) == names


def test_full_fine_tune_sends_the_updated_parameters(tiny_model: Path) -> None:
    policy, client = _policy(tiny_model)
    (group,) = policy.generate([PROMPT], 2)
    policy.update([Scored(group[0], 1.0), Scored(group[1], -1.0)])
    sent = client.received[-1]
    for n, p in policy.model.named_parameters():
        assert torch.equal(sent[n], p.detach())
    policy.update([Scored(group[0], 1.0), Scored(group[1], -1.0)])
    assert len(client.received) == 2 and policy._synced_version == 2


def test_server_log_probs_are_found_by_token_id_and_feed_the_correction(tiny_model: Path) -> None:
    policy, client = _policy(tiny_model)
    (group,) = policy.generate([PROMPT], 3)
    for x in group:  # the decoy (-1, log-prob 0.0) was never taken for the sampled token
        again = policy.token_logprobs([(x.prompt_ids, x.completion_ids)], grad=False)[0][0]
        assert list(x.logprobs) == pytest.approx(again[: len(x.logprobs)].tolist(), abs=1e-4)
    stats = policy.update([Scored(group[0], 1.0), Scored(group[1], -1.0)])
    assert stats.sampler_kl == pytest.approx(0.0, abs=1e-4) and stats.is_clip_frac == 0
    client.shift = 3.0  # a sampler that disagrees with the trainer by e^3
    (drifted,) = policy.generate([PROMPT], 3)
    stats = policy.update([Scored(drifted[0], 1.0), Scored(drifted[1], -1.0)])
    assert stats.sampler_kl > 1.0 and stats.is_clip_frac > 0.9


def test_missing_server_log_prob_is_an_error() -> None:
    assert sampled_logprobs([5, 6], [[-0.1, -2.0], [-0.3]], [[7, 5], [6]]) == [-2.0, -0.3]
    with pytest.raises(RuntimeError, match="no log-prob for token 1"):
        sampled_logprobs([5, 6], [[-0.1], [-0.3]], [[5], [8]])
    with pytest.raises(RuntimeError, match="NaN"):
        sampled_logprobs([5], [[None]], [[5]])


class StubLLM:
    """vllm.LLM's surface that colocate mode uses, recording the order of events."""

    def __init__(self, sampler_holder: dict[str, Any]) -> None:
        self.events: list[str] = []
        self.loaded: dict[str, torch.Tensor] = {}
        self.holder = sampler_holder
        runner = type("R", (), {})()
        runner.model = type("M", (), {"load_weights": self._load})()
        worker = type("W", (), {"model_runner": runner})()
        executor = type("E", (), {"driver_worker": worker})()
        self.llm_engine = type("G", (), {"model_executor": executor})()

    def _load(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        if "load" not in self.events[-1:]:
            self.events.append("load")
        for name, t in weights:
            self.loaded[name] = t.clone()

    def wake_up(self, tags: list[str]) -> None:
        self.events.append("wake:" + ",".join(tags))

    def sleep(self, level: int) -> None:
        self.events.append(f"sleep:{level}")

    def reset_prefix_cache(self) -> None:
        self.events.append("reset")

    def generate(self, prompts: list[dict[str, Any]], sampling_params: Any, use_tqdm: bool) -> Any:
        self.events.append("generate")
        policy = self.holder["policy"]
        outs = []
        for p in prompts:
            ids = p["prompt_token_ids"]
            completions = []
            for _ in range(sampling_params["n"]):
                c = [5, 6, 7]
                lp = policy.token_logprobs([(ids, c)], grad=False)[0][0].tolist()
                steps = [{t: type("L", (), {"logprob": v})()} for t, v in zip(c, lp, strict=True)]
                completions.append(
                    type("O", (), {"token_ids": c, "logprobs": steps, "finish_reason": "length"})()
                )
            outs.append(type("Q", (), {"outputs": completions})())
        return outs


def test_colocated_engine_sleeps_through_the_update_and_wakes_weights_first(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(VLLMPolicy, "_sampling_params", lambda self, **kw: kw)
    holder: dict[str, Any] = {}
    llm = StubLLM(holder)
    s = dataclasses.replace(SETTINGS, vllm_mode="colocate", vllm_sleep=True, lora_r=4)
    policy = VLLMPolicy(s, str(tiny_model), llm=llm)
    holder["policy"] = policy
    (group,) = policy.generate([PROMPT], 2)
    assert llm.events == ["wake:kv_cache", "generate", "sleep:2"]
    policy.update([Scored(group[0], 1.0), Scored(group[1], -1.0)])
    # after the update: weights woken, loaded, prefix cache reset; then the next round
    policy.generate([PROMPT], 2)
    assert llm.events[3:] == [
        "wake:weights",
        "load",
        "reset",
        "wake:kv_cache",
        "generate",
        "sleep:2",
    ]
    q = policy.model.base_model.model.model.layers[0].self_attn.q_proj
    expected = q.base_layer.weight.float() + q.get_delta_weight("default").float()
    got = llm.loaded["model.layers.0.self_attn.q_proj.weight"]
    assert torch.allclose(got.float(), expected, atol=1e-6)
