"""GRPO with TRL's GRPOTrainer, rewarded by hpcq's CPU nodes.

    python -m bridges.trl_train --config TRAIN.toml --run-dir DIR [--stages fixed|sqd]
    torchrun --nproc_per_node 2 -m bridges.trl_train ...        # 2 CPU processes (gloo)
    accelerate launch --num_processes 2 -m bridges.trl_train ...  # 2 GPUs

The same training TOML as `hpcq producer` (`[policy]`, `[loop]`, `[advantage]`,
`[reward]`) becomes a `GRPOConfig`; the reward is `bridges.trl_reward.PipelineReward`
(one producer per process), the prompts `bridges.trl_dataset.staged_prompts` (the SQD
controller's current stages with `--stages sqd`). The run directory gets what the
producer's gets: `config.json`, one `metrics.jsonl` line per generation step in the
same format (`hpcq.train.metrics.StepMetrics`), and at the end `report.md` and `curves.png`
(`hpcq.train.report`); TRL's own checkpoints go to `DIR/trl/`, every `checkpoint_every`
steps and at the end, and a rerun with the same `--run-dir` resumes from the newest.

Batch shape: a step is `prompts_per_step` groups of `group_size`, split evenly over the
processes (each generates whole groups: `prompts_per_step` must be a multiple of the
process count); `micro_batch` bounds the sequences of one forward/backward pass.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from bridges.trl_reward import PipelineReward, ScoredGroup
from hpcq.errors import ConfigError, HpcqError
from hpcq.train import metrics
from hpcq.train import report as run_report
from hpcq.train.metrics import StepMetrics
from hpcq.train.rollout import member_figures
from hpcq.train.settings import TrainSettings, load_train_settings, record_run

STEP_DIR = re.compile(r"^checkpoint-(\d+)$")


def batch_shape(train: TrainSettings, processes: int) -> tuple[int, int]:
    """(per_device_train_batch_size, gradient_accumulation_steps) for one step of
    `prompts_per_step` x `group_size` samples over `processes`."""
    loop = train.loop
    if processes < 1 or loop.prompts_per_step % processes:
        raise ConfigError(
            f"[loop] prompts_per_step = {loop.prompts_per_step} over {processes} processes: "
            "each process generates whole groups, so use a multiple of the process count"
        )
    per_process = loop.prompts_per_step // processes * loop.group_size
    limit = min(per_process, train.policy.micro_batch)
    micro = max(d for d in range(1, limit + 1) if per_process % d == 0)
    return micro, per_process // micro


def grpo_config(train: TrainSettings, run_dir: Path, processes: int) -> Any:
    """The GRPOConfig that trains like `hpcq producer` with the same settings."""
    import torch
    from trl.trainer.grpo_config import GRPOConfig

    p, loop = train.policy, train.loop
    micro, accumulate = batch_shape(train, processes)
    cpu = p.device == "cpu" or (p.device == "auto" and not torch.cuda.is_available())
    extra: dict[str, Any] = {}
    if p.gradient_checkpointing:  # only when asked: passing the flag at all warns in transformers 5
        extra["gradient_checkpointing"] = True
    if p.backend == "vllm":
        extra |= {
            "use_vllm": True,
            "vllm_mode": p.vllm_mode,
            "vllm_server_base_url": p.vllm_url if p.vllm_mode == "server" else None,
            "vllm_server_timeout": p.vllm_server_timeout_s,
            "vllm_gpu_memory_utilization": p.vllm_gpu_memory_utilization,
            "vllm_enable_sleep_mode": p.vllm_sleep,
            # Our truncated IS: per token, min(pi_old / mu, tis_cap); 0 turns it off.
            "vllm_importance_sampling_correction": p.tis_cap > 0,
            "vllm_importance_sampling_mode": "token_truncate",
            "vllm_importance_sampling_clip_max": p.tis_cap or None,
        }
    return GRPOConfig(
        output_dir=str(run_dir / "trl"),
        max_steps=loop.steps * p.epochs,  # one generation per `epochs` optimizer steps
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulate,
        num_generations=loop.group_size,
        num_iterations=p.epochs,
        learning_rate=p.lr,
        lr_scheduler_type="constant",  # the producer's AdamW has no schedule either
        weight_decay=p.weight_decay,
        max_grad_norm=p.max_grad_norm,
        beta=p.beta,
        epsilon=p.clip_low,
        epsilon_high=p.clip_high,
        loss_type=p.loss_type,
        scale_rewards=train.advantage.scale,
        mask_truncated_completions=p.mask_truncated,
        max_completion_length=p.max_new_tokens,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=0,
        # GPUs compute in bf16: a float32 model (config 2's fp32 master weights under
        # FSDP) trains in mixed precision, a bfloat16 one in pure bf16. CPUs: as loaded.
        bf16=not cpu and p.dtype in ("bfloat16", "float32"),
        use_cpu=cpu,
        seed=p.seed,
        logging_steps=1,  # one metrics line per step needs TRL's figures every step
        report_to="none",
        save_strategy="steps",
        save_steps=loop.checkpoint_every,
        save_total_limit=loop.keep_checkpoints,
        disable_tqdm=True,
        **extra,
    )


def step_metrics(
    step: int, groups: Sequence[ScoredGroup], logs: dict[str, float], times: Sequence[float]
) -> StepMetrics:
    """One `metrics.jsonl` line, aggregated like `hpcq.train.loop`'s: rewards and statuses
    from the pipeline's members (every process's), the update's figures from TRL's log.
    `times`: (generate, rewards, update) seconds."""
    reasons = Counter(g.dropped for g in groups if g.dropped)
    figures = member_figures([g.members for g in groups], reasons)

    def log(key: str) -> float:
        value = logs.get(key)
        return float(value) if value is not None else 0.0

    return StepMetrics(
        step=step,
        policy_version=step,  # optimizer steps done after this one
        **figures,
        kl=log("kl"),
        clip_low=log("clip_ratio/low_mean"),
        clip_high=log("clip_ratio/high_mean"),
        entropy=log("entropy"),
        loss=log("loss"),
        grad_norm=log("grad_norm"),
        completion_tokens_mean=log("completions/mean_length"),
        truncated_fraction=log("completions/clipped_ratio"),
        resample_rounds=0,  # TRL has no dynamic sampling: tied groups are masked, not replaced
        time_generate_s=times[0],
        time_rewards_s=times[1],
        time_update_s=times[2],
        wall_time=time.time(),
        sampler_kl=log("sampling/sampling_logp_difference/mean"),
        time_step_s=sum(times),
        idle_fraction=times[1] / sum(times) if sum(times) > 0 else 0.0,
        staleness={"0": len(groups)},  # synchronous: every group sampled by the current policy
    )


def metrics_callback(reward: PipelineReward, run_dir: Path) -> Any:
    """A TrainerCallback appending one `metrics.jsonl` line per generation step: after a
    step, every process hands its scored groups to the main one (a collective, so
    every process runs it), which writes the line when TRL logs the step's figures."""
    from accelerate.utils import gather_object  # type: ignore[import-untyped]
    from transformers import TrainerCallback

    class RunMetrics(TrainerCallback):
        def __init__(self) -> None:
            self.step_began = time.monotonic()
            self.pending: tuple[int, list[ScoredGroup], tuple[float, float, float]] | None = None

        def on_step_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            self.step_began = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            mine = reward.take_scored()
            times = (0.0, 0.0, time.monotonic() - self.step_began)
            if mine:  # the process's own clock: generation, then rewards, then update
                began, done = mine[0].started, mine[0].finished
                times = (began - self.step_began, done - began, time.monotonic() - done)
            groups: list[ScoredGroup] = gather_object(mine)
            if groups and state.is_world_process_zero:
                self.pending = (state.global_step, groups, times)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if self.pending is not None and logs and "loss" in logs:
                self._write(logs)

        def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if self.pending is not None:  # a step TRL did not log: keep its rewards
                self._write({})

        def _write(self, logs: dict[str, float]) -> None:
            assert self.pending is not None
            step, groups, times = self.pending
            metrics.append(run_dir, step_metrics(step, groups, logs, times))
            self.pending = None

    return RunMetrics()


