"""The policy backends by name: `hf` (transformers) or `vllm` (generation on vLLM)."""

from __future__ import annotations

import importlib.util

from hpcq.errors import ConfigError
from hpcq.train.policy import Policy
from hpcq.train.settings import PolicySettings


def make_policy(settings: PolicySettings) -> Policy:
    if not settings.model:
        raise ConfigError("no model: give --model (a hub id or a directory)")
    if settings.backend == "vllm":
        import torch

        if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
            raise ConfigError(
                "--backend vllm needs vLLM (pip install -e '.[gpu]') and a CUDA GPU; "
                "on CPUs use --backend hf"
            )
        from bridges.vllm_policy import VLLMPolicy

        return VLLMPolicy(settings, settings.model)
    from bridges.hf_policy import HFPolicy

    return HFPolicy(settings, settings.model)


def device_memory_bytes(settings: PolicySettings) -> int:
    """Memory of the GPU the policy will train on; 0 on CPUs (nothing to check)."""
    import torch

    if settings.device == "cpu" or not torch.cuda.is_available():
        return 0
    device = torch.device(settings.device if settings.device != "auto" else "cuda")
    return int(torch.cuda.get_device_properties(device).total_memory)


def reseed(seed: int) -> None:
    """Seed every generator a policy samples with (torch's, CUDA's with it, Python's),
    so models loaded one after another sample from the same seed."""
    import random

    import torch

    torch.manual_seed(seed)
    random.seed(seed)
