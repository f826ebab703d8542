"""Running `hpcq evaluate`: sample K completions per problem with each model, judge them
and the reference kernels on the cluster, measure the library reference.

The order keeps measurements clean and comparable:
1. every model samples K completions per problem, one model loaded at a time, with the
   same prompts (default stage, every technique allowed), temperature and seed;
2. the naive kernel is judged per problem by the consumers (same engine, same node
   class as the samples): the naive reference;
3. the library reference (numpy's matmul, one BLAS thread per slot core) is measured
   on this host, pinned to one core, only when this host is of the node class the
   consumers measured on, and only while no kernel is being judged; otherwise it is
   "not measured" with the reason, never estimated;
4. every sample is judged by the consumers (format violations are judged here and never
   sent, as in training).

Sampling goes through `hpcq.train.policy.Policy`; the factory that loads a model lives on the
producer side (`bridges.cli_evaluate`), so this module never imports torch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from hpcq.errors import InfraError
from hpcq.eval import procs
from hpcq.eval.problems import Problem
from hpcq.outcome import Constraints, Status
from hpcq.pipeline.messages import Result, Task
from hpcq.pipeline.producer import CompletedGroup
from hpcq.train.evaluate.stats import LEFT_OUT, Judged, Reference
from hpcq.train.evaluate.suites import Suite
from hpcq.train.extract import extract_code
from hpcq.train.policy import Policy, Sample
from hpcq.train.prompts import DEFAULT_STAGE, build_prompt
from hpcq.train.rollout import GroupChannel

log = structlog.get_logger()

NAIVE_SOURCE = """void dgemm(int M, int N, int K, const double *A, const double *B, double *C) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double sum = 0.0;
            for (int k = 0; k < K; k++)
                sum += A[i * K + k] * B[k * N + j];
            C[i * N + j] = sum;
        }
}
"""
NAIVE_HOW = "naive ijk kernel, judged by the consumers (same engine and node class)"

# Median of >= 20 timed calls and >= 0.5 s after 3 warm-ups, like the engine's timing.
LIBRARY_SCRIPT = """
import json, statistics, sys, time
import numpy as np
m, n, k = (int(x) for x in sys.argv[1:4])
rng = np.random.default_rng(1)
a = rng.uniform(-1, 1, (m, k)); b = rng.uniform(-1, 1, (k, n)); c = np.empty((m, n))
for _ in range(3):
    np.matmul(a, b, out=c)
t = []
while len(t) < 20 or sum(t) < 0.5:
    t0 = time.perf_counter(); np.matmul(a, b, out=c); t.append(time.perf_counter() - t0)
try:
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
except Exception:
    blas = "unknown BLAS"
med = statistics.median(t)
print(json.dumps({"gflops": 2 * m * n * k / med / 1e9,
                  "cv": statistics.stdev(t) / statistics.fmean(t), "blas": blas}))
