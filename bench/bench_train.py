"""`make bench-train`: where a GRPO step's time goes, synchronous against asynchronous
rollouts, JSON (and a text table, and a PNG when matplotlib is installed) under
bench/results/.

One consumer (result cache off, so every kernel is really compiled and timed) and, one
after the other from the same model and seed, a producer per mode: `sync`
(max_staleness 0, today's loop), `async-k2` and `async-k4` (max_staleness 1 and at most
2 or 4 groups sampled and not yet trained). With two or more cores the producer
(generation and training, one torch thread) is pinned to the first core and the
consumer to the others. Per step: seconds generating, waiting for rewards (the
generating side's idle time), updating, the step's wall time, the evaluation time per
slot of the kernels the step trained on, the staleness of its groups and its mean
reward. The summary compares the steady-state step time (step 1, the pipeline's fill,
left out) with max(generate + update, evaluate), the bound overlap can reach, and the
mean reward of the last 5 steps of each mode (the learning check: same steps, same
model, same seed).

On a GPU with vLLM installed it also measures generation tokens per second of vLLM
against transformers' generate; elsewhere that part is recorded as skipped.

    python bench/bench_train.py [--steps 12] [--group-size 8] [--prompts-per-step 2]
        [--modes sync,async-k2,async-k4] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bridges.demo import Children, _delete_queues, ensure_broker  # noqa: E402
from hpcq.cli.common import add_amqp_url_arg  # noqa: E402
from hpcq.eval.settings import load_settings  # noqa: E402
from hpcq.train import metrics  # noqa: E402


def generation_speed(model: str, prompts: int, n: int, max_new_tokens: int) -> dict[str, Any]:
    """Tokens per second of transformers' generate and of vLLM (GPU only)."""
    import torch

    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        return {"skipped": "needs vllm and a CUDA GPU"}
    from bridges.hf_policy import HFPolicy
    from bridges.vllm_policy import VLLMPolicy
    from hpcq.eval.problems import load_problem
    from hpcq.train.prompts import DEFAULT_STAGE, build_prompt
    from hpcq.train.settings import PolicySettings

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


MODES = {"sync": (0, 0), "async-k2": (1, 2), "async-k4": (1, 4)}
"""mode -> (max_staleness, max_in_flight)"""


