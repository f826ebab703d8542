"""The evaluation engine: one candidate source in, one honest verdict out.

    static text checks -> result cache -> build (hpcq.eval.build: preprocess, techniques vs
    constraints, compile, object checks, link, .so checks; all sandboxed) -> trusted
    judge running the sandboxed runner -> statistics, physics floor, CPU cross-check
    -> reward

Everything is awaited subprocesses: the event loop never blocks, so a consumer's broker
heartbeats keep flowing during minutes-long benchmarks. Identical requests running at
the same time share one evaluation; finished ones come from the result cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from hpcq.errors import InfraError
from hpcq.eval import harness, judging, scratch, static_checks
from hpcq.eval.build import Builder, Built, Rejected
from hpcq.eval.cache import ResultCache, cache_key, detector_digest
from hpcq.eval.harness import HarnessBinaries, JudgeVerdict
from hpcq.eval.peak import PeakStore, measure_peak
from hpcq.eval.problems import Problem, default_kernels_dir, load_problem
from hpcq.eval.reward import reward_for
from hpcq.eval.sandbox import Sandbox
from hpcq.eval.settings import EngineSettings
from hpcq.outcome import EvalRequest, EvalResult, Status

log = structlog.get_logger()


@dataclass(frozen=True)
class _Timing:
    compile_s: float
    run_s: float
    calls: int


@dataclass
class _Work:
    """Scratch state of one uncached evaluation."""

    problem: Problem
    request: EvalRequest
    key: str
    dir: Path
    uid: int | None  # the leased sandbox uid (None when hpcq does not run as root)
    techniques: tuple[str, ...] = ()
    compile_s: float = 0.0


class Engine:
    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.kernels_dir = self.settings.kernels_dir or default_kernels_dir()
        self.sandbox = Sandbox(self.settings.sandbox)
        self.cache = ResultCache(self.settings.cache_dir / "results")
        self.peaks = PeakStore(self.settings.cache_dir)
        self._inflight: dict[str, asyncio.Future[EvalResult]] = {}
        self._harness: dict[str, HarnessBinaries] = {}
        self._cc_version: str | None = None
        self._peak: float | None = self.settings.node.peak_gflops_per_core
        self._setup_lock = asyncio.Lock()
        self._swept = False

    # -- public -------------------------------------------------------------------------

    async def evaluate(self, request: EvalRequest) -> EvalResult:
        """Judge one candidate. Raises UnknownProblemError for an unknown problem id;
        every other outcome, including a broken node (infra_error), is a result."""
        problem = load_problem(request.problem_id, self.kernels_dir)
        finding = static_checks.check_source_text(request.source)
        if finding is not None:
            return self._verdict(Status.VIOLATION, finding.message, problem, ())
        try:
            binaries = await self.harness_binaries(problem)
        except InfraError as exc:
            return self._verdict(Status.INFRA_ERROR, str(exc), problem, ())
        key = self.cache_key_for(request, problem, binaries)
        if self.settings.use_cache and (hit := self.cache.get(key)) is not None:
            return hit
        if key in self._inflight:
            return replace(await asyncio.shield(self._inflight[key]), cached=True)
        future: asyncio.Future[EvalResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._evaluate_uncached(problem, request, key, binaries)
            if self.settings.use_cache:
                self.cache.put(key, result)  # never raises: a failed write is only logged
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._inflight[key]

    def sweep_scratch(self) -> int:
        """Remove scratch directories left by evaluations whose process died (kill -9)."""
        return scratch.sweep(self.settings.work_dir)

    async def peak_gflops_per_core(self, core: int = 0) -> float:
        async with self._setup_lock:
            if self._peak is None:
                self._peak = self.peaks.get(self.settings.node.name)
            if self._peak is None:
                measured = await measure_peak(
                    self.settings.node.cc, self.kernels_dir, self.settings.work_dir, core
                )
                self._peak = self.peaks.put(self.settings.node.name, measured)
            return self._peak

    async def _confirm_peak(self, work: _Work, v: JudgeVerdict, peak: float) -> float:
        """Before calling a figure impossible, measure the peak again on this core.

        A stored peak can only be too low (noise slows a benchmark, never speeds it up),
        and a too-low peak would reject honest kernels: re-measuring is cheap and rare."""
        fastest = _fastest_gflops(v)
        ceiling = self.settings.measure.peak_margin * peak * judging.threads_for(work.request)
        if v.status != Status.OK or fastest <= ceiling:
            return peak
        measured = await measure_peak(
            self.settings.node.cc, self.kernels_dir, self.settings.work_dir,
            work.request.cores[0],
        )  # fmt: skip
        async with self._setup_lock:
            self._peak = self.peaks.put(self.settings.node.name, measured)
            log.info("peak.rechecked", fastest_call=round(fastest, 2), peak=round(self._peak, 2))
            return self._peak

    # -- steps --------------------------------------------------------------------------

    async def harness_binaries(self, problem: Problem) -> HarnessBinaries:
        """The family's judge and runner, built once per engine (and the scratch swept)."""
        async with self._setup_lock:
            if not self._swept:  # once per engine: debris of a consumer killed with -9
                self._swept = True
                await asyncio.to_thread(self.sweep_scratch)
            if problem.family not in self._harness:  # once per family and engine
                self.sandbox.check_available()
                if self._cc_version is None:
                    self._cc_version = await harness.compiler_version(self.settings.node.cc)
                self._harness[problem.family] = await harness.build(
                    problem, self.settings.node.cc, self._cc_version, self.settings.work_dir
                )
            return self._harness[problem.family]

    def cache_key_for(
        self, request: EvalRequest, problem: Problem, binaries: HarnessBinaries
    ) -> str:
        """Everything a stored verdict depends on: change any of it and the candidate is
        evaluated again (the reward too: a verdict carries its reward)."""
        s = self.settings
        return cache_key(
            source=request.source,
            cc=self._cc_version,
            node=dataclasses.asdict(s.node),
            problem=problem.id,
            dims=problem.dims,
            measure=dataclasses.asdict(judging.measure_for(s, problem)),
            sandbox=dataclasses.asdict(s.sandbox),
            reward=dataclasses.asdict(s.reward),
            constraints=request.constraints.key(),
            cores=len(request.cores),
            harness=binaries.digest,
            detector=detector_digest(),
            static=s.static_checks,
        )

    async def _evaluate_uncached(
        self, problem: Problem, request: EvalRequest, key: str, binaries: HarnessBinaries
    ) -> EvalResult:
        try:
            peak = await self.peak_gflops_per_core(request.cores[0])
            async with self.sandbox.lease(self.settings.work_dir / "uids") as uid:
                with scratch.scratch_dir(self.settings.work_dir, uid) as path:
                    work = _Work(problem, request, key, path, uid)
                    builder = Builder(self.settings, self.sandbox, problem, request, path, uid)
                    built = await builder.run()
                    work.compile_s = builder.compile_s
                    work.techniques = built.techniques
                    if isinstance(built, Rejected):
                        return self._failed(work, built.status, built.message, _Timing(
                            work.compile_s, 0.0, 0))  # fmt: skip
                    assert isinstance(built, Built)
                    verdict = await self._judge(work, binaries)
                    peak = await self._confirm_peak(work, verdict, peak)
                    return self._score(work, verdict, peak)
        except InfraError as exc:
            log.warning("eval.infra_error", problem=problem.id, error=str(exc))
            return self._verdict(Status.INFRA_ERROR, str(exc), problem, (), key=key)

    async def _judge(self, work: _Work, binaries: HarnessBinaries) -> JudgeVerdict:
        return await judging.run_judge(
            self.settings, self.sandbox, binaries, work.problem, work.request, work.dir, work.uid
        )

    def _score(self, work: _Work, v: JudgeVerdict, peak_per_core: float) -> EvalResult:
        status = Status(v.status) if v.status in Status.__members__.values() else None
        if status is None:
            raise InfraError(f"the judge reported an unknown status {v.status!r}")
        timing = _Timing(work.compile_s, v.wall_s, len(v.times_s))
        if status is not Status.OK:
            return self._failed(work, status, v.message, timing)
        if not v.times_s or v.flops_per_call <= 0:
            raise InfraError("the judge reported ok without timed calls")
        per_call = [v.flops_per_call / t / 1e9 for t in v.times_s if t > 0]
        fastest_any = _fastest_gflops(v)
        threads = judging.threads_for(work.request)
        ceiling = self.settings.measure.peak_margin * peak_per_core * threads
        if fastest_any > ceiling:
            why = (
                f"{fastest_any:.1f} GFLOPS on one call exceeds the physical peak "
                f"({peak_per_core:.1f} GFLOPS/core x {threads} core(s)): "
                "the timing cannot be honest"
            )
            return self._failed(work, Status.VIOLATION, why, timing)
        m = self.settings.measure
        allowed_cpu = threads * v.calls_s * (1 + m.cpu_slack_fraction) + m.cpu_slack_s
        if v.cpu_s > allowed_cpu:
            why = (
                f"used {v.cpu_s:.2f} s of CPU while its calls lasted {v.calls_s:.2f} s on "
                f"{threads} thread(s): it works outside the timed calls"
            )
            return self._failed(work, Status.VIOLATION, why, timing)
        mean_t = statistics.fmean(v.times_s)
        cv = statistics.pstdev(v.times_s) / mean_t if len(v.times_s) > 1 else 0.0
        gflops = statistics.median(per_call)
        reward = reward_for(
            Status.OK, gflops, self.settings.reward, peak_gflops=peak_per_core * threads
        )
        return EvalResult(
            status=Status.OK,
            reward=reward,
            message=f"{len(per_call)} timed calls verified",
            gflops=gflops,
            gflops_min=min(per_call),
            gflops_max=max(per_call),
            cv=cv,
            peak_gflops=peak_per_core * threads,
            techniques=work.techniques,
            problem_id=work.problem.id,
            node_class=self.settings.node.name,
            compiler=self._cc_version or self.settings.node.cc,
            flags=self.settings.node.cflags,
            cache_key=work.key,
            compile_s=timing.compile_s,
            run_s=timing.run_s,
            calls=timing.calls,
        )

    def _failed(self, work: _Work, status: Status, message: str, t: _Timing) -> EvalResult:
        return self._verdict(
            status, message, work.problem, work.techniques, work.key,
            compile_s=t.compile_s, run_s=t.run_s, calls=t.calls,
        )  # fmt: skip

    def _verdict(
        self,
        status: Status,
        message: str,
        problem: Problem,
        techniques: tuple[str, ...],
        key: str = "",
        compile_s: float = 0.0,
        run_s: float = 0.0,
        calls: int = 0,
    ) -> EvalResult:
        return EvalResult(
            status=status,
            reward=reward_for(status, None, self.settings.reward),
            message=message,
            techniques=techniques,
            compile_s=compile_s,
            run_s=run_s,
            calls=calls,
            problem_id=problem.id,
            node_class=self.settings.node.name,
            compiler=self._cc_version or self.settings.node.cc,
            flags=self.settings.node.cflags,
            cache_key=key,
        )


def _fastest_gflops(v: JudgeVerdict) -> float:
    """The fastest call of the benchmark shape, warm-ups included: no call may beat peak."""
    times = [t for t in (*v.times_s, *v.warmup_s) if t > 0]
    return max((v.flops_per_call / t / 1e9 for t in times), default=0.0)
