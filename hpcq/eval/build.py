"""From an untrusted source to a checked shared object, every step in the sandbox.

    preprocess (gcc -E) -> techniques on the candidate's own lines vs the stage ->
    compile (that same preprocessed text) -> object checks (+ object evidence of
    techniques) -> link -> .so checks

The source reaches gcc on stdin and nowhere else: no file of it exists in the sandbox, so
it cannot include itself (a file including itself twice per level is an exponential
preprocessor bomb); `-fmax-include-depth`, `-fmax-errors`, RLIMIT_CPU, RLIMIT_AS and
RLIMIT_FSIZE bound what is left (macro bombs, diagnostic floods, huge outputs).
Technique detection reads what the compiler reads (`gcc -E`: macros expanded, `#if 0`
gone, `_Pragma` turned into `#pragma`), and the object adds decisive evidence: OpenMP
runtime symbols, and packed FP arithmetic when the stage forbids SIMD (then the
auto-vectoriser is off, so any packed arithmetic is the candidate's own).
The shared object is linked without start files (`-nostartfiles`): no _init, _fini or
frame_dummy exists in it, so any load-time code would be the candidate's.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

from hpcq.errors import InfraError
from hpcq.eval import object_checks, procs, static_checks
from hpcq.eval import techniques as tq
from hpcq.eval.csource import preprocess
from hpcq.eval.elf import ElfError
from hpcq.eval.problems import Problem
from hpcq.eval.sandbox import Sandbox, minimal_env
from hpcq.eval.settings import EngineSettings
from hpcq.outcome import EvalRequest, Status

_COMPILE_THREADS = 16  # gcc driver, cc1, as, collect2, ld: processes of the sandboxed uid
_STDIN = "<stdin>"  # gcc's name for the main file read from stdin
NO_VECTORIZE = ("-fno-tree-vectorize", "-fno-tree-slp-vectorize")
"""Added when the stage forbids simd: then packed arithmetic is the candidate's own."""
LAYOUT_FLAGS = ("-falign-functions=64",)
"""Every function starts on a cache line, wherever the linker puts it: the same code ran
at 5 or at 10 GFLOPS (ikj at 256 on Zen 3) depending on its address modulo 64, i.e. on
what else was linked. With this a kernel's speed is its own."""


@dataclass(frozen=True)
class Rejected:
    """The candidate ends here: a compile error or a violation, with words to act on."""

    status: Status
    message: str
    techniques: tuple[str, ...]


@dataclass(frozen=True)
class Built:
    """cand.so is ready in the evaluation directory."""

    techniques: tuple[str, ...]


