"""The GPU check of docs/training.md: does config 1 (LoRA, bf16, one GPU) fit and run?

For each model shape (Qwen2.5-Coder-1.5B, then -14B, from their published configs with
random weights: no hub, no network), with hpcq's own HFPolicy (chunked log-probs,
truncated importance sampling, LoRA reference):

    1. sample G completions of N tokens per prompt through transformers' generate
    2. one GRPO update on them with a synthetic reward (a standardized random score)
    3. print peak GPU memory of each phase against hpcq.train.memory_plan's prediction,
       generation tokens/s and the update's wall time, and write them as JSON

Needs only torch, transformers, peft and accelerate. Runs on the CPU with
`--shapes tiny --device cpu` (the test suite does, to keep it working).

    bash ops/gpu/check.sh                      # on a GPU machine: 1.5B then 14B
    python ops/gpu/check.py --shapes tiny --device cpu --new-tokens 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bridges.hf_policy import HFPolicy  # noqa: E402
from hpcq.train.memory_plan import GIB, KNOWN, Layout, ModelShape, plan  # noqa: E402
from hpcq.train.policy import Sample, Scored  # noqa: E402
from hpcq.train.settings import TrainSettings, load_train_settings  # noqa: E402

SHAPES = {
    "1.5b": KNOWN["Qwen/Qwen2.5-Coder-1.5B-Instruct"],
    "14b": KNOWN["Qwen/Qwen2.5-Coder-14B-Instruct"],
    "tiny": ModelShape("tiny", 64, 2, 4, 2, 192, 512, True),
}


def build_model(shape: ModelShape, dtype: torch.dtype, device: torch.device) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        intermediate_size=shape.intermediate,
        vocab_size=shape.vocab,
        tie_word_embeddings=shape.tied,
        max_position_embeddings=32768,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


def settings_for(args: argparse.Namespace) -> TrainSettings:
    return load_train_settings(
        ROOT / "ops/configs/qwen2.5-coder-14b-h200.toml",
        policy={
            "backend": "hf",
            "device": args.device,
            "dtype": "bfloat16" if args.device != "cpu" else "float32",
            "max_new_tokens": args.new_tokens,
            "max_prompt_tokens": args.prompt_tokens,
            "micro_batch": args.micro_batch,
        },
        loop={"group_size": args.group, "prompts_per_step": 1},
    )


def peak_bytes(device: torch.device) -> int:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def check(shape: ModelShape, args: argparse.Namespace) -> dict[str, Any]:
    train = settings_for(args)
    s = train.policy
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 0
    predicted = plan(shape, train, Layout(1, gpu))
    print(predicted.table(), flush=True)
    t0 = time.monotonic()
    model = build_model(shape, getattr(torch, s.dtype), device)
    tokenizer = types.SimpleNamespace(pad_token_id=0, eos_token_id=shape.vocab - 1)
    policy = HFPolicy(s, "random-weights", model=model, tokenizer=tokenizer)
    built_s = time.monotonic() - t0

    reset_peak(device)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(1, shape.vocab - 1, (args.prompt_tokens,), generator=g).tolist()
    policy.model.eval()  # peft leaves it in train mode, where checkpointing disables the cache
    t0 = time.monotonic()
    with torch.no_grad():
        out = policy.model.generate(
            input_ids=torch.tensor([prompt], device=device),
            do_sample=True,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            num_return_sequences=args.group,
            pad_token_id=0,
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    gen_s = time.monotonic() - t0
    completions = [row[len(prompt) :].tolist() for row in out]
    logps = []
    for k in range(0, len(completions), s.micro_batch):
        part = completions[k : k + s.micro_batch]
        lp = policy.token_logprobs([(prompt, c) for c in part], grad=False)[0]
        logps += [lp[i, : len(c)].tolist() for i, c in enumerate(part)]
    generate_peak = peak_bytes(device)

    rewards = torch.randn(len(completions), generator=g).tolist()
    mean, std = statistics.fmean(rewards), statistics.pstdev(rewards) or 1.0
    batch = [
        Scored(
            Sample(tuple(prompt), tuple(c), tuple(lp), "", False, 0),
            (r - mean) / std,
        )
        for c, lp, r in zip(completions, logps, rewards, strict=True)
    ]
    reset_peak(device)
    t0 = time.monotonic()
    stats = policy.update(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    update_s = time.monotonic() - t0
    update_peak = peak_bytes(device)
    tokens = sum(len(c) for c in completions)
    result = {
        "shape": shape.name,
        "params_b": shape.params() / 1e9,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "group": args.group,
        "new_tokens": args.new_tokens,
        "build_s": built_s,
        "generate_s": gen_s,
        "generate_tokens_per_s": tokens / gen_s,
        "update_s": update_s,
        "peak_generate_gib": generate_peak / GIB,
        "peak_update_gib": update_peak / GIB,
        "predicted_generate_gib": predicted.generate_peak / GIB,
        "predicted_update_gib": predicted.update_peak / GIB,
        "loss": stats.loss,
        "grad_norm": stats.grad_norm,
        "sampler_kl": stats.sampler_kl,
        "is_weight_mean": stats.is_weight_mean,
    }
    print(json.dumps(result, indent=2), flush=True)
    del policy, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="1.5b,14b", help="comma-separated: 1.5b, 14b, tiny")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--group", type=int, default=8, help="G completions")
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for check.json")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --shapes tiny", file=sys.stderr)
        return 2
    results = []
    for name in args.shapes.split(","):
        shape = SHAPES[name.strip()]
        results.append(dataclasses.asdict(shape) | check(shape, args))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "check.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
