"""`make bench-train`: where a GRPO step's time goes, JSON under bench/results/.

Per step: seconds generating, waiting for rewards, updating, and the share of the
step during which the CPU nodes were busy evaluating (sum of evaluation times over
slots x step time). The consumer runs with its result cache off, so every kernel is
really compiled and timed (the cache would hide the evaluation cost the benchmark is
about). On a GPU with vLLM installed it also measures generation tokens per second of
vLLM against transformers' generate, same model and prompts; elsewhere that part is
recorded as skipped with the reason.

    python bench/bench_train.py [--steps 3] [--group-size 8] [--prompts-per-step 2]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bridges.demo import Children, _delete_queues, ensure_broker  # noqa: E402
from hpcq import metrics  # noqa: E402
from hpcq.broker import DEFAULT_AMQP_URL  # noqa: E402
from hpcq.settings import load_settings  # noqa: E402


def generation_speed(model: str, prompts: int, n: int, max_new_tokens: int) -> dict[str, Any]:
    """Tokens per second of transformers' generate and of vLLM (GPU only)."""
    import torch

    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        return {"skipped": "needs vllm and a CUDA GPU"}
    from bridges.hf_policy import HFPolicy
    from bridges.vllm_policy import VLLMPolicy
    from hpcq.problems import load_problem
    from hpcq.prompts import DEFAULT_STAGE, build_prompt
    from hpcq.train_settings import PolicySettings

    batch = [build_prompt(load_problem("dgemm-256"), DEFAULT_STAGE)] * prompts
    out: dict[str, Any] = {}
    s = PolicySettings(max_new_tokens=max_new_tokens, vllm_gpu_memory_utilization=0.3)
    for name, make in (("transformers", HFPolicy), ("vllm", VLLMPolicy)):
        policy = make(s, model)
        policy.generate(batch[:1], 2)  # warm-up
        t0 = time.perf_counter()
        samples = policy.generate(batch, n)
        seconds = time.perf_counter() - t0
        tokens = sum(len(x.completion_ids) for g in samples for x in g)
        out[name] = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
        del policy
        torch.cuda.empty_cache()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--model", default="")
    p.add_argument("--amqp-url", default=os.environ.get("HPCQ_AMQP_URL", DEFAULT_AMQP_URL))
    args = p.parse_args()
    problem = ensure_broker(args.amqp_url)
    if problem is not None:
        print(f"bench-train: {problem}", file=sys.stderr)
        return 2
    from hpcq.cli_train import ensure_model, parser_with_training

    settings = load_settings(None)
    model = ensure_model(args.model, settings.cache_dir)
    run_id = time.strftime("bench-train-%Y%m%d-%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="hpcq-bench-train-"))
    (tmp / "engine.toml").write_text("[engine]\nuse_cache = false\n")
    children = Children()
    consumer = [sys.executable, "-m", "hpcq", "--config", str(tmp / "engine.toml"), "consumer"]
    consumer += ["--namespace", run_id, "--amqp-url", args.amqp_url]
    slots = max(1, len(os.sched_getaffinity(0)) - 1)
    try:
        children.start(consumer, tmp / "consumer.log")
        argv = ["producer", "--namespace", run_id, "--amqp-url", args.amqp_url]
        argv += ["--run-dir", str(tmp / "run"), "--name", run_id, "--model", model]
        argv += ["--train-config", str(REPO / "ops/configs/bootstrap-small.toml")]
        argv += ["--steps", str(args.steps), "--group-size", str(args.group_size)]
        argv += ["--prompts-per-step", str(args.prompts_per_step)]
        argv += ["--node-class", settings.node.name]
        parsed = parser_with_training().parse_args(argv)
        asyncio.run(parsed.func(parsed))
    finally:
        children.stop()
        asyncio.run(_delete_queues(args.amqp_url, run_id, run_id, settings.node.name))
    rows = metrics.read(tmp / "run")
    steps = []
    for r in rows:
        wall = r["time_generate_s"] + r["time_rewards_s"] + r["time_update_s"]
        steps.append(
            {
                "step": r["step"],
                "generate_s": r["time_generate_s"],
                "wait_rewards_s": r["time_rewards_s"],
                "update_s": r["time_update_s"],
                "step_s": wall,
                "cpu_nodes_busy_fraction": r["eval_busy_s"] / (slots * wall) if wall else 0.0,
                "samples": r["samples"],
            }
        )
    result = {
        "benchmark": "train",
        "run_id": run_id,
        "machine": {"platform": platform.platform(), "cores": len(os.sched_getaffinity(0))},
        "slots": slots,
        "model": model,
        "result_cache": False,
        "steps": steps,
        "mean": {
            k: statistics.fmean(s[k] for s in steps)
            for k in (
                "generate_s",
                "wait_rewards_s",
                "update_s",
                "step_s",
                "cpu_nodes_busy_fraction",
            )
        }
        if steps
        else {},
        "generation_speed": generation_speed(model, 4, args.group_size, 200),
    }
    out = REPO / "bench" / "results" / f"{run_id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["mean"], indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
