"""`hpcq producer` (online GRPO against the consumers) and `hpcq bootstrap-model`.

Both handlers import torch and `bridges` inside themselves: `hpcq` and every other
command stay importable on a CPU node without the ML stack. Environment variables are
read here (through `hpcq.cli.pipeline`'s common options) and nowhere below.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

from hpcq.cli.common import (
    EXIT_OK,
    add_broker_args,
    add_telemetry_args,
    broker_from_args,
    open_telemetry,
    settings_from,
    topology_from_args,
)
from hpcq.cli.sqd import add_state_dir_arg, state_path
from hpcq.errors import ConfigError, InputError
from hpcq.eval.settings import RewardSettings
from hpcq.sqd.client import StageClient
from hpcq.sqd.stages import default_config_path, load_config
from hpcq.train.metrics import StepMetrics
from hpcq.train.settings import TrainSettings, load_train_settings, record_run


def default_model_dir(cache_dir: Path) -> Path:
    return cache_dir / "bootstrap-model"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:

    p = subparsers.add_parser("producer", help="train a policy online with GRPO (needs [ml])")
    add_broker_args(p)
    add_telemetry_args(p)
    p.add_argument("--model", default="", help="hub id or directory; default: bootstrap model")
    p.add_argument("--problems", default="dgemm-256", help="comma-separated problem ids")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--group-size", type=int, default=None)
    p.add_argument("--prompts-per-step", type=int, default=None)
    p.add_argument("--run-dir", required=True, help="metrics, checkpoints; resumes if present")
    p.add_argument("--backend", choices=("hf", "vllm"), default=None)
    p.add_argument(
        "--config",
        "--train-config",
        dest="train_config",
        default=None,
        help="training TOML ([policy], [loop], [advantage], [reward]: the reward the run "
        "trains on); the engine's TOML is the global `hpcq --config` before the command",
    )
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--beta", type=float, default=None)
    p.add_argument("--loss-type", choices=("grpo", "dr_grpo", "dapo"), default=None)
    p.add_argument("--scale", choices=("group", "batch", "none"), default=None)
    p.add_argument("--on-tie", choices=("drop", "resample"), default=None)
    p.add_argument(
        "--max-staleness",
        type=int,
        default=None,
        help="asynchronous rollouts: sample up to this many policy versions ahead (0: sync)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="asynchronous rollouts: groups sampled and not yet trained, at most",
    )
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--node-class", default=None, help="default: the settings' node.name")
    p.add_argument("--name", default=None, help="producer name (results queue)")
    add_stage_args(p)
    p.add_argument(
        "--allow-held-out",
        action="store_true",
        help="train on held-out problems too (voids `hpcq evaluate` on the held-out suite)",
    )
    p.set_defaults(func=cmd_producer)

    p = subparsers.add_parser(
        "memory-plan", help="print the per-GPU memory table of a training config (no GPU needed)"
    )
    p.add_argument("--model", required=True, help="hub id with a known shape, or a directory")
    p.add_argument("--config", dest="train_config", default=None, help="training TOML")
    p.add_argument("--gpu-gib", type=float, default=0.0, help="memory of one GPU, GiB")
    p.add_argument("--train-gpus", type=int, default=1, help="> 1: FSDP/ZeRO-3 sharding")
    p.set_defaults(func=cmd_memory_plan)

    p = subparsers.add_parser("bootstrap-model", help="build the small self-trained code model")
    p.add_argument("--out", required=True, help="directory to write the model into")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--samples", type=int, default=None, help="corpus size")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--check",
        type=int,
        default=32,
        help="evaluate this many step-0 completions with the engine (0: skip)",
    )
    p.set_defaults(func=cmd_bootstrap)


def _pick(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def progress_line(m: StepMetrics, steps: int) -> str:
    reward = "-" if m.reward_mean is None else f"{m.reward_mean:8.2f}"
    best = "-" if m.gflops_best is None else f"{m.gflops_best:6.2f}"
    ok = m.status_fractions.get("ok", 0.0)
    return (
        f"step {m.step:4d}/{steps}  reward {reward}  ok {100 * ok:3.0f}%  best {best} GFLOPS  "
        f"dropped {m.groups_dropped}/{m.groups}  gen {m.time_generate_s:5.1f}s  "
        f"wait {m.time_rewards_s:5.1f}s  update {m.time_update_s:5.1f}s"
    )


def _run_id(run_dir: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", run_dir.resolve().name).lstrip(".-") or "run"


def ensure_model(model: str, cache_dir: Path) -> str:
    """`model` as given, or the bootstrap model (built first if missing)."""
    if model:
        return model
    target = default_model_dir(cache_dir)
    if not (target / "config.json").is_file():
        from bridges.bootstrap import BootstrapSettings, build

        print(f"building the bootstrap model in {target} (a few minutes)", file=sys.stderr)
        build(target, BootstrapSettings())
    return str(target)


def check_engine_reward(engine: RewardSettings, train: TrainSettings) -> None:
    """The run's reward comes from the training TOML alone. An engine config whose
    `[reward]` says otherwise was probably meant for training (it used to score the
    producer's format violations): refuse rather than train on something else."""
    if engine != RewardSettings() and engine != train.reward:
        raise ConfigError(
            "the engine config (hpcq --config) sets a [reward] that differs from the run's: "
            "a run trains on the [reward] of its training TOML (producer --config), which "
            "the run directory's config.json records; move the section there, or drop it "
            "from the engine config"
        )


def train_settings_from(args: argparse.Namespace) -> TrainSettings:
    """The training TOML (if any), then the flags that were given."""
    return load_train_settings(
        Path(args.train_config) if args.train_config else None,
        policy=_pick(
            model=args.model or None,
            backend=args.backend,
            lr=args.lr,
            beta=args.beta,
            loss_type=args.loss_type,
            max_new_tokens=args.max_new_tokens,
            threads=args.threads,
            seed=args.seed,
        ),
        loop=_pick(
            steps=args.steps,
            group_size=args.group_size,
            prompts_per_step=args.prompts_per_step,
            on_tie=args.on_tie,
            max_staleness=args.max_staleness,
            max_in_flight=args.max_in_flight,
        ),
        advantage=_pick(scale=args.scale),
    )


async def cmd_producer(args: argparse.Namespace) -> int:
    from bridges.policies import device_memory_bytes, make_policy
    from hpcq.eval.problems import default_kernels_dir, load_problem
    from hpcq.pipeline.producer import Producer, ProducerSettings
    from hpcq.train import checkpoint
    from hpcq.train import loop as grpo
    from hpcq.train.prompts import FixedStages, StageSource

    engine = settings_from(args)
    train = train_settings_from(args)
    check_engine_reward(engine.reward, train)
    kernels = engine.kernels_dir or default_kernels_dir()
    names = [p.strip() for p in args.problems.split(",") if p.strip()]
    if not names:
        raise InputError("--problems: give at least one problem id")
    problems = tuple(load_problem(p, kernels) for p in names)
    check_trainable(problems, args.allow_held_out)
    model = ensure_model(train.policy.model, engine.cache_dir)
    train = dataclasses.replace(train, policy=dataclasses.replace(train.policy, model=model))
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = _run_id(run_dir)
    found = memory_plan_for(train, device_memory_bytes(train.policy))
    if found is not None:
        print(found.table(), file=sys.stderr, flush=True)
        found.check()  # before any weights are loaded: a config that cannot fit fails now
    record_run(run_dir, train, names, resuming=bool(checkpoint.checkpoints(run_dir)))
    policy = make_policy(train.policy)
    node_class = args.node_class or engine.node.name
    name = args.name or f"grpo-{run_id}"[:100]
    stages: StageSource = FixedStages()
    client = stage_client(args, kernels)
    if client is not None:
        await client.start()
        stages = client
    try:
        async with Producer(
            broker_from_args(args), topology_from_args(args), ProducerSettings(name=name)
        ) as producer:
            run = grpo.Run(
                policy=policy,
                channel=producer,
                problems=problems,
                stages=stages,
                settings=train,
                run_dir=run_dir,
                run_id=run_id,
                node_class=node_class,
            )
            steps = train.loop.steps
            telemetry = await open_telemetry(args)

            def on_step(m: StepMetrics) -> None:
                print(progress_line(m, steps), flush=True)
                telemetry.step(run_id, m)  # MQTT / Prometheus; never blocks

            try:
                await grpo.train(run, on_step=on_step)
            finally:
                await telemetry.close()
    finally:
        if client is not None:
            await client.close()
    return EXIT_OK


def check_trainable(problems: Any, allow_held_out: bool) -> None:
    """Held-out problems (kernels/suites/held-out.toml) measure generalisation: training
    on one voids that measurement, so it takes an explicit flag."""
    held = [p.id for p in problems if p.held_out]
    if held and not allow_held_out:
        raise InputError(
            f"--problems: {', '.join(held)} held out for evaluation (held_out = true in the "
            "problem file); train on the training suite, or pass --allow-held-out"
        )


def add_stage_args(p: argparse.ArgumentParser) -> None:
    """Where the prompts' stages come from (--stages, --sqd-config, --elites-per-prompt,
    --sqd-state-dir): `hpcq producer` and `python -m bridges.trl_train` alike."""
    p.add_argument(
        "--stages",
        choices=("fixed", "sqd"),
        default="fixed",
        help="fixed: every technique allowed; sqd: follow `hpcq sqd` stage updates",
    )
    p.add_argument("--sqd-config", default=None, help="with --stages sqd: the SQD TOML")
    p.add_argument(
        "--elites-per-prompt",
        type=int,
        default=0,
        metavar="N",
        help="with --stages sqd: show up to N elites of the problem's archive (allowed by "
        "its current stage) in each prompt as kernels to improve on (default 0: none)",
    )
    add_state_dir_arg(p, "--sqd-state-dir")


def stage_client(args: argparse.Namespace, kernels: Path) -> StageClient | None:
    """With --stages sqd: the client of the controller's stage updates, reading elites for
    the prompts from the controller's snapshot when --elites-per-prompt asks for them."""
    if args.elites_per_prompt < 0:
        raise InputError("--elites-per-prompt: give 0 or more")
    if args.stages != "sqd":
        if args.elites_per_prompt:
            raise InputError("--elites-per-prompt needs --stages sqd (elites come from SQD)")
        return None
    path = Path(args.sqd_config) if args.sqd_config else default_config_path(kernels)
    snapshot = state_path(args) if args.elites_per_prompt else None
    return StageClient(
        broker_from_args(args),
        args.namespace,
        load_config(path),
        elites_per_prompt=args.elites_per_prompt,
        snapshot=snapshot,
    )


def memory_plan_for(train: TrainSettings, gpu_bytes: int, train_gpus: int = 1) -> Any:
    """The run's memory table (hpcq.train.memory_plan), or None for a model of unknown shape."""
    from hpcq.train.memory_plan import Layout, plan, shape_of

    shape = shape_of(train.policy.model)
    if shape is None:
        return None
    return plan(shape, train, Layout(train_gpus=train_gpus, gpu_bytes=gpu_bytes))


async def cmd_memory_plan(args: argparse.Namespace) -> int:
    from hpcq.train.memory_plan import GIB

    train = load_train_settings(
        Path(args.train_config) if args.train_config else None, policy={"model": args.model}
    )
    if args.train_gpus < 1 or args.gpu_gib < 0:
        raise InputError("--train-gpus >= 1 and --gpu-gib >= 0")
    found = memory_plan_for(train, int(args.gpu_gib * GIB), args.train_gpus)
    if found is None:
        raise InputError(
            f"--model {args.model!r}: no config.json there and not a known hub id; "
            "give the model's directory"
        )
    found.check()  # a refusal prints the table in its message
    print(found.table())
    return EXIT_OK


async def cmd_bootstrap(args: argparse.Namespace) -> int:
    from bridges.bootstrap import BootstrapSettings, build, check_step0

    base = BootstrapSettings()
    s = dataclasses.replace(
        base,
        **_pick(
            steps=args.steps,
            max_minutes=args.max_minutes,
            samples=args.samples,
            threads=args.threads,
            seed=args.seed,
        ),
    )
    if s.steps < 1 or s.samples < s.batch_size:
        raise ConfigError("--steps >= 1 and --samples >= the batch size (16)")
    out = Path(args.out)
    summary = build(out, s, log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.check > 0:
        summary["step0"] = await check_step0(out, args.check, settings_from(args))
        (out / "bootstrap.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return EXIT_OK


def parser_with_training() -> argparse.ArgumentParser:
    """`hpcq`'s parser with these commands, whether or not the entry point registers them."""
    from hpcq.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "producer" not in sub.choices:
        register(sub)
    return parser
