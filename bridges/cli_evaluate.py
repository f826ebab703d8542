"""`hpcq evaluate`: measure models (not single kernels) on a problem suite.

    hpcq evaluate --model bootstrap --model trained=runs/demo-X --suite held-out -k 8

Each `--model` is a directory with a model (config.json), a hub id (org/name), a run
directory of `hpcq producer` (its newest checkpoint), a checkpoint directory
(RUN/checkpoints/step-N), or `bootstrap` (the small model in the cache directory, built
if missing); `LABEL=...` names it in the report. Every model gets the same prompts,
sampling settings and seed; the consumers of the namespace judge every completion.
Writes `report.md`, `evaluation.json` and `evaluation.png` under `--out`.

torch and `bridges` are imported inside the policy factory only: bad input (an unknown
suite, a missing model directory) fails at once, with exit 2, before any model or
broker is touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from hpcq.cli.common import EXIT_OK
from hpcq.errors import ConfigError, InfraError, InputError
from hpcq.train.evaluate.report import Meta
from hpcq.train.evaluate.run import ModelSpec, PolicyFactory
from hpcq.train.evaluate.stats import Summary
from hpcq.train.policy import Policy
from hpcq.train.settings import RUN_CONFIG, PolicySettings, load_train_settings

BOOTSTRAP = "bootstrap"
_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_HUB_ID = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
# What the report keeps of a run's policy settings: what its checkpoint was built with.
_ARCH_FIELDS = ("model", "dtype", "lora_r", "lora_alpha", "lora_dropout", "lora_targets")
MODEL_HELP = (
    "give a model directory (config.json; `hpcq bootstrap-model --out DIR` builds the "
    "small one), a run directory of `hpcq producer` (its newest checkpoint), a checkpoint "
    "(RUN/checkpoints/step-N), `bootstrap`, or a hub id (org/name)"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from hpcq.cli.common import add_broker_args

    p = subparsers.add_parser(
        "evaluate",
        help="measure models on a problem suite: pass@k, GFLOPS, fast_p (needs [ml])",
    )
    add_broker_args(p)
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[LABEL=]PATH_OR_ID",
        help="repeat to compare; the first is the baseline. " + MODEL_HELP,
    )
    p.add_argument("--suite", required=True, help="suite name (kernels/suites/) or TOML path")
    p.add_argument("-k", "--k", dest="k", type=int, default=8, help="completions per problem")
    p.add_argument("--out", default="", help="report directory (default evals/<suite>-<time>)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every model")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--cores", type=int, default=1, help="cores the prompt states (slot size)")
    p.add_argument("--node-class", default=None, help="default: the settings' node.name")
    p.add_argument("--name", default=None, help="producer name (results queue)")
    p.add_argument(
        "--no-library",
        action="store_true",
        help="do not measure the library reference (numpy) on this host",
    )
    p.add_argument("--wait-s", type=float, default=3600.0, help="bound on each judging phase")
    p.add_argument("--json", action="store_true", help="end with one JSON line (overall figures)")
    p.set_defaults(func=cmd_evaluate)


# --- models -----------------------------------------------------------------------------


def _run_policy(run_dir: Path) -> dict[str, Any]:
    try:
        policy = json.loads((run_dir / RUN_CONFIG).read_text())["train"]["policy"]
        model = policy["model"]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"{run_dir}: its {RUN_CONFIG} does not record the model the run started from "
            f"({exc!r}); give that model directory instead"
        ) from None
    if not isinstance(model, str) or not model:
        raise InputError(f"{run_dir / RUN_CONFIG}: train.policy.model is empty")
    return {k: policy[k] for k in _ARCH_FIELDS if k in policy}


def _trained_on(run_dir: Path) -> tuple[str, ...]:
    try:
        problems = json.loads((run_dir / RUN_CONFIG).read_text()).get("problems", [])
    except (OSError, ValueError):
        return ()
    return tuple(str(p) for p in problems) if isinstance(problems, list) else ()


@dataclasses.dataclass(frozen=True)
class Resolved:
    spec: ModelSpec
    arch: dict[str, Any]  # policy fields a checkpoint needs (its run's); {} otherwise
    trained_on: tuple[str, ...] = ()
    build: bool = False  # the bootstrap model, built first if missing


def resolve_model(given: str, cache_dir: Path) -> Resolved:
    """What `--model` names, checked before anything is loaded."""
    from hpcq.train import checkpoint

    label, sep, ref = given.partition("=")
    if not sep or not _LABEL.fullmatch(label):
        label, ref = "", given
    if not ref:
        raise InputError(f"--model {given!r}: empty; {MODEL_HELP}")
    path = Path(ref).expanduser()
    if ref == BOOTSTRAP and not path.exists():
        target = cache_dir / "bootstrap-model"  # built by the factory when missing
        return Resolved(ModelSpec(label or BOOTSTRAP, str(target), None, given), {}, build=True)
    if not path.exists():
        if _HUB_ID.fullmatch(ref) and not ref.startswith("."):
            return Resolved(ModelSpec(label or ref, ref, None, given), {})
        raise InputError(f"--model {ref}: no such directory; {MODEL_HELP}")
    if not path.is_dir():
        raise InputError(f"--model {ref}: not a directory; {MODEL_HELP}")
    is_run = (path / RUN_CONFIG).is_file() and not (path / "config.json").is_file()
    if (path / "checkpoints").is_dir() or is_run:
        found = checkpoint.checkpoints(path)
        if not found:
            raise InputError(f"--model {ref}: a run directory without a complete checkpoint")
        ckpt, run_dir = found[-1], path
    elif (path / "state.json").is_file() and (path / "policy").is_dir():
        ckpt, run_dir = path, path.parent.parent
    elif (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return Resolved(ModelSpec(label or path.name, str(path), None, given), {})
    else:
        raise InputError(
            f"--model {ref}: holds no model (config.json), no run (checkpoints/) and no "
            f"checkpoint (state.json); {MODEL_HELP}"
        )
    arch = _run_policy(run_dir)
    name = label or f"{run_dir.name}@{ckpt.name}"
    spec = ModelSpec(name, str(arch["model"]), ckpt, given)
    return Resolved(spec, arch, _trained_on(run_dir))


def _describe(r: Resolved) -> str:
    s = r.spec
    if s.checkpoint is None:
        return f"`{s.model}`"
    return f"checkpoint `{s.checkpoint}` over `{s.model}`"


def policy_factory(
    models: dict[str, Resolved], base: PolicySettings, cache_dir: Path
) -> PolicyFactory:
    """Loads a model as a policy (bridges, and torch with it, imported here), seeded alike
    for every model."""

    def load(spec: ModelSpec) -> Policy:
        from bridges.cli_train import ensure_model
        from bridges.policies import make_policy, reseed

        r = models[spec.label]
        model = spec.model
        if r.build and not Path(model).is_dir():
            model = ensure_model("", cache_dir)
        settings = dataclasses.replace(base, **{**r.arch, "model": model})
        if isinstance(settings.lora_targets, list):
            settings = dataclasses.replace(settings, lora_targets=tuple(settings.lora_targets))
        try:
            policy = make_policy(settings)
            if spec.checkpoint is not None:
                policy.load(spec.checkpoint / "policy")
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load model {spec.given!r}: {exc}; {MODEL_HELP}") from exc
        # A checkpoint restores the RNG it was saved with: reseed, so every model samples
        # from the same seed.
        reseed(base.seed)
        return policy

    return load


# --- the command ------------------------------------------------------------------------


def _base_policy(args: argparse.Namespace) -> PolicySettings:
    if args.k < 1 or args.max_new_tokens < 1 or args.temperature <= 0 or args.cores < 1:
        raise ConfigError("-k, --max-new-tokens and --cores must be >= 1, --temperature > 0")
    return load_train_settings(
        None,
        policy={
            "backend": args.backend,
            "device": args.device,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "max_new_tokens": args.max_new_tokens,
            "seed": args.seed,
            "threads": args.threads,
            "beta": 0.0,  # no KL reference copy: nothing is trained here
        },
    ).policy


def _shape(dims: tuple[int, ...]) -> str:
    return " x ".join(map(str, dims))


@dataclasses.dataclass(frozen=True)
class Done:
    report: Path
    summary: Summary
    meta: Meta


async def cmd_evaluate(args: argparse.Namespace) -> int:
    from hpcq.train.evaluate.report import fmt

    done = await run_evaluate(args)
    for m in done.summary.models:
        o = done.summary.overall[m].values
        print(
            f"{m}: pass@1 {fmt('pass@1', o['pass@1'])}  "
            f"pass@{args.k} {fmt('pass@k', o['pass@k'])}  "
            f"GFLOPS {fmt('gflops_mean', o['gflops_mean'])}  "
            f"fast_1 vs naive {fmt('pass@1', o['fast_1_naive'])}",
            file=sys.stderr,
            flush=True,
        )
    if args.json:
        overall = {m: done.summary.overall[m].values for m in done.summary.models}
        print(json.dumps({"report": str(done.report), "overall": overall}))
    return EXIT_OK


async def before_after(argv: list[str]) -> str:
    """`hpcq evaluate` with these arguments (two models: before, after), as a markdown
    section for a run's report (`make demo`)."""
    from hpcq.cli.main import build_parser
    from hpcq.train.evaluate.report import before_after_markdown

    args = build_parser().parse_args(argv)
    done = await run_evaluate(args)
    link = done.report.relative_to(done.report.parent.parent)
    return before_after_markdown(done.summary, done.meta, str(link))


