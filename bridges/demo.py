"""`make demo`: the main job end to end on one machine.

    python -m bridges.demo [--steps N] [--model DIR] [--runs-dir runs] [--async-rollouts]

1. makes sure RabbitMQ answers on the URL (starts a stopped local `rabbitmq-server`;
   says how to install it when there is none);
2. measures the reference points on the core the kernels will run on: the naive ijk
   kernel through the engine, numpy's DGEMM with one OpenBLAS thread;
3. starts a consumer for the free cores (a namespace of its own), with `--sqd` the SQD
   controller too, then the GRPO producer with the small bootstrap model (built first
   if missing) for N steps, printing a line per step. Without `--sqd` every prompt is
   under the default stage (every technique allowed), which makes the reward curves of
   two runs comparable; with it, stage changes move the curve as the stages allow;
   then `hpcq evaluate` samples the initial and the trained model on the held-out suite
   (`--eval-k`, 4 per problem; DEMO_EVAL=0 skips it) for a before/after table;
4. stops everything it started, also on Ctrl-C or SIGTERM, removes its queues, and
   writes `runs/<run-id>/` with metrics, `curves.png` and `report.md`.
The last line printed is JSON: the run directory, the verdict and the pids it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from yarl import URL

from hpcq.cli.common import add_amqp_url_arg, add_namespace_arg
from hpcq.eval.settings import EngineSettings, load_settings
from hpcq.logs import setup_logging
from hpcq.outcome import Constraints, EvalRequest
from hpcq.train import metrics
from hpcq.train import report as run_report

REPO = Path(__file__).resolve().parent.parent
SMALL_CONFIG = REPO / "ops" / "configs" / "bootstrap-small.toml"
NAIVE = """void dgemm(int M, int N, int K, const double *A, const double *B, double *C) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double sum = 0.0;
            for (int k = 0; k < K; k++)
                sum += A[i * K + k] * B[k * N + j];
            C[i * N + j] = sum;
        }
}
"""
NUMPY = """
import json, sys, time
import numpy as np
n = int(sys.argv[1]); rng = np.random.default_rng(1)
a = rng.uniform(-1, 1, (n, n)); b = rng.uniform(-1, 1, (n, n)); c = np.empty((n, n))
for _ in range(3): np.matmul(a, b, out=c)
t = []
while len(t) < 20 or sum(t) < 0.5:
    t0 = time.perf_counter(); np.matmul(a, b, out=c); t.append(time.perf_counter() - t0)
