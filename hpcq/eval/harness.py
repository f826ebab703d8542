"""The trusted side of an evaluation: building the judge and runner, and running the judge.

The judge (kernels/harness/judge.c + the family's judge file) is a trusted C program
outside the sandbox. It owns the inputs, the timing and the verification, starts the
sandboxed runner, and prints one JSON verdict. It is built once per node and harness
version into `work_dir/harness/<hash>/`, readable but not writable by sandboxed uids.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcq.errors import InfraError
from hpcq.eval import procs
from hpcq.eval.problems import Problem

HARNESS_CFLAGS = ("-O3", "-march=native", "-std=gnu11", "-Wall")
# The runner links every library a candidate .so may need (check_shared_object allows no
# other DT_NEEDED): they are loaded at exec, by trusted code, before any seccomp layer,
# and `ldd runner` then names every file its sandbox must contain.
RUNNER_LIBS = ("-Wl,--no-as-needed", "-lgomp", "-lm", "-lgcc_s", "-ldl")
_BUILD_TIMEOUT_S = 120.0
_locks: dict[str, asyncio.Lock] = {}


def secure_dir(path: Path, mode: int = 0o755) -> Path:
    """Create `path` owned by us with `mode`; refuse one somebody else planted."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    st = path.lstat()
    if path.is_symlink() or st.st_uid != os.geteuid():
        raise InfraError(f"{path} is not a directory owned by uid {os.geteuid()}: remove it")
    if st.st_mode & 0o777 != mode:
        path.chmod(mode)
    return path


async def compiler_version(cc: str) -> str:
    done = await procs.run([cc, "--version"], timeout_s=30)
    if done.returncode != 0:
        raise InfraError(f"compiler {cc!r} does not run: {done.text(300)}")
    return done.stdout.decode(errors="replace").splitlines()[0]


@dataclass(frozen=True)
class HarnessBinaries:
    judge: Path
    runner: Path
    digest: str  # part of the result-cache key: a new harness re-measures everything
    files: tuple[Path, ...] = ()
    """The runner's shared libraries (ldd): all its sandbox contains besides the .so."""


def _digest(sources: Sequence[Path], cc_version: str) -> str:
    h = hashlib.sha256()
    h.update(cc_version.encode())
    h.update(repr((HARNESS_CFLAGS, RUNNER_LIBS)).encode())
    for src in sources:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


async def build(problem: Problem, cc: str, cc_version: str, work_dir: Path) -> HarnessBinaries:
    """Build (or reuse) the family's judge and runner; safe across processes."""
    include = problem.judge_sources[0].parent
    digest = _digest((*problem.sources, *sorted(include.glob("*.h"))), cc_version)
    target = secure_dir(secure_dir(work_dir) / "harness") / f"{problem.family}-{digest}"
    await _build_once(
        target,
        "runner",
        lambda tmp: [
            [cc, *HARNESS_CFLAGS, f"-I{include}", "-o", str(tmp / "judge"),
             *map(str, problem.judge_sources), "-lm"],
            [cc, *HARNESS_CFLAGS, f"-I{include}", "-o", str(tmp / "runner"),
             *map(str, problem.call_sources), *RUNNER_LIBS],
        ],
    )  # fmt: skip
    runner = target / "runner"
    return HarnessBinaries(
        judge=target / "judge", runner=runner, digest=digest, files=await runtime_files(runner)
    )


async def runtime_files(binary: Path) -> tuple[Path, ...]:
    """Shared libraries `binary` loads (its interpreter included), from `ldd` on our own
    trusted build: the only host files the candidate's sandbox holds."""
    done = await procs.run(["ldd", str(binary)], timeout_s=30)
    if done.returncode != 0:
        raise InfraError(f"ldd {binary} failed: {done.text(300)}")
    files = []
    for line in done.stdout.decode(errors="replace").splitlines():
        words = line.split()
        path = words[2] if len(words) >= 3 and words[1] == "=>" else words[0] if words else ""
        if path.startswith("/"):
            files.append(Path(path))
    if not files:
        raise InfraError(f"ldd {binary} named no libraries: {done.text(300)}")
    return tuple(files)


