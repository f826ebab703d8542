"""The trusted judge seen through its raw verdict: schedule, seccomp, CPU between calls,
stalls, and what happens to a judge and its sandbox when their consumer is killed."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from hpcq.eval import judging, scratch
from hpcq.eval.build import Builder, Built
from hpcq.eval.engine import Engine
from hpcq.eval.harness import JudgeVerdict
from hpcq.eval.problems import load_problem
from hpcq.eval.settings import EngineSettings
from hpcq.outcome import EvalRequest, Status
from tests.conftest import REPO, needs_sandbox

pytestmark = needs_sandbox

IKJ = """
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k = 0; k < K; k++) {
            double a = A[i * K + k];
            for (int j = 0; j < N; j++)
                C[i * N + j] += a * B[k * N + j];
        }
    }
}
"""


def _own_filters() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Seccomp_filters:"):
            return int(line.split()[1])
    pytest.fail("this kernel reports no Seccomp_filters in /proc/self/status (Linux < 5.9)")


async def judge(settings: EngineSettings, source: str, cores: int = 1) -> JudgeVerdict:
    """Build `source` and run the judge on it directly; the raw verdict comes back."""
    engine = Engine(settings)
    problem = load_problem("dgemm-256")
    binaries = await engine.harness_binaries(problem)
    request = EvalRequest("dgemm-256", source, cores=tuple(sorted(os.sched_getaffinity(0)))[:cores])
    async with engine.sandbox.lease(settings.work_dir / "uids") as uid:
        with scratch.scratch_dir(settings.work_dir, uid) as path:
            built = await Builder(settings, engine.sandbox, problem, request, path, uid).run()
            assert isinstance(built, Built), built
            return await judging.run_judge(
                settings, engine.sandbox, binaries, problem, request, path, uid
            )


def _with_measure(settings: EngineSettings, **measure: float) -> EngineSettings:
    return dataclasses.replace(settings, measure=dataclasses.replace(settings.measure, **measure))


async def test_full_comparisons_are_drawn_after_each_call(
    engine_settings: EngineSettings,
) -> None:
    """Which benchmark calls are compared in full is drawn after each call from the
    judge's random source (a reservoir of `full_checks` calls, compared after the run):
    the choice differs from run to run, so a kernel cannot be exact only where it will be
    compared in full (tests/corpus/integrity/cheat_below_freivalds.c is caught so)."""
    keep = 4
    settings = _with_measure(engine_settings, full_checks=keep, min_calls=12, min_time_s=0)
    chosen = []
    for _ in range(3):
        v = await judge(settings, IKJ)
        assert v.status == "ok", v.message
        calls = len(v.warmup_s) + len(v.times_s)
        assert v.full_check_calls[:1] == (1,)  # the first warm-up, at once
        kept = v.full_check_calls[1:]
        assert len(kept) == keep and len(set(kept)) == keep
        assert all(1 < i <= calls for i in kept)
        chosen.append(frozenset(kept))
    # >= 13 calls offered, 4 kept: the same choice three times has chance < 1/715^2
    assert len(set(chosen)) > 1, f"the same calls three times: {chosen}"


async def test_runner_carries_exactly_its_two_filters(engine_settings: EngineSettings) -> None:
    v = await judge(engine_settings, IKJ)
    assert v.status == "ok", v.message
    assert v.seccomp_filters == _own_filters() + 2


async def test_an_honest_kernel_does_no_work_between_calls(
    engine_settings: EngineSettings,
) -> None:
    v = await judge(engine_settings, IKJ)
    assert v.status == "ok", v.message
    assert v.gap_cpu_max_s <= engine_settings.measure.gap_cpu_s


async def test_rare_gaps_over_the_allowance_are_forgiven_a_habit_is_not(
    engine_settings: EngineSettings,
) -> None:
    """With no allowance at all, the runner's own return to read() after DONE is over it
    after every call: the first excesses are forgiven (a VM's vCPU stall books host time
    to the runner), but not in more than 1 + 1/4 of the gaps."""
    strict = _with_measure(engine_settings, gap_cpu_s=0.0, gap_cpu_fraction=0.0)
    v = await judge(strict, IKJ)
    assert v.status == "violation", v.message
    assert "kept running between calls" in v.message and "over the allowance in" in v.message
    assert v.gap_cpu_forgiven_s > 0 and v.gap_excess_calls >= 2


async def test_stalling_after_a_correct_call_is_a_timeout(engine_settings: EngineSettings) -> None:
    """A kernel that never returns (so never reads GO again) ends as a penalised timeout
    within the call timeout, never as an infra_error."""
    source = "static long calls;\n" + IKJ.replace(
        "{\n    for (int i = 0; i < M; i++) {",
        "{\n    if (++calls > 1) for (volatile int x = 0;; x++) ;\n"
        "    for (int i = 0; i < M; i++) {",
        1,
    )
    result = await Engine(dataclasses.replace(engine_settings, use_cache=False)).evaluate(
        EvalRequest("dgemm-256", source)
    )
    assert result.status is Status.TIMEOUT, result.message
    assert result.reward is not None and result.reward < 0


_VICTIM = """
import asyncio, sys
from pathlib import Path
from hpcq.eval.engine import Engine
from hpcq.outcome import EvalRequest
from hpcq.eval.settings import EngineSettings
import dataclasses
settings = dataclasses.replace(
    EngineSettings(), cache_dir=Path(sys.argv[1]), work_dir=Path(sys.argv[2]), use_cache=False
)
source = Path(sys.argv[3]).read_text()
print("started", flush=True)
asyncio.run(Engine(settings).evaluate(EvalRequest("dgemm-256", source)))
"""


def _processes_mentioning(*texts: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        if all(t.encode() in cmdline for t in texts):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
async def test_killing_the_consumer_takes_its_judge_and_sandbox_down(
    engine_settings: EngineSettings, tmp_path: Path
) -> None:
    """A consumer killed with -9 mid-benchmark: its judge gets SIGTERM (parent-death
    signal) and kills the sandbox at once; the scratch directory left behind is swept by
    the next engine."""
    # A work dir of its own, so that the processes of this evaluation name it; not under
    # tmp_path, which the sandboxed uid cannot enter.
    work = Path(tempfile.mkdtemp(prefix="hpcq-kill-test-"))
    work.chmod(0o755)
    try:
        await _kill_consumer_mid_benchmark(engine_settings, tmp_path, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _kill_consumer_mid_benchmark(
    engine_settings: EngineSettings, tmp_path: Path, work: Path
) -> None:
    spin = tmp_path / "spin.c"
    spin.write_text(
        "void dgemm(int M, int N, int K, const double *A, const double *B, double *C)\n"
        "{ (void)M, (void)N, (void)K, (void)A, (void)B, (void)C;\n"
        "  for (volatile int x = 0;; x++) ; }\n"
    )
    args = [str(engine_settings.cache_dir), str(work), str(spin)]
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_VICTIM), *args], cwd=REPO, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
    runner = (str(work), "/sbx/runner")  # in the judge's and bwrap's command lines
    deadline = time.monotonic() + 90
    while len(_processes_mentioning(*runner)) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(_processes_mentioning(*runner)) >= 2, "the judge and its sandbox never started"
    evals = scratch.evals_root(work)
    left = {p.name for p in evals.iterdir() if p.is_dir()}
    assert left, "no scratch directory while evaluating"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 3
    while _processes_mentioning(*runner) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _processes_mentioning(*runner), "the judge or its sandbox outlived the consumer"
    assert left <= {p.name for p in evals.iterdir() if p.is_dir()}  # debris, until swept
    assert scratch.sweep(work) == len(left)
    assert not left & {p.name for p in evals.iterdir()}