def run_id_of(run_dir: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", run_dir.resolve().name).lstrip(".-") or "run"


def last_checkpoint(out_dir: Path) -> tuple[Path, int] | None:
    found = [
        (int(m.group(1)), d)
        for d in (out_dir.iterdir() if out_dir.is_dir() else ())
        if (m := STEP_DIR.match(d.name)) and (d / "trainer_state.json").is_file()
    ]
    if not found:
        return None
    step, path = max(found)
    return path, step


def parser() -> argparse.ArgumentParser:
    from bridges.cli_train import add_stage_args
    from hpcq.cli.common import add_broker_args

    p = argparse.ArgumentParser(prog="python -m bridges.trl_train", description=__doc__)
    add_broker_args(p)
    p.add_argument("--config", default=None, help="training TOML (as `hpcq producer --config`)")
    p.add_argument("--run-dir", required=True, help="metrics, report, TRL checkpoints")
    p.add_argument("--model", default="", help="hub id or directory; default: bootstrap model")
    p.add_argument("--problems", default="dgemm-256", help="comma-separated problem ids")
    p.add_argument("--allow-held-out", action="store_true", help="train on held-out problems")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--group-size", type=int, default=None)
    p.add_argument("--prompts-per-step", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--node-class", default=None, help="default: this machine's [node] name")
    p.add_argument("--name", default=None, help="producer name prefix (default trl-<run id>)")
    add_stage_args(p)
    p.add_argument(
        "--cache-dir",
        default=os.environ.get("HPCQ_CACHE_DIR"),
        help="where the bootstrap model is (built first if missing)",
    )
    return p


def _settings(args: argparse.Namespace) -> TrainSettings:
    def given(**values: Any) -> dict[str, Any]:
        return {k: v for k, v in values.items() if v is not None}

    return load_train_settings(
        Path(args.config) if args.config else None,
        policy=given(model=args.model or None, max_new_tokens=args.max_new_tokens),
        loop=given(
            steps=args.steps, group_size=args.group_size, prompts_per_step=args.prompts_per_step
        ),
    )


def _report(run_dir: Path, run_id: str, sqd: bool) -> None:
    notes = ["Trained with TRL's GRPOTrainer (`bridges.trl_train`)."]
    if sqd:
        notes.append("Prompts followed the SQD controller's stages (`hpcq archive show`).")
    rows = metrics.read(run_dir)
    report = run_report.write(run_dir, run_id, rows, run_report.Baselines(), notes)
    print(report.read_text().splitlines()[2], flush=True)


def train(args: argparse.Namespace, processes: int) -> Path:
    """Run (or resume) the training; returns the run directory."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.grpo_trainer import GRPOTrainer

    from bridges.cli_train import check_trainable, ensure_model
    from bridges.hf_policy import load_tokenizer
    from bridges.trl_dataset import staged_prompts
    from hpcq.cli.common import broker_from_args, topology_from_args
    from hpcq.eval.problems import default_kernels_dir, load_problem
    from hpcq.eval.settings import load_settings
    from hpcq.train.prompts import FixedStages

    settings = _settings(args)
    engine = load_settings(None, **({"cache_dir": Path(args.cache_dir)} if args.cache_dir else {}))
    kernels = engine.kernels_dir or default_kernels_dir()
    names = [p.strip() for p in args.problems.split(",") if p.strip()]
    problems = [load_problem(p, kernels) for p in names]
    check_trainable(problems, args.allow_held_out)
    run_dir, run_id = Path(args.run_dir), run_id_of(Path(args.run_dir))
    config = grpo_config(settings, run_dir, processes)
    main = config.process_index == 0
    with config.main_process_first(desc="bootstrap model"):  # built once, not per process
        model = ensure_model(settings.policy.model, engine.cache_dir)
    settings = dataclasses.replace(
        settings, policy=dataclasses.replace(settings.policy, model=model)
    )
    resume = last_checkpoint(Path(config.output_dir))
    if main:
        for note in unmapped(settings):
            print(f"trl_train: not applied: {note}", file=sys.stderr)
        _memory_plan(settings, processes)
        run_dir.mkdir(parents=True, exist_ok=True)
        record_run(run_dir, settings, names, resuming=resume is not None)
        metrics.truncate_after(run_dir, resume[1] if resume else 0)
    if settings.policy.threads:
        torch.set_num_threads(settings.policy.threads)
    from bridges.cli_train import stage_client

    client = stage_client(args, kernels)  # started later, on TRL's event loop
    reward = PipelineReward(
        broker_from_args(args),
        topology_from_args(args),
        node_class=args.node_class or engine.node.name,
        group_size=settings.loop.group_size,
        rewards=settings.reward,
        advantage=settings.advantage,
        producer_name=args.name or f"trl-{run_id}"[:90],
        rank=config.process_index,
        run_id=run_id,
        wait_s=settings.loop.reward_wait_s,
    )
    rows = settings.loop.prompts_per_step * len(problems)
    data = staged_prompts(problems, client or FixedStages(), rows, settings.loop.cores_per_task)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model, dtype=settings.policy.dtype),
        reward_funcs=[cast(Any, reward)],  # TRL types rewards as sync; it awaits async ones
        args=config,
        train_dataset=data,
        processing_class=load_tokenizer(model),
        callbacks=[metrics_callback(reward, run_dir)],
        peft_config=lora_config(settings),
    )
    loop = trainer.async_loop  # the reward's and the stage client's connections live here
    try:
        if client is not None:
            asyncio.run_coroutine_threadsafe(client.start(), loop).result(60)
        trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    finally:
        asyncio.run_coroutine_threadsafe(reward.close(), loop).result(60)
        if client is not None:
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(60)
    if main:
        _report(run_dir, run_id, client is not None)
    return run_dir


def _memory_plan(settings: TrainSettings, processes: int) -> None:
    """The memory table (hpcq.train.memory_plan) on GPUs, refusing a config that cannot fit;
    more than one process is taken as sharded (the FSDP launch of docs/training.md)."""
    from bridges.cli_train import memory_plan_for
    from bridges.policies import device_memory_bytes

    found = memory_plan_for(settings, device_memory_bytes(settings.policy), processes)
    if found is not None:
        print(found.table(), file=sys.stderr, flush=True)
        found.check()


def unmapped(settings: TrainSettings) -> list[str]:
    """Settings of our TOML that TRL's GRPOTrainer does not honour, said at start
    rather than ignored in silence."""
    p, loop, defaults = settings.policy, settings.loop, type(settings.policy)()
    notes = []
    if p.max_prompt_tokens != defaults.max_prompt_tokens:
        notes.append("max_prompt_tokens: TRL does not truncate prompts (ours are short)")
    if p.logprob_chunk_tokens != defaults.logprob_chunk_tokens:
        notes.append("logprob_chunk_tokens: TRL computes log-probs its own way")
    if loop.on_tie == "resample":
        notes.append('on_tie = "resample": TRL has no resampling; tied groups are masked')
    for name in ("max_staleness", "max_in_flight"):
        if getattr(loop, name, 0):
            notes.append(f"{name}: TRL's GRPOTrainer is synchronous here")
    return notes


def lora_config(settings: TrainSettings) -> Any:
    p = settings.policy
    if p.lora_r <= 0:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=p.lora_r,
        lora_alpha=p.lora_alpha,
        lora_dropout=p.lora_dropout,
        target_modules=list(p.lora_targets),
        task_type="CAUSAL_LM",
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # torchrun and accelerate launch say how many processes train together.
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        train(args, processes)
    except HpcqError as exc:
        print(f"trl_train: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