async def build_peak(cc: str, cc_version: str, kernels_dir: Path, work_dir: Path) -> Path:
    """Build (or reuse) the peak benchmark (kernels/harness/peak.c); safe across processes."""
    src = kernels_dir / "harness" / "peak.c"
    target = secure_dir(secure_dir(work_dir) / "harness") / f"peak-{_digest([src], cc_version)}"
    await _build_once(
        target, "peak", lambda tmp: [[cc, *HARNESS_CFLAGS, "-o", str(tmp / "peak"), str(src)]]
    )
    return target / "peak"


async def _build_once(target: Path, last: str, jobs: Callable[[Path], list[list[str]]]) -> None:
    """Run the compile `jobs` into a fresh directory, then rename it to `target`.

    The rename is atomic, so other processes see a complete build or none; `last` is the
    file whose presence means the build is complete."""
    lock = _locks.setdefault(str(target), asyncio.Lock())
    async with lock:
        if (target / last).is_file():
            return
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            for argv in jobs(tmp):
                done = await procs.run(argv, timeout_s=_BUILD_TIMEOUT_S)
                if done.returncode != 0:
                    raise InfraError(f"building trusted {last} failed: {done.text(1500)}")
            tmp.chmod(0o755)
            try:
                tmp.rename(target)
            except OSError:
                if not (target / last).is_file():  # lost a race only if the winner finished
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class JudgeVerdict:
    """The judge's raw report; statistics and the peak check are the engine's."""

    status: str
    message: str
    times_s: tuple[float, ...]
    warmup_s: tuple[float, ...]
    check_s: tuple[float, ...]
    flops_per_call: float
    cpu_s: float
    wall_s: float
    signal: int | None
    gap_cpu_max_s: float = 0.0  # most runner CPU seen between a DONE and the next GO
    # Gaps over the allowance forgiven (a VM's vCPU stall): the largest, and how many calls
    # had one; in more than 1 + 1/4 of the gaps it is a violation (judge_watch.h, gap_ok).
    gap_cpu_forgiven_s: float = 0.0
    gap_excess_calls: int = 0
    full_check_calls: tuple[int, ...] = ()  # benchmark calls fully compared (drawn at random)
    seccomp_filters: int | None = None  # counted from outside once the runner was READY

    @property
    def calls_s(self) -> float:
        """Total time of every call window (checks, warm-ups and timed)."""
        return sum(self.times_s) + sum(self.warmup_s) + sum(self.check_s)


def parse_verdict(stdout: bytes) -> JudgeVerdict:
    try:
        line = stdout.decode().strip().splitlines()[-1]
        d: dict[str, Any] = json.loads(line)
        return JudgeVerdict(
            status=str(d["status"]),
            message=str(d.get("message", "")),
            times_s=tuple(float(t) for t in d.get("times_s", [])),
            warmup_s=tuple(float(t) for t in d.get("warmup_s", [])),
            check_s=tuple(float(t) for t in d.get("check_s", [])),
            flops_per_call=float(d.get("flops_per_call") or 0.0),
            cpu_s=float(d.get("cpu_s") or 0.0),
            wall_s=float(d.get("wall_s") or 0.0),
            signal=d.get("signal"),
            gap_cpu_max_s=float(d.get("gap_cpu_max_s") or 0.0),
            gap_cpu_forgiven_s=float(d.get("gap_cpu_forgiven_s") or 0.0),
            gap_excess_calls=int(d.get("gap_excess_calls") or 0),
            full_check_calls=tuple(int(i) for i in d.get("full_check_calls", [])),
            seccomp_filters=d.get("seccomp_filters"),
        )
    except (IndexError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InfraError(f"the judge printed no valid verdict: {stdout[-500:]!r}") from exc