@dataclass
class Builder:
    settings: EngineSettings
    sandbox: Sandbox
    problem: Problem
    request: EvalRequest
    dir: Path
    uid: int | None
    compile_s: float = 0.0

    @property
    def simd_forbidden(self) -> bool:
        return "simd" in self.request.constraints.forbidden

    def compile_flags(self) -> list[str]:
        s, node = self.settings.sandbox, self.settings.node
        flags = [*node.cflags, node.openmp_flag, "-fPIC", "-pipe", *LAYOUT_FLAGS]
        flags += [f"-fmax-include-depth={s.max_include_depth}", f"-fmax-errors={s.max_errors}"]
        if self.simd_forbidden:
            flags += NO_VECTORIZE
        return flags

    def link_command(self) -> list[str]:
        node = self.settings.node
        return [node.cc, "-shared", "-nostartfiles", node.openmp_flag, "cand.o", "-o",
                "cand.so", "-lm"]  # fmt: skip

    async def run(self) -> Built | Rejected:
        started = time.monotonic()
        try:
            return await self._steps()
        finally:
            self.compile_s = time.monotonic() - started

    async def _steps(self) -> Built | Rejected:
        static = self.settings.static_checks
        if static and (forged := preprocess.line_control(self.request.source)) is not None:
            return Rejected(
                Status.VIOLATION,
                f"uses a #line or linemarker directive ({forged}): not allowed in a kernel",
                (),
            )
        own = await self._preprocess()
        if isinstance(own, Rejected):
            return own
        found = tq.detect(own)
        if static and (finding := static_checks.check_techniques(found, self.request.constraints)):
            return Rejected(Status.VIOLATION, finding.message, _names(found))
        # The compiler reads the preprocessed text the detector read: one preprocessing,
        # and nothing compiled that was not inspected.
        cc = [self.settings.node.cc, *self.compile_flags(), "-x", "cpp-output", "cand.i"]
        done = await self._sandboxed([*cc, "-c", "-o", "cand.o"])
        if (why := _compile_failure(done, "compilation", self.settings)) is not None:
            return Rejected(Status.COMPILE_ERROR, why, _names(found))
        obj = self._read("cand.o")
        found |= await self._object_evidence(obj)
        if static:
            finding = static_checks.check_techniques(found, self.request.constraints) or (
                object_checks.check_object(obj, self.problem.entry, self.request.constraints)
            )
            if finding is not None:
                return Rejected(Status.VIOLATION, finding.message, _names(found))
        done = await self._sandboxed(self.link_command())
        if (why := _compile_failure(done, "link", self.settings)) is not None:
            return Rejected(Status.COMPILE_ERROR, why, _names(found))
        if static:
            lib = self._read("cand.so")
            if (finding := object_checks.check_shared_object(lib, self.problem.entry)) is not None:
                return Rejected(Status.VIOLATION, finding.message, _names(found))
        return Built(_names(found))

    async def _preprocess(self) -> str | Rejected:
        """The candidate's own lines of `gcc -E`, at their original line numbers."""
        argv = [self.settings.node.cc, "-E", *self.compile_flags(), "-x", "c", "-", "-o", "cand.i"]
        done = await self._sandboxed(argv, stdin=self.request.source.encode())
        if (why := _compile_failure(done, "preprocessing", self.settings)) is not None:
            return Rejected(Status.COMPILE_ERROR, why, ())
        text = self._read("cand.i").decode("utf-8", "replace")
        return preprocess.own_lines(text, _STDIN)

    async def _object_evidence(self, obj: bytes) -> dict[str, str]:
        """OpenMP runtime symbols always; packed FP arithmetic when simd is forbidden."""
        disassembly = None
        if self.simd_forbidden:
            argv = ["objdump", "-d", "--no-show-raw-insn", "cand.o"]
            done = await self._sandboxed(argv, output_cap=8 << 20)
            if done.returncode != 0:
                raise InfraError(f"objdump failed on the object: {done.text(300)}")
            disassembly = done.stdout.decode(errors="replace")
        try:
            undefined = object_checks.undefined_symbols(obj)
        except ElfError:
            undefined = set()  # a malformed object: check_object says why
        return tq.from_object(undefined, disassembly)

    def _read(self, name: str) -> bytes:
        path = self.dir / name
        try:
            if path.stat().st_size > self.settings.sandbox.file_size_bytes:
                raise InfraError(f"{name} is larger than the sandbox's file size limit")
            return path.read_bytes()
        except OSError as exc:
            raise InfraError(f"cannot read {name} from the scratch directory: {exc}") from exc

    async def _sandboxed(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        output_cap: int = procs.OUTPUT_CAP_BYTES,
    ) -> procs.Completed:
        s = self.settings.sandbox
        prefix = self.sandbox.compile_prefix(
            uid=self.uid,
            threads=_COMPILE_THREADS,
            cpu_s=s.compile_cpu_s,
            memory_bytes=s.compile_memory_bytes,
            work_dir=self.dir,
        )
        cores = ",".join(map(str, self.request.cores))
        done = await procs.run(
            ["taskset", "-c", cores, *prefix, *argv],
            timeout_s=s.compile_timeout_s,
            env=minimal_env(),
            stdin=stdin,
            output_cap=output_cap,
        )
        if done.stderr.startswith(b"bwrap:") or done.returncode in (126, 127):
            raise InfraError(f"the sandbox could not start: {done.text(500)}")
        return done


def _names(found: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted(found))


def _compile_failure(done: procs.Completed, step: str, settings: EngineSettings) -> str | None:
    """Why a compiler step failed, in words (None: it succeeded). A step killed by its
    limits is the candidate's doing (a bomb), never an infrastructure failure."""
    s = settings.sandbox
    if done.timed_out:
        return f"{step} exceeded {s.compile_timeout_s:g} s"
    code = done.returncode
    if code == 0:
        return None
    # bwrap --as-pid-1 reports a command killed by signal n as 128 + n
    sig = code - 128 if code is not None and code > 128 else None
    if sig in (signal.SIGKILL, signal.SIGXCPU):
        return f"{step} exceeded its CPU limit of {s.compile_cpu_s:g} s (a macro bomb?)"
    if sig == signal.SIGXFSZ:
        return f"{step} output exceeded {s.file_size_bytes} bytes"
    text = done.text(1500)
    # The driver survives a limit that killed cc1 or as and says so in words.
    if "Killed signal terminated" in text or "CPU time limit exceeded" in text:
        return f"{step} exceeded its CPU limit of {s.compile_cpu_s:g} s (a macro bomb?)"
    if "File size limit exceeded" in text:
        return f"{step} output exceeded {s.file_size_bytes} bytes"
    if "out of memory" in text or "virtual memory exhausted" in text or "Cannot allocate" in text:
        return f"{step} exceeded its memory limit of {s.compile_memory_bytes} bytes"
    return text or f"{step} failed (exit code {code})"
