"""Static checks of a candidate, before anything of it runs.

Two passes:
- on the source text: size and encoding, the techniques it uses (hpcq.techniques)
  against the stage's constraints;
- on the compiled object (`nm`, `readelf`, `objdump`): the only global symbol defined is
  the entry point (helpers must be `static`, so no `clock_gettime` or `memcpy` of its
  own); every undefined symbol is on an allow-list (no BLAS, no dlopen, no stdio, no
  fork/exec/threads, no exit); no load-time constructors; no raw system-call
  instructions.
A failure is a `Finding`, which the engine turns into a `violation` result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hpcq import techniques as tq
from hpcq.outcome import Constraints

MAX_SOURCE_BYTES = 256 * 1024

# Undefined symbols a kernel may reference. gcc itself emits memcpy/memset for loops and
# __stack_chk_fail / *_chk for hardening; the rest is allocation and libm.
_ALLOWED = frozenset(
    (
        "memcpy",
        "memmove",
        "memset",
        "memcmp",
        "__memcpy_chk",
        "__memmove_chk",
        "__memset_chk",
        "__stack_chk_fail",
        "malloc",
        "calloc",
        "realloc",
        "free",
        "aligned_alloc",
        "posix_memalign",
        "_GLOBAL_OFFSET_TABLE_",
        "sqrt",
        "sqrtf",
        "fabs",
        "fabsf",
        "fma",
        "fmaf",
        "fmin",
        "fmax",
        "fminf",
        "fmaxf",
        "floor",
        "ceil",
        "round",
        "trunc",
        "exp",
        "exp2",
        "log",
        "log2",
        "log10",
        "pow",
        "sin",
        "cos",
        "tan",
        "tanh",
        "copysign",
        "ldexp",
        "frexp",
        "modf",
        "fmod",
    )
)
# OpenMP's runtime entry points (libgomp); timers and thread-count setters excluded.
_OPENMP = re.compile(
    r"^(GOMP_\w+|omp_get_(thread_num|num_threads|max_threads|num_procs)|omp_in_parallel)$"
)
_BLAS = re.compile(
    r"^(cblas_\w+|[sdcz](gemm|gemv|axpy|dot|scal|syrk|trsm)_?|openblas_\w+|mkl_\w+|bli_\w+)$", re.I
)
_LOADERS = frozenset({"dlopen", "dlsym", "dlmopen", "dlvsym", "__libc_dlopen_mode"})
_CTOR_SECTIONS = (".init_array", ".fini_array", ".preinit_array", ".ctors", ".dtors")
_SYSCALL_INSN = re.compile(r"\t(syscall|sysenter|int\s+\$0x80|svc\s+#?0x?0*)\b")


@dataclass(frozen=True)
class Finding:
    """Why a candidate is a violation, in words a model (and a person) can act on."""

    message: str


def check_source_text(source: str) -> Finding | None:
    size = len(source.encode("utf-8", "replace"))
    if size == 0 or not source.strip():
        return Finding("empty source: no code was found")
    if size > MAX_SOURCE_BYTES:
        return Finding(f"source is {size} bytes; the limit is {MAX_SOURCE_BYTES}")
    if "\x00" in source:
        return Finding("source contains NUL bytes: not C text")
    return None


def check_techniques(found: dict[str, str], constraints: Constraints) -> Finding | None:
    forbidden = sorted(set(found) & constraints.forbidden)
    if forbidden:
        evidence = "; ".join(f"{t} ({found[t]})" for t in forbidden)
        return Finding(f"uses technique(s) this stage forbids: {evidence}")
    missing = sorted(constraints.required - set(found))
    if missing:
        return Finding(f"does not use technique(s) this stage requires: {', '.join(missing)}")
    return None


def detect_techniques(source: str) -> dict[str, str]:
    return tq.detect(source)


def parse_nm(text: str) -> tuple[set[str], set[str], set[str]]:
    """`nm -P` output -> (global defined symbols, undefined symbols, IFUNC symbols)."""
    defined: set[str] = set()
    undefined: set[str] = set()
    ifuncs: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind in ("U", "w", "v"):
            undefined.add(name)
        elif kind == "i":
            ifuncs.add(name)
        elif kind.isupper():
            defined.add(name)
    return defined, undefined, ifuncs


def check_ifuncs(ifuncs: set[str]) -> Finding | None:
    # An IFUNC resolver runs while the object is loaded, before the runner's strict
    # seccomp layer: load-time code, like a constructor.
    if ifuncs:
        return Finding(
            f"defines IFUNC symbol(s) {', '.join(sorted(ifuncs))}: load-time code is not allowed"
        )
    return None


def check_symbols(
    defined: set[str], undefined: set[str], entry: str, constraints: Constraints
) -> Finding | None:
    if entry not in defined:
        return Finding(f"entry point `{entry}` is not defined (or is static)")
    extra = sorted(defined - {entry})
    if extra:
        return Finding(
            f"defines global symbol(s) {', '.join(extra)}: only `{entry}` may be global; "
            "make helpers `static` and do not replace library or timer functions"
        )
    blas = sorted(s for s in undefined if _BLAS.match(s))
    if blas:
        return Finding(f"calls a library BLAS ({', '.join(blas)}): write the kernel yourself")
    loaders = sorted(undefined & _LOADERS)
    if loaders:
        return Finding(f"loads code at run time ({', '.join(loaders)})")
    omp = sorted(s for s in undefined if _OPENMP.match(s))
    if omp and "openmp" in constraints.forbidden:
        return Finding(f"uses OpenMP ({', '.join(omp)}) but this stage forbids openmp")
    other = sorted(s for s in undefined if s not in _ALLOWED and not _OPENMP.match(s))
    if other:
        return Finding(
            f"calls {', '.join(other)}, not allowed in a kernel "
            "(allowed: memory allocation and copying, libm, OpenMP when the stage allows it)"
        )
    return None


def check_sections(readelf_sections: str) -> Finding | None:
    found = [
        s for s in _CTOR_SECTIONS if re.search(rf"\s{re.escape(s)}(\.\S*)?\s", readelf_sections)
    ]
    if found:
        return Finding(f"has load-time code ({', '.join(found)}): constructors are not allowed")
    return None


def check_disassembly(objdump: str) -> Finding | None:
    match = _SYSCALL_INSN.search(objdump)
    if match:
        return Finding(f"contains a raw system-call instruction ({match.group(1).strip()})")
    return None
