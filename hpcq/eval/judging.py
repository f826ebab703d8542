"""Running the trusted judge on a built candidate (kernels/harness/judge.c).

The judge runs outside the sandbox, pinned off the slot's cores, with a minimal
environment; it starts the sandboxed runner itself and prints one JSON verdict, which
`hpcq.eval.harness.parse_verdict` reads. Statistics, the physics floor and the reward are the
engine's.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from hpcq.errors import InfraError
from hpcq.eval import harness, procs
from hpcq.eval.harness import HarnessBinaries, JudgeVerdict
from hpcq.eval.problems import Problem
from hpcq.eval.sandbox import Sandbox, minimal_env
from hpcq.eval.settings import EngineSettings, MeasureSettings
from hpcq.outcome import EvalRequest

GRACE_S = 30.0
"""The judge's own deadline plus this, then it is killed: only a broken judge gets there
(infra_error); a candidate that stalls is timed out by the judge itself (timeout)."""


def measure_for(settings: EngineSettings, problem: Problem) -> MeasureSettings:
    return replace(settings.measure, **problem.measure)  # type: ignore[arg-type]


def threads_for(request: EvalRequest) -> int:
    """OpenMP threads of the candidate: the slot's cores, 1 when the stage forbids it."""
    return 1 if "openmp" in request.constraints.forbidden else len(request.cores)


def judge_core(request: EvalRequest) -> int | None:
    """A core for the trusted judge off the slot's cores, so the candidate can neither
    starve it nor share its caches; None on a machine with no core to spare."""
    if request.judge_cores:
        return request.judge_cores[0]
    spare = sorted(os.sched_getaffinity(0) - set(request.cores))
    return spare[0] if spare else None


def command(
    settings: EngineSettings,
    sandbox: Sandbox,
    binaries: HarnessBinaries,
    problem: Problem,
    request: EvalRequest,
    work_dir: Path,
    uid: int | None,
) -> list[str]:
    p, m, threads = problem, measure_for(settings, problem), threads_for(request)
    prefix = sandbox.run_prefix(
        uid=uid,
        threads=threads,
        cpu_s=(p.run_timeout_s + 5) * threads,
        memory_bytes=settings.sandbox.memory_bytes,
        files=binaries.files,
        binds_ro=[(binaries.runner, "/sbx/runner"), (work_dir / "cand.so", "/sbx/cand.so")],
        env={
            "OMP_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": "passive",  # idle workers sleep: CPU time stays honest
            "OMP_PROC_BIND": "false",  # the judge pins the whole process instead
            "OMP_DYNAMIC": "false",
        },
    )
    core = judge_core(request)
    gap_abs = m.gap_cpu_s + (threads - 1) * m.gap_cpu_per_extra_thread_s
    return [
        str(binaries.judge),
        "--dims", ",".join(map(str, p.dims)),
        "--check-shapes", ";".join(",".join(map(str, s)) for s in p.check_shapes),
        "--full-check-max-work", str(p.full_check_max_work),
        "--full-check-keep", str(m.full_checks),
        "--cores", ",".join(map(str, request.cores)),
        *(["--judge-core", str(core)] if core is not None else []),
        "--warmup-calls", str(m.warmup_calls),
        "--warmup-min-s", str(m.warmup_min_s),
        "--min-calls", str(m.min_calls),
        "--min-time-s", str(m.min_time_s),
        "--max-calls", str(m.max_calls),
        "--gap-cpu-abs-s", str(gap_abs),
        "--gap-cpu-frac", str(m.gap_cpu_fraction),
        "--call-timeout-s", str(p.call_timeout_s),
        "--total-timeout-s", str(p.run_timeout_s),
        "--output-file", str(work_dir / "output.txt"),
        "--", *prefix, "/sbx/runner", "/sbx/cand.so", p.entry,
    ]  # fmt: skip


async def run_judge(
    settings: EngineSettings,
    sandbox: Sandbox,
    binaries: HarnessBinaries,
    problem: Problem,
    request: EvalRequest,
    work_dir: Path,
    uid: int | None,
) -> JudgeVerdict:
    """Judge the cand.so in `work_dir`. Raises InfraError only if the judge itself broke."""
    argv = command(settings, sandbox, binaries, problem, request, work_dir, uid)
    done = await procs.run(argv, timeout_s=problem.run_timeout_s + GRACE_S, env=minimal_env())
    if done.timed_out:
        raise InfraError(f"the judge did not finish within {problem.run_timeout_s + GRACE_S:g} s")
    return harness.parse_verdict(done.stdout)