print(json.dumps(sorted(2 * n**3 / x / 1e9 for x in t)[len(t) // 2]))
"""


def broker_up(url: str) -> bool:
    u = URL(url)
    try:
        with socket.create_connection((u.host or "127.0.0.1", u.port or 5672), timeout=2):
            return True
    except OSError:
        return False


def ensure_broker(url: str) -> str | None:
    """None when the broker answers; else what is wrong and how to fix it."""
    if broker_up(url):
        return None
    host = URL(url).host or ""
    server = shutil.which("rabbitmq-server")
    if host not in ("127.0.0.1", "localhost") or server is None:
        return (
            f"RabbitMQ does not answer at {url}. Install it (Debian: `apt-get install "
            "rabbitmq-server`) and start it (`rabbitmq-server -detached`), or point "
            "--amqp-url / HPCQ_AMQP_URL at a running broker."
        )
    print("starting the local RabbitMQ (rabbitmq-server -detached)", flush=True)
    subprocess.run([server, "-detached"], check=False, capture_output=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if broker_up(url):
            time.sleep(2)  # the port opens before the vhost is ready
            return None
        time.sleep(1)
    return f"rabbitmq-server was started but {url} still does not answer after 90 s"


def slot_core() -> int:
    """The core of the consumer's first slot (one core is kept for compiling)."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[1] if len(allowed) > 1 else allowed[0]


def measure_naive(settings: EngineSettings, core: int) -> float | None:
    from hpcq.eval.engine import Engine

    request = EvalRequest("dgemm-256", NAIVE, Constraints(), (core,))
    result = asyncio.run(Engine(settings).evaluate(request))
    return result.gflops


def measure_numpy(core: int, n: int = 256) -> float | None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", NUMPY, str(n)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
        return float(json.loads(out.stdout))
    except (subprocess.SubprocessError, ValueError, OSError):
        return None


class Children:
    """The processes the demo started; all stopped on exit, whatever the exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=out, cwd=REPO)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # consumers drain: finish, then exit
        deadline = time.monotonic() + 60
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def _delete_queues(url: str, namespace: str, producer: str, node_class: str) -> None:
    import aio_pika

    from hpcq.pipeline.topology import Topology, delete_namespace

    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel()
        await delete_namespace(channel, Topology(namespace=namespace), (node_class,), (producer,))
    finally:
        await connection.close()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def evaluate_before_after(
    args: argparse.Namespace, top: list[str], namespace: str, run_dir: Path, node_class: str
) -> str:
    """`hpcq evaluate` of the initial model against the trained one on the held-out suite,
    with the training's sampling settings: a section for the report."""
    from bridges.cli_evaluate import before_after
    from hpcq.train.settings import load_train_settings

    print(
        f"evaluating the initial and the trained model (held-out suite, K={args.eval_k})",
        flush=True,
    )
    policy = load_train_settings(SMALL_CONFIG).policy
    tokens = args.max_new_tokens or policy.max_new_tokens
    argv = [*top, "evaluate", "--namespace", namespace, "--amqp-url", args.amqp_url]
    argv += ["--model", f"initial={args.model or 'bootstrap'}", "--model", f"trained={run_dir}"]
    argv += ["--suite", "held-out", "-k", str(args.eval_k), "--out", str(run_dir / "eval")]
    argv += ["--node-class", node_class, "--max-new-tokens", str(tokens)]
    argv += ["--threads", str(policy.threads)]
    try:
        return asyncio.run(before_after(argv))
    except Exception as exc:  # the training report stands without it
        print(f"demo: the evaluation failed: {exc!r}", file=sys.stderr)
        return f"## Before and after training\n\n`hpcq evaluate` failed: {exc!r}\n"


def run(args: argparse.Namespace) -> int:
    problem = ensure_broker(args.amqp_url)
    if problem is not None:
        print(f"demo: {problem}", file=sys.stderr)
        return 2
    overrides = {"cache_dir": Path(args.cache_dir)} if args.cache_dir else {}
    settings = load_settings(None, **overrides)
    top = ["--cache-dir", str(settings.cache_dir)]  # the same cache for every process
    run_id = time.strftime("demo-%Y%m%d-%H%M%S")
    run_dir = Path(args.runs_dir) / run_id
    run_dir.mkdir(parents=True)
    namespace = args.namespace or run_id
    producer = f"grpo-{run_id}"
    core = slot_core()
    print(f"run {run_id}: measuring the reference points on core {core}", flush=True)
    base = run_report.Baselines(measure_naive(settings, core), measure_numpy(core))
    print(f"  naive kernel {base.naive_gflops} GFLOPS, numpy {base.library_gflops} GFLOPS")
    children = Children()
    signal.signal(signal.SIGTERM, _interrupt)
    interrupted = False
    section = ""  # the before/after evaluation
    try:
        consumer = [sys.executable, "-m", "hpcq", *top, "consumer", "--namespace", namespace]
        consumer += ["--amqp-url", args.amqp_url]
        children.start(consumer, run_dir / "consumer.log")
        if args.sqd:
            sqd = [sys.executable, "-m", "hpcq", *top, "sqd", "--namespace", namespace]
            sqd += ["--amqp-url", args.amqp_url, "--state-dir", str(run_dir / "sqd")]
            children.start(sqd, run_dir / "sqd.log")
        from bridges.cli_train import parser_with_training

        argv = [*top, "producer", "--namespace", namespace, "--amqp-url", args.amqp_url]
        argv += ["--run-dir", str(run_dir), "--name", producer, "--steps", str(args.steps)]
        argv += ["--train-config", str(SMALL_CONFIG), "--problems", args.problems]
        argv += ["--node-class", settings.node.name]
        argv += ["--stages", "sqd" if args.sqd else "fixed"]
        if args.sqd and args.elites:  # the controller's snapshot is in run_dir/sqd
            argv += [
                "--elites-per-prompt",
                str(args.elites),
                "--sqd-state-dir",
                str(run_dir / "sqd"),
            ]
        if args.async_rollouts:  # sample one step ahead while the kernels are measured
            argv += ["--max-staleness", "1"]
        if args.model:
            argv += ["--model", args.model]
        for flag in ("group_size", "prompts_per_step", "max_new_tokens"):
            if getattr(args, flag) is not None:
                argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        parsed = parser_with_training().parse_args(argv)
        asyncio.run(parsed.func(parsed))
        if args.eval_k > 0:
            section = evaluate_before_after(args, top, namespace, run_dir, settings.node.name)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping what the demo started", file=sys.stderr)
    finally:
        children.stop()
        try:
            asyncio.run(_delete_queues(args.amqp_url, namespace, producer, settings.node.name))
        except Exception as exc:  # best effort: unused queues expire by themselves
            print(f"demo: queues of {namespace} not removed: {exc!r}", file=sys.stderr)
    rows = metrics.read(run_dir)
    notes = ["Interrupted before the last step."] if interrupted else []
    if args.sqd:
        notes.append("Prompts followed the SQD controller's stages (`hpcq archive show`).")
    if args.async_rollouts:
        notes.append("Asynchronous rollouts (max_staleness 1): sampled one step ahead.")
    path = run_report.write(run_dir, run_id, rows, base, notes)
    if section:
        with path.open("a") as report:
            report.write("\n" + section)
    summary = run_report.summarize(rows)
    print(path.read_text().splitlines()[2])
    print(
        json.dumps(
            {
                "run_dir": str(run_dir),
                "steps": summary.steps,
                "rose": summary.rose,
                "pids": [p.pid for p in children.procs],
            }
        )
    )
    return 130 if interrupted else 0


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m bridges.demo", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=int(env("DEMO_STEPS", "40")))
    p.add_argument("--model", default="", help="default: the bootstrap model (built if missing)")
    p.add_argument("--runs-dir", default=str(REPO / "runs"))
    p.add_argument("--problems", default="dgemm-256")
    add_namespace_arg(p, own_default="")  # "": the run id
    add_amqp_url_arg(p)
    p.add_argument("--cache-dir", default=env("HPCQ_CACHE_DIR"), help="model, peak, results")
    p.add_argument(
        "--sqd",
        action="store_true",
        default=env("DEMO_SQD", "") not in ("", "0"),
        help="also run the SQD controller and follow its stages (env DEMO_SQD=1)",
    )
    p.add_argument(
        "--elites",
        type=int,
        default=int(env("DEMO_ELITES", "0")),
        metavar="N",
        help="with --sqd: up to N archive elites in each prompt (env DEMO_ELITES)",
    )
    p.add_argument(
        "--async-rollouts",
        action="store_true",
        default=env("DEMO_ASYNC", "") not in ("", "0"),
        help="asynchronous rollouts, max_staleness 1 (env DEMO_ASYNC=1)",
    )
    p.add_argument("--group-size", type=int, default=None)
    p.add_argument("--prompts-per-step", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument(
        "--eval-k",
        type=int,
        default=0 if env("DEMO_EVAL", "1") == "0" else int(env("DEMO_EVAL_K", "4")),
        help="after training, evaluate the initial vs the trained model on the held-out suite "
        "with K samples per problem; 0 skips it (env DEMO_EVAL=0, DEMO_EVAL_K)",
    )
    args = p.parse_args(argv)
    # The demo's own lines are its output; the library's log lines (the producer and
    # `hpcq evaluate` run in this process) only from warnings up, unless asked for.
    setup_logging(env("HPCQ_LOG_LEVEL", "warning"))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
