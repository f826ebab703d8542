"""A `Policy` that samples with vLLM and learns with transformers (GPU only).

Training, the KL reference, checkpoints and the loss are `HFPolicy`'s; only sampling
moves to vLLM, and the trained weights are copied into vLLM after every update (and
after a resume) before the next generation:

- colocate: an in-process `vllm.LLM` on the same GPU (`vllm_gpu_memory_utilization`
  of its memory). Weights are loaded into the engine's model in place, as TRL's
  colocate mode does, which needs vLLM's `external_launcher` executor (the model lives
  in this process) and so a torch.distributed environment: one process, rank 0. With
  `vllm_sleep` the engine sleeps (level 2: weights and KV cache freed) while the
  trainer runs and is woken, weights first, before the next generation.
- server: a `vllm serve` server at `vllm_url`, through TRL's `VLLMClient`: generation
  over HTTP, weights over vLLM's NCCL weight-transfer engine. Start the server as
  docs/training.md shows (`--weight-transfer-config '{"backend": "nccl"}'
  --logprobs-mode processed_logprobs`).

Weights sent to vLLM are the effective weights W + delta W of every LoRA layer,
computed out of place in fp32 and cast to the base dtype: the trainer's own base
weights are never merged and unmerged, which in bf16 would drift them (and with them
the KL reference) a rounding error per update.

vLLM reports the log-probability of each sampled token after temperature scaling
(`logprobs_mode="processed_logprobs"`), the distribution the token was drawn from; the
update recomputes pi_old with the trainer's own forward pass, weights every token by
min(pi_old / mu, tis_cap) (bridges/grpo_loss.py) and logs the difference as
`sampler_kl`. The weight and log-prob plumbing is tested on the CPU with a client
stub (tests/train/test_weight_sync.py); vLLM itself runs on GPU machines only.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from bridges.hf_policy import HFPolicy, chat_ids
from hpcq.train.policy import Sample, Scored, UpdateStats
from hpcq.train.prompts import Message
from hpcq.train.settings import PolicySettings

Completion = tuple[list[int], list[float], bool]  # token ids, their log-probs, finished


def _single_process_distributed_env() -> None:
    """vLLM's external_launcher executor joins torch.distributed: one process, rank 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        os.environ.setdefault(key, value)


def effective_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights vLLM must hold, under the base model's parameter names.

    Without an adapter: the parameters themselves. With a peft LoRA adapter: every
    adapted layer's W + delta W (peft's `get_delta_weight`, i.e. scaling x B @ A),
    summed in fp32 and cast to W's dtype, out of place; the adapter's own tensors are
    not sent. One tensor is built at a time, so the extra memory is one layer's."""
    if not hasattr(model, "peft_config"):
        for name, p in model.named_parameters():
            yield name, p.detach()
        return
    adapter = model.active_adapter
    inner = model.base_model.model
    deltas: dict[str, Any] = {}
    for module_name, module in inner.named_modules():
        if hasattr(module, "base_layer") and adapter in getattr(module, "lora_A", {}):
            deltas[f"{module_name}.base_layer.weight"] = module
    for name, p in inner.named_parameters():
        if "lora_" in name:
            continue
        layer = deltas.get(name)
        if layer is None:
            yield name.replace(".base_layer", ""), p.detach()
            continue
        merged = p.detach().float() + layer.get_delta_weight(adapter).detach().float()
        yield name.replace(".base_layer", ""), merged.to(p.dtype)


def weight_metadata(model: Any) -> list[tuple[str, str, list[int]]]:
    """(name, vLLM dtype name, shape) of every tensor `effective_weights` yields, in
    order, without computing any: the server must know them before the first arrives."""
    out = []
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        out.append((name, str(p.dtype).removeprefix("torch."), list(p.shape)))
    return out


def sampled_logprobs(ids: Sequence[int], steps: Sequence[Any], token_ids: Any) -> list[float]:
    """The sampled token's log-prob at each step of a server completion.

    TRL's client returns, per step, log-probs sorted by probability with their token ids
    beside them; the sampled token is not always the first (it need not be the most
    likely), so it is found by id. A step without one is an error, not a zero."""
    out = []
    for k, (tok, row) in enumerate(zip(ids, steps, strict=True)):
        row_ids = token_ids[k] if token_ids is not None else [tok]
        try:
            value = row[list(row_ids).index(tok)]
        except ValueError as e:
            raise RuntimeError(f"the vLLM server sent no log-prob for token {k} ({tok})") from e
        if value is None:
            raise RuntimeError(f"the vLLM server sent a NaN log-prob for token {k} ({tok})")
        out.append(float(value))
    return out