async def run_evaluate(args: argparse.Namespace) -> Done:
    from hpcq.cli.common import broker_from_args, settings_from, topology_from_args
    from hpcq.eval import harness
    from hpcq.eval.problems import default_kernels_dir
    from hpcq.pipeline.producer import Producer, ProducerSettings
    from hpcq.train.evaluate import report as eval_report
    from hpcq.train.evaluate import stats as evaluation
    from hpcq.train.evaluate.run import RunSettings, measure
    from hpcq.train.evaluate.suites import load_suite

    engine = settings_from(args)
    suite = load_suite(args.suite, engine.kernels_dir or default_kernels_dir())
    base = _base_policy(args)
    resolved = [resolve_model(m, engine.cache_dir) for m in args.model]
    labels = [r.spec.label for r in resolved]
    if len(set(labels)) != len(labels):
        raise InputError(f"two --model share a label ({', '.join(labels)}): name them LABEL=...")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_id = f"eval-{stamp}-{uuid.uuid4().hex[:6]}"
    out = Path(args.out) if args.out else Path("evals") / f"{suite.name}-{stamp}"
    node_class = args.node_class or engine.node.name
    rs = RunSettings(
        k=args.k,
        node_class=node_class,
        run_id=run_id,
        cores=args.cores,
        library=not args.no_library,
        host_node_class=engine.node.name,
        wait_s=args.wait_s,
    )
    models = {r.spec.label: r for r in resolved}
    load = policy_factory(models, base, engine.cache_dir)
    name = args.name or run_id
    settings = ProducerSettings(
        name=name, max_outstanding=max(256, args.k), delete_queue_on_close=True
    )
    print(f"{run_id}: suite {suite.name} ({len(suite.problems)} problems), K={args.k}, "
          f"models {', '.join(labels)}", file=sys.stderr, flush=True)  # fmt: skip
    async with Producer(broker_from_args(args), topology_from_args(args), settings) as producer:
        measured = await measure(producer, [r.spec for r in resolved], suite, load, rs)
    problems = [p.id for p in suite.problems]
    summary = evaluation.summarize(measured.judged, labels, problems, args.k, measured.references)
    reported = sorted({(j.compiler, j.flags) for j in measured.judged if j.compiler})
    if reported:  # what the consumers compiled with, sent with every result
        compiler = "; ".join(sorted({c for c, _ in reported}))
        cflags = reported[0][1] if len(reported) == 1 else ("(differs between results)",)
    else:  # consumers older than the field: this host's settings, said so in the report
        cflags = engine.node.cflags
        try:
            compiler = await harness.compiler_version(engine.node.cc) + " (this host)"
        except InfraError:
            compiler = f"{engine.node.cc} (this host, version unknown)"
    notes = [
        f"`{r.spec.label}` was trained on {', '.join(sorted(set(r.trained_on) & set(problems)))}"
        f", which this {suite.split} suite lists: these figures are not held out."
        for r in resolved
        if set(r.trained_on) & set(problems) and suite.split == "held-out"
    ]
    meta = Meta(
        suite=suite.name,
        split=suite.split,
        description=suite.description or suite.name,
        models={r.spec.label: _describe(r) for r in resolved},
        shapes={p.id: _shape(p.dims) for p in suite.problems},
        sampling={
            "temperature": base.temperature,
            "top_p": base.top_p,
            "max_new_tokens": base.max_new_tokens,
            "seed": base.seed,
            "backend": base.backend,
        },
        node_classes=measured.node_classes,
        compiler=compiler,
        cflags=cflags,
        namespace=args.namespace,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        sample_s=measured.sample_s,
        judge_s=measured.judge_s,
        notes=tuple(notes),
    )
    path = eval_report.write(out, summary, meta, measured.judged)
    print(f"report: {path}", file=sys.stderr, flush=True)
    return Done(path, summary, meta)
