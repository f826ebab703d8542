"""The memory table: its counts checked against a real (small) model, its estimates of
activations against torch's saved tensors, and its verdicts on the shipped configs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from hpcq.errors import ConfigError
from hpcq.train.memory_plan import GIB, KNOWN, Layout, plan, shape_of
from hpcq.train.settings import load_train_settings

from .conftest import needs_torch

ROOT = Path(__file__).resolve().parents[2]
H200 = ROOT / "ops/configs/qwen2.5-coder-14b-h200.toml"
NODE8 = ROOT / "ops/configs/qwen2.5-coder-14b-8gpu.toml"
Q14 = "Qwen/Qwen2.5-Coder-14B-Instruct"


def test_the_one_gpu_config_fits_an_h200_and_the_node_config_fits_80_gb() -> None:
    one = plan(KNOWN[Q14], load_train_settings(H200), Layout(1, int(141 * GIB)))
    assert not one.problems and one.peak < 0.92 * 141 * GIB
    assert 14.5e9 < KNOWN[Q14].params() < 15e9  # Qwen2.5-14B: 14.7 B
    node = plan(KNOWN[Q14], load_train_settings(NODE8), Layout(7, 80 * GIB))
    assert not node.problems, node.table()
    rows = {r.term: r.bytes for r in node.rows}
    # fp32 master weights, gradients and Adam moments, sharded 7 ways: 16 bytes x P / 7
    p = KNOWN[Q14].params()
    assert rows["optimizer"] + rows["gradients"] == pytest.approx(12 * (p // 7), rel=1e-6)


def test_configs_that_cannot_fit_are_refused_with_the_fix() -> None:
    train = load_train_settings(NODE8)  # full fine-tune, fp32: 16 bytes a parameter
    with pytest.raises(ConfigError, match="use a LoRA adapter"):
        plan(KNOWN[Q14], train, Layout(1, int(141 * GIB))).check()
    bf16 = load_train_settings(H200, policy={"lora_r": 0})
    refused = plan(KNOWN[Q14], bf16, Layout(1, 0))  # no device: still refused
    assert any("no fp32 master weights" in p for p in refused.problems)
    starved = load_train_settings(H200, policy={"vllm_gpu_memory_utilization": 0.2})
    refused = plan(KNOWN[Q14], starved, Layout(1, int(141 * GIB)))
    assert any("raise vllm_gpu_memory_utilization" in p for p in refused.problems)
    awake = load_train_settings(H200, policy={"vllm_sleep": False, "micro_batch": 16})
    refused = plan(KNOWN[Q14], awake, Layout(1, int(141 * GIB)))
    assert any("vllm_sleep = true" in p for p in refused.problems), refused.table()


def test_cli_prints_the_table_or_refuses() -> None:
    run = [sys.executable, "-m", "hpcq", "memory-plan", "--model", Q14]
    ok = subprocess.run([*run, "--config", str(H200), "--gpu-gib", "141"], capture_output=True)
    assert ok.returncode == 0 and b"peak" in ok.stdout and b"REFUSED" not in ok.stdout
    bad = subprocess.run([*run, "--config", str(NODE8), "--gpu-gib", "141"], capture_output=True)
    assert bad.returncode == 2 and b"use a LoRA adapter" in bad.stderr
    unknown = subprocess.run([*run[:-1], "no/such-model"], capture_output=True)
    assert unknown.returncode == 2 and b"not a known hub id" in unknown.stderr


def test_parameter_counts_match_the_built_model(tiny_model: Path) -> None:
    needs_torch()
    from bridges.hf_policy import HFPolicy

    shape = shape_of(str(tiny_model))
    assert shape is not None
    full = load_train_settings(None, policy={"model": str(tiny_model), "threads": 1})
    policy = HFPolicy(full.policy, str(tiny_model))
    assert shape.params() == sum(p.numel() for p in policy.model.parameters())
    lora = dataclasses.replace(full.policy, lora_r=4)
    adapted = HFPolicy(lora, str(tiny_model))
    trainable = sum(p.numel() for p in adapted.model.parameters() if p.requires_grad)
    assert shape.lora_params(4, lora.lora_targets) == trainable


@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_estimate_against_saved_tensors(tiny_model: Path, checkpointing: bool) -> None:
    """What autograd keeps for the backward pass, summed over distinct tensors, against
    the plan's activation term for the same B and T (fp32 on the CPU)."""
    needs_torch()
    import torch

    from bridges.hf_policy import HFPolicy

    shape = shape_of(str(tiny_model))
    assert shape is not None
    train = load_train_settings(
        None,
        policy={
            "model": str(tiny_model),
            "threads": 1,
            "micro_batch": 4,
            "max_prompt_tokens": 96,
            "max_new_tokens": 160,
            "gradient_checkpointing": checkpointing,
        },
    )
    policy = HFPolicy(train.policy, str(tiny_model))
    policy.model.train()
    g = torch.Generator().manual_seed(0)
    pairs = [
        (
            torch.randint(5, 200, (96,), generator=g).tolist(),
            torch.randint(5, 200, (160,), generator=g).tolist(),
        )
        for _ in range(4)
    ]
    saved: dict[tuple[int, int], int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        saved[(t.untyped_storage().data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        logp, _, _ = policy.token_logprobs(pairs, grad=True)
    measured = sum(saved.values()) - sum(p.numel() * 4 for p in policy.model.parameters())
    rows = {r.term: r.bytes for r in plan(shape, train, Layout()).rows}
    predicted = rows["activations"]
    if checkpointing:  # the layer recomputed in the backward pass is not saved in forward
        plain = dataclasses.replace(train.policy, gradient_checkpointing=False)
        no_ckpt = plan(shape, dataclasses.replace(train, policy=plain), Layout()).rows
        predicted -= next(r.bytes for r in no_ckpt if r.term == "activations") // shape.layers
    assert 0.6 < measured / predicted < 1.6, (measured, predicted)
    logp.sum().backward()  # the graph the estimate describes is a real one


def test_the_gpu_check_runs_on_the_cpu_with_a_tiny_shape(tmp_path: Path) -> None:
    """ops/gpu/check.py, the script a lent GPU runs, kept working: tiny shape, CPU."""
    needs_torch()
    import json

    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "ops/gpu/check.py"),
            "--shapes",
            "tiny",
            "--device",
            "cpu",
            "--new-tokens",
            "8",
            "--group",
            "4",
            "--prompt-tokens",
            "16",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (result,) = json.loads((tmp_path / "check.json").read_text())
    assert result["generate_tokens_per_s"] > 0 and result["update_s"] > 0
    assert result["grad_norm"] > 0 and result["is_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    assert "memory plan per GPU" in run.stdout


def test_the_fsdp_launch_config_is_one_accelerate_reads() -> None:
    needs_torch()
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(ROOT / "ops/configs/accelerate/fsdp-7gpu.yaml"))
    assert str(cfg.distributed_type).endswith("FSDP") and cfg.num_processes == 7
    assert cfg.mixed_precision == "bf16" and cfg.fsdp_config["fsdp_version"] == 2
    train = load_train_settings(NODE8)
    assert train.policy.dtype == "float32" and train.policy.gradient_checkpointing