class VLLMPolicy(HFPolicy):
    def __init__(
        self, settings: PolicySettings, model_path: str, *, client: Any = None, llm: Any = None
    ) -> None:
        """`client` (server mode) or `llm` (colocate): ready VLLMClient- or vllm.LLM-like
        objects instead of building them; the CPU tests pass stubs."""
        super().__init__(settings, model_path)
        self.llm: Any = llm
        self.client: Any = client
        self._asleep = False
        if client is not None or llm is not None:
            pass
        elif not torch.cuda.is_available():
            raise RuntimeError("the vllm backend needs a CUDA GPU; use --backend hf on CPUs")
        elif settings.vllm_mode == "server":
            from trl.generation.vllm_client import VLLMClient

            self.client = VLLMClient(
                base_url=settings.vllm_url, connection_timeout=settings.vllm_server_timeout_s
            )
            self.client.init_communicator(device=self.device)
        elif settings.vllm_mode == "colocate":
            vllm = importlib.import_module("vllm")  # GPU machines only: no stubs here
            _single_process_distributed_env()
            self.llm = vllm.LLM(
                model=model_path,
                dtype=settings.dtype,
                gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
                max_model_len=settings.max_prompt_tokens + settings.max_new_tokens,
                seed=settings.seed,
                enable_sleep_mode=settings.vllm_sleep,
                distributed_executor_backend="external_launcher",
                logprobs_mode="processed_logprobs",
            )
        else:
            raise ValueError(f"vllm_mode {settings.vllm_mode!r}: choose colocate or server")
        self._metadata = weight_metadata(self.model)
        self._synced_version = 0  # vLLM loaded the initial weights itself

    # --- sampling -------------------------------------------------------------------

    def generate(self, prompts: Sequence[Sequence[Message]], n: int) -> list[list[Sample]]:
        if self._synced_version != self.version or self._asleep:
            self.sync_weights()
        s = self.settings
        prompt_ids = [chat_ids(self.tokenizer, m, s.max_prompt_tokens) for m in prompts]
        if self.llm is not None:
            if s.vllm_sleep:
                self.llm.wake_up(tags=["kv_cache"])
            rows = self._generate_colocated(prompt_ids, n)
            if s.vllm_sleep:  # level 2 drops weights and KV cache: the trainer gets them
                self.llm.sleep(level=2)
                self._asleep = True
        else:
            rows = self._generate_server(prompt_ids, n)
        return [
            [self._sample(prompt, c) for c in completions]
            for prompt, completions in zip(prompt_ids, rows, strict=True)
        ]

    def _sample(self, prompt: list[int], completion: Completion) -> Sample:
        ids, logps, finished = completion
        cut, truncated = self._cut(ids)
        return Sample(
            prompt_ids=tuple(prompt),
            completion_ids=tuple(cut),
            logprobs=tuple(logps[: len(cut)]),
            text=self.tokenizer.decode(cut, skip_special_tokens=True),
            truncated=truncated and not finished,
            policy_version=self.version,
        )

    def _sampling_params(self, **kw: Any) -> Any:
        return importlib.import_module("vllm").SamplingParams(**kw)

    def _generate_colocated(self, prompt_ids: list[list[int]], n: int) -> list[list[Completion]]:
        s = self.settings
        params = self._sampling_params(
            n=n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_new_tokens,
            logprobs=0,  # only the sampled token's log-probability
        )
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids],
            sampling_params=params,
            use_tqdm=False,
        )
        rows = []
        for request in outputs:
            group = []
            for o in request.outputs:
                ids = list(o.token_ids)
                logps = [float(step[t].logprob) for step, t in zip(o.logprobs, ids, strict=True)]
                group.append((ids, logps, o.finish_reason == "stop"))
            rows.append(group)
        return rows

    def _generate_server(self, prompt_ids: list[list[int]], n: int) -> list[list[Completion]]:
        s = self.settings
        got = self.client.generate(
            prompts=prompt_ids,
            n=n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_new_tokens,
            logprobs=0,
        )
        completions, logprobs = got["completion_ids"], got["logprobs"]
        token_ids = got.get("logprob_token_ids")
        rows = []
        for p in range(len(prompt_ids)):  # prompt-major: n completions per prompt
            group = []
            for k in range(p * n, (p + 1) * n):
                ids = list(completions[k])
                row_ids = token_ids[k] if token_ids is not None else None
                group.append(
                    (ids, sampled_logprobs(ids, logprobs[k], row_ids), len(ids) < s.max_new_tokens)
                )
            rows.append(group)
        return rows

    # --- weights --------------------------------------------------------------------

    @torch.no_grad()
    def sync_weights(self) -> None:
        if self.llm is not None:
            if self._asleep:
                self.llm.wake_up(tags=["weights"])
            model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
            for name, tensor in effective_weights(self.model):
                model.load_weights([(name, tensor)])
            self.llm.reset_prefix_cache()
        else:
            with self.client.weight_update():
                self.client.update_named_params(self._metadata, effective_weights(self.model))
            self.client.reset_prefix_cache()
        self._asleep = False
        self._synced_version = self.version

    def update(self, batch: Sequence[Scored]) -> UpdateStats:
        stats = super().update(batch)
        self.sync_weights()
        return stats

    def load(self, directory: Path) -> None:
        super().load(directory)
        self.sync_weights()