def step_rows(rows: list[dict[str, Any]], slots: int) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        gen, wait, upd = r["time_generate_s"], r["time_rewards_s"], r["time_update_s"]
        wall = r.get("time_step_s") or gen + wait + upd
        out.append(
            {
                "step": r["step"],
                "generate_s": gen,
                "wait_rewards_s": wait,
                "update_s": upd,
                "step_s": wall,
                "evaluate_s": r["eval_busy_s"] / slots,
                "idle_fraction": wait / wall if wall else 0.0,
                "cpu_nodes_busy_fraction": r["eval_busy_s"] / (slots * wall) if wall else 0.0,
                "staleness": r.get("staleness", {}),
                "groups_stale": r.get("groups_stale", 0),
                "is_clip_frac": r.get("is_clip_frac", 0.0),
                "reward_mean": r["reward_mean"],
                "samples": r["samples"],
            }
        )
    return out


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the steady state (step 1 fills the pipeline) and the last-5 reward."""
    steady = steps[1:] or steps
    keys = ["generate_s", "wait_rewards_s", "update_s", "step_s", "evaluate_s"]
    keys += ["idle_fraction", "cpu_nodes_busy_fraction"]
    mean = {k: statistics.fmean(s[k] for s in steady) for k in keys}
    gen_upd = mean["generate_s"] + mean["update_s"]
    bound = max(gen_upd, mean["evaluate_s"])
    rewards = [s["reward_mean"] for s in steps[-5:] if s["reward_mean"] is not None]
    return {
        **mean,
        "generate_plus_update_s": gen_upd,
        "overlap_bound_s": bound,
        "step_over_bound": mean["step_s"] / bound if bound else None,
        "step_over_sum": mean["step_s"] / (gen_upd + mean["evaluate_s"]),
        "groups_stale": sum(s["groups_stale"] for s in steps),
        "reward_last5_mean": statistics.fmean(rewards) if rewards else None,
        "reward_last5_sem": statistics.stdev(rewards) / len(rewards) ** 0.5
        if len(rewards) > 1
        else None,
    }


def run_mode(
    mode: str, args: argparse.Namespace, model: str, base: Path, namespace: str, node: str
) -> list[dict[str, Any]]:
    from bridges.cli_train import parser_with_training

    staleness, in_flight = MODES[mode]
    run_dir = base / mode
    argv = ["producer", "--namespace", namespace, "--amqp-url", args.amqp_url]
    argv += ["--run-dir", str(run_dir), "--name", f"{namespace}-{mode}", "--model", model]
    argv += ["--train-config", str(REPO / "ops/configs/bootstrap-small.toml")]
    argv += ["--steps", str(args.steps), "--group-size", str(args.group_size)]
    argv += ["--prompts-per-step", str(args.prompts_per_step), "--node-class", node]
    argv += ["--max-staleness", str(staleness), "--max-in-flight", str(in_flight)]
    argv += ["--seed", str(args.seed)]
    parsed = parser_with_training().parse_args(argv)
    print(f"bench-train: {mode} ({args.steps} steps)", file=sys.stderr, flush=True)
    asyncio.run(parsed.func(parsed))
    return metrics.read(run_dir)


def comparison(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sync = summary.get("sync")
    out: dict[str, Any] = {}
    for mode, s in summary.items():
        if mode == "sync" or sync is None:
            continue
        r_a, r_s = s["reward_last5_mean"], sync["reward_last5_mean"]
        se = [x for x in (s["reward_last5_sem"], sync["reward_last5_sem"]) if x is not None]
        noise = 2 * sum(x * x for x in se) ** 0.5 if se else None
        out[mode] = {
            "step_time_vs_sync": s["step_s"] / sync["step_s"],
            "idle_fraction": s["idle_fraction"],
            "sync_idle_fraction": sync["idle_fraction"],
            "step_over_bound": s["step_over_bound"],
            "meets_1_15_bound": s["step_over_bound"] is not None and s["step_over_bound"] <= 1.15,
            "reward_last5_diff": None if r_a is None or r_s is None else r_a - r_s,
            "reward_noise_2se": noise,
        }
    return out


def write_figures(out: Path, steps: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Reward and step-time curves of every mode: a text table always, a PNG with
    matplotlib (the optional `plots` extra)."""
    lines = ["step " + " ".join(f"{m + ' reward':>16} {m + ' step_s':>16}" for m in steps)]
    for i in range(max(len(v) for v in steps.values())):
        cells = []
        for v in steps.values():
            r = v[i] if i < len(v) else None
            reward = "-" if r is None or r["reward_mean"] is None else f"{r['reward_mean']:.2f}"
            cells.append(f"{reward:>16} {'-' if r is None else format(r['step_s'], '.2f'):>16}")
        lines.append(f"{i + 1:4d} " + " ".join(cells))
    text = out.with_suffix(".curves.txt")
    text.write_text("\n".join(lines) + "\n")
    written = [str(text)]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, v in steps.items():
        xs = [r["step"] for r in v]
        ax1.plot(xs, [r["reward_mean"] for r in v], marker="o", ms=3, label=mode)
        ax2.plot(xs, [r["step_s"] for r in v], marker="o", ms=3, label=mode)
    ax1.set(xlabel="step", ylabel="mean reward", title="learning: same model, same seed")
    ax2.set(xlabel="step", ylabel="step wall time (s)", title="step time")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = out.with_suffix(".curves.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [*written, str(png)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--modes", default=",".join(MODES), help=f"some of {', '.join(MODES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="")
    add_amqp_url_arg(p)
    args = p.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        print(f"bench-train: --modes takes some of {', '.join(MODES)}", file=sys.stderr)
        return 2
    problem = ensure_broker(args.amqp_url)
    if problem is not None:
        print(f"bench-train: {problem}", file=sys.stderr)
        return 2
    from bridges.cli_train import ensure_model

    settings = load_settings(None)
    model = ensure_model(args.model, settings.cache_dir)
    run_id = time.strftime("bench-train-%Y%m%d-%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="hpcq-bench-train-"))
    (tmp / "engine.toml").write_text("[engine]\nuse_cache = false\n")
    cores = sorted(os.sched_getaffinity(0))
    producer_cores, consumer_cores = (cores[:1], cores[1:]) if len(cores) > 1 else (cores, cores)
    consumer = [sys.executable, "-m", "hpcq", "--config", str(tmp / "engine.toml"), "consumer"]
    consumer += ["--namespace", run_id, "--amqp-url", args.amqp_url]
    if len(cores) > 1 and shutil.which("taskset"):
        consumer = ["taskset", "-c", ",".join(map(str, consumer_cores)), *consumer]
    # one slot per consumer core, but a core is kept for compiling when there are two
    slots = max(1, len(consumer_cores) - 1) if len(consumer_cores) > 1 else 1
    children = Children()
    raw: dict[str, list[dict[str, Any]]] = {}
    try:
        children.start(consumer, tmp / "consumer.log")
        os.sched_setaffinity(0, producer_cores)  # generation and training on one core
        for mode in modes:
            raw[mode] = run_mode(mode, args, model, tmp, run_id, settings.node.name)
    finally:
        os.sched_setaffinity(0, cores)
        children.stop()
        for mode in modes:
            try:
                asyncio.run(
                    _delete_queues(args.amqp_url, run_id, f"{run_id}-{mode}", settings.node.name)
                )
            except Exception as exc:  # best effort: unused queues expire by themselves
                print(f"bench-train: queues of {mode} not removed: {exc!r}", file=sys.stderr)
    steps = {mode: step_rows(rows, slots) for mode, rows in raw.items()}
    summary = {mode: summarize(v) for mode, v in steps.items() if v}
    result = {
        "benchmark": "train",
        "run_id": run_id,
        "machine": {
            "platform": platform.platform(),
            "cores": len(cores),
            "producer_cores": producer_cores,
            "consumer_cores": consumer_cores,
            "load_avg_1m_at_end": os.getloadavg()[0],
        },
        "slots": slots,
        "model": model,
        "seed": args.seed,
        "result_cache": False,
        "modes": {m: {"max_staleness": MODES[m][0], "max_in_flight": MODES[m][1]} for m in modes},
        "summary": summary,
        "async_vs_sync": comparison(summary),
        "steps": steps,
        "generation_speed": generation_speed(model, 4, args.group_size, 200),
    }
    out = REPO / "bench" / "results" / f"{run_id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result["figures"] = write_figures(out, steps)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"summary": summary, "async_vs_sync": result["async_vs_sync"]}, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
