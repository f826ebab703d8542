"""A `Policy` that samples with vLLM and learns with transformers (GPU only).

Training, the KL reference, checkpoints and the loss are `HFPolicy`'s; only sampling
moves to vLLM, and the trained weights are copied into vLLM after every update (and
after a resume) before the next generation:

- colocate: an in-process `vllm.LLM` on the same GPU (`vllm_gpu_memory_utilization`
  of its memory). Weights are loaded into the engine's model in place, as TRL's
  colocate mode does, which needs vLLM's `external_launcher` executor (the model lives
  in this process) and so a torch.distributed environment: one process, rank 0.
- server: a `trl vllm-serve` server at `vllm_url`, through TRL's `VLLMClient`
  (generation over HTTP, weights over its NCCL communicator).

vLLM reports the log-probability of each sampled token after temperature scaling
(`logprobs_mode="processed_logprobs"`), the distribution the token was drawn from; the
update recomputes pi_old with the trainer's own forward pass and logs the difference as
`sampler_kl`. Not run on a GPU in this repository's CI (no accelerator): the code
follows vLLM's documented LLM/SamplingParams API and TRL's colocate weight sync.
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
from hpcq.policy import Sample, Scored, UpdateStats
from hpcq.prompts import Message
from hpcq.train_settings import PolicySettings


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


class VLLMPolicy(HFPolicy):
    def __init__(self, settings: PolicySettings, model_path: str) -> None:
        super().__init__(settings, model_path)
        if not torch.cuda.is_available():
            raise RuntimeError("the vllm backend needs a CUDA GPU; use --backend hf on CPUs")
        self.llm: Any = None
        self.client: Any = None
        if settings.vllm_mode == "server":
            from trl.generation.vllm_client import VLLMClient

            self.client = VLLMClient(base_url=settings.vllm_url)
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
                distributed_executor_backend="external_launcher",
                logprobs_mode="processed_logprobs",
            )
        else:
            raise ValueError(f"vllm_mode {settings.vllm_mode!r}: choose colocate or server")
        self._synced_version = 0  # vLLM loaded the initial weights itself

    # --- sampling -------------------------------------------------------------------

    def generate(self, prompts: Sequence[Sequence[Message]], n: int) -> list[list[Sample]]:
        if self._synced_version != self.version:
            self.sync_weights()
        s = self.settings
        prompt_ids = [chat_ids(self.tokenizer, m, s.max_prompt_tokens) for m in prompts]
        if self.llm is not None:
            rows = self._generate_colocated(prompt_ids, n)
        else:
            rows = self._generate_server(prompt_ids, n)
        out = []
        for prompt, completions in zip(prompt_ids, rows, strict=True):
            group = []
            for ids, logps, finished in completions:
                cut, truncated = self._cut(ids)
                group.append(
                    Sample(
                        prompt_ids=tuple(prompt),
                        completion_ids=tuple(cut),
                        logprobs=tuple(logps[: len(cut)]),
                        text=self.tokenizer.decode(cut, skip_special_tokens=True),
                        truncated=truncated and not finished,
                        policy_version=self.version,
                    )
                )
            out.append(group)
        return out

    def _generate_colocated(
        self, prompt_ids: list[list[int]], n: int
    ) -> list[list[tuple[list[int], list[float], bool]]]:
        vllm = importlib.import_module("vllm")
        s = self.settings
        params = vllm.SamplingParams(
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

    def _generate_server(
        self, prompt_ids: list[list[int]], n: int
    ) -> list[list[tuple[list[int], list[float], bool]]]:
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
        rows = []
        for p in range(len(prompt_ids)):  # prompt-major: n completions per prompt
            group = []
            for k in range(p * n, (p + 1) * n):
                ids = list(completions[k])
                logps = [float(step[0]) if step[0] is not None else 0.0 for step in logprobs[k]]
                group.append((ids, logps, len(ids) < s.max_new_tokens))
            rows.append(group)
        return rows

    # --- weights --------------------------------------------------------------------

    def _named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The current weights under the base model's names (a LoRA adapter merged in)."""
        if self.settings.lora_r == 0:
            for name, p in self.model.named_parameters():
                yield name, p.data
            return
        self.model.merge_adapter()
        try:
            for name, p in self.model.base_model.model.named_parameters():
                if "lora_" in name:
                    continue
                yield name.replace(".base_layer", ""), p.data
        finally:
            self.model.unmerge_adapter()

    def sync_weights(self) -> None:
        if self.llm is not None:
            runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
            for name, tensor in self._named_weights():
                runner.model.load_weights([(name, tensor)])
            self.llm.reset_prefix_cache()
        else:
            weights = list(self._named_weights())
            meta = [(n, str(t.dtype).removeprefix("torch."), list(t.shape)) for n, t in weights]
            self.client.update_named_params(meta, iter(weights))
            self.client.reset_prefix_cache()
        self._synced_version = self.version

    def update(self, batch: Sequence[Scored]) -> UpdateStats:
        stats = super().update(batch)
        self.sync_weights()
        return stats

    def load(self, directory: Path) -> None:
        super().load(directory)
        self.sync_weights()