"""


@dataclass(frozen=True)
class ModelSpec:
    label: str  # the name in the report
    model: str  # hub id or directory the policy loads
    checkpoint: Path | None = None  # a training checkpoint loaded over `model`
    given: str = ""  # as written on the command line


@dataclass(frozen=True)
class RunSettings:
    k: int
    node_class: str
    run_id: str
    cores: int = 1  # cores the prompt states (the consumers' slot size)
    library: bool = True  # measure the library reference on this host when it may
    host_node_class: str = ""  # this host's class: the library is measured only on a match
    library_core: int | None = None  # None: the last core this process may use
    wait_s: float = 3600.0  # for all results of one phase


@dataclass(frozen=True)
class Drawn:
    """The completions of one model for one problem."""

    model: str
    problem: Problem
    samples: tuple[Sample, ...]


PolicyFactory = Callable[[ModelSpec], Policy]


async def sample_all(
    models: Sequence[ModelSpec], suite: Suite, k: int, load: PolicyFactory, cores: int = 1
) -> list[Drawn]:
    """K completions per problem per model; one model in memory at a time. The factory
    seeds each policy alike, and every model sees the prompts in the same order."""
    drawn = []
    for spec in models:
        policy = await asyncio.to_thread(load, spec)
        for problem in suite.problems:
            prompt = build_prompt(problem, DEFAULT_STAGE, cores)
            (samples,) = await asyncio.to_thread(policy.generate, [prompt], k)
            drawn.append(Drawn(spec.label, problem, tuple(samples)))
            log.debug("evaluate.sampled", model=spec.label, problem=problem.id, n=len(samples))
        del policy
    return drawn


def _task(problem_id: str, source: str, group_id: str, member: int, s: RunSettings) -> Task:
    return Task(
        task_id=f"{group_id}.{member}",
        problem_id=problem_id,
        source=source,
        constraints=Constraints(),
        node_class=s.node_class,
        run_id=s.run_id,
        group_id=group_id,
        member=member,
    )


async def _judge(
    channel: GroupChannel, groups: dict[str, list[Task]], wait_s: float
) -> dict[str, CompletedGroup]:
    for tasks in groups.values():
        await channel.submit_group(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    done: dict[str, CompletedGroup] = {}
    while len(done) < len(groups):
        try:
            group = await channel.next_group(max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise InfraError(
                f"{len(groups) - len(done)} group(s) still unjudged after {wait_s:g} s; are "
                "consumers running for this namespace and node class?"
            ) from None
        if group.group_id in groups:
            done[group.group_id] = group
    return done


async def naive_references(
    channel: GroupChannel, suite: Suite, s: RunSettings
) -> tuple[dict[str, Reference], tuple[Result, ...]]:
    """The naive kernel per problem, judged by the consumers."""
    groups = {
        f"{s.run_id}.naive.{i}": [_task(p.id, NAIVE_SOURCE, f"{s.run_id}.naive.{i}", 0, s)]
        for i, p in enumerate(suite.problems)
    }
    done = await _judge(channel, groups, s.wait_s)
    refs, results = {}, []
    for gid, problem in zip(groups, suite.problems, strict=True):
        group = done[gid]
        if not group.results:
            reason = group.left_out[0].reason if group.left_out else "no result"
            refs[problem.id] = Reference("naive", None, NAIVE_HOW, note=f"left out: {reason}")
            continue
        r = group.results[0]
        results.append(r)
        o = r.outcome
        note = "" if o.status is Status.OK else f"naive kernel {o.status}: {o.message[:120]}"
        refs[problem.id] = Reference("naive", o.gflops, NAIVE_HOW, o.cv, r.node_class, note)
    return refs, tuple(results)


async def library_reference(problem: Problem, threads: int, core: int) -> Reference:
    """numpy's matmul on this host with `threads` BLAS threads, pinned to cores from
    `core` on; not measured (with the reason) when numpy is missing or the run fails."""
    m, n, k = problem.dims
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **{v: str(threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    argv = [sys.executable, "-c", LIBRARY_SCRIPT, str(m), str(n), str(k)]
    taskset = shutil.which("taskset")
    allowed = sorted(os.sched_getaffinity(0))
    cores = [c for c in allowed if c >= core][:threads] or allowed[:threads]
    if taskset:
        argv = [taskset, "-c", ",".join(map(str, cores)), *argv]
    done = await procs.run(argv, timeout_s=300, env=env)
    if done.returncode != 0:
        text = done.stderr.decode(errors="replace")
        why = "numpy is not installed" if "No module named 'numpy'" in text else text[-200:]
        return Reference("library", None, "numpy.matmul", note=f"not measured: {why}")
    try:
        data = json.loads(done.stdout)
        gflops, cv, blas = float(data["gflops"]), float(data["cv"]), str(data["blas"])
    except (ValueError, KeyError, TypeError) as exc:
        return Reference("library", None, "numpy.matmul", note=f"not measured: {exc}")
    how = (
        f"numpy.matmul ({blas}, {threads} thread(s)) on this host, core(s) "
        f"{','.join(map(str, cores))}: not through the engine (libraries are not allowed there)"
    )
    return Reference("library", gflops, how, cv)


async def library_references(
    suite: Suite, naive: Sequence[Result], s: RunSettings
) -> dict[str, Reference]:
    measured_on = {r.node_class for r in naive}
    slot_cores = max((len(r.cores) for r in naive), default=1)
    why = ""
    if not s.library:
        why = "not measured: turned off (--no-library)"
    elif not naive:
        why = "not measured: no naive reference came back, so the consumers' class is unknown"
    elif measured_on != {s.host_node_class}:
        why = (
            f"not measured: this host is {s.host_node_class!r}, the kernels ran on "
            f"{', '.join(sorted(measured_on))}"
        )
    if why:
        return {p.id: Reference("library", None, "numpy.matmul", note=why) for p in suite.problems}
    core = s.library_core if s.library_core is not None else sorted(os.sched_getaffinity(0))[-1]
    return {p.id: await library_reference(p, slot_cores, core) for p in suite.problems}


def _judged(d: Drawn, i: int, r: Result | None, reason: str = "") -> Judged:
    if r is None:
        return Judged(d.model, d.problem.id, i, LEFT_OUT, message=reason[:200])
    o = r.outcome
    return Judged(
        d.model,
        d.problem.id,
        i,
        str(o.status),
        gflops=o.gflops,
        cv=o.cv,
        peak_gflops=o.peak_gflops,
        techniques=o.techniques,
        node_class=r.node_class,
        compiler=o.compiler,
        flags=o.flags,
        consumer=r.consumer,
        cached=o.cached,
        message=o.message[:200],
    )


async def judge_samples(
    channel: GroupChannel, drawn: Sequence[Drawn], s: RunSettings
) -> list[Judged]:
    """Every sample judged: format violations here, the rest by the consumers."""
    groups: dict[str, list[Task]] = {}
    local: dict[tuple[int, int], Judged] = {}
    sources: dict[tuple[int, int], str] = {}
    owner: dict[str, int] = {}
    for g, d in enumerate(drawn):
        gid = f"{s.run_id}.g{g}.{uuid.uuid4().hex[:8]}"
        for i, sample in enumerate(d.samples):
            code = extract_code(sample.text, d.problem.entry)
            if code.source is None:
                local[g, i] = Judged(
                    d.model, d.problem.id, i, str(Status.VIOLATION), extracted=False,
                    message=f"format: {code.message}"[:200],
                )  # fmt: skip
                continue
            sources[g, i] = code.source
            groups.setdefault(gid, []).append(_task(d.problem.id, code.source, gid, i, s))
        owner[gid] = g
    done = await _judge(channel, groups, s.wait_s) if groups else {}
    for gid, group in done.items():
        d = drawn[owner[gid]]
        for r in group.results:
            local[owner[gid], r.member] = _judged(d, r.member, r)
        for lo in group.left_out:
            local[owner[gid], lo.task.member] = _judged(d, lo.task.member, None, lo.reason)
    out = []
    for g, d in enumerate(drawn):
        for i in range(len(d.samples)):
            j = local[g, i]
            out.append(dataclasses.replace(j, source=sources.get((g, i), "")))
    return out


@dataclass(frozen=True)
class Measured:
    judged: list[Judged]
    references: dict[str, dict[str, Reference]]  # problem -> "naive" | "library" -> figure
    node_classes: tuple[str, ...]  # where the consumers measured
    sample_s: float
    judge_s: float


async def measure(
    channel: GroupChannel,
    models: Sequence[ModelSpec],
    suite: Suite,
    load: PolicyFactory,
    s: RunSettings,
) -> Measured:
    t0 = time.monotonic()
    drawn = await sample_all(models, suite, s.k, load, s.cores)
    t1 = time.monotonic()
    naive, naive_results = await naive_references(channel, suite, s)
    library = await library_references(suite, naive_results, s)
    judged = await judge_samples(channel, drawn, s)
    refs = {p.id: {"naive": naive[p.id], "library": library[p.id]} for p in suite.problems}
    classes = {j.node_class for j in judged if j.node_class}
    classes |= {r.node_class for r in naive_results}
    return Measured(judged, refs, tuple(sorted(classes)), t1 - t0, time.monotonic() - t1)
