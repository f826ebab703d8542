"""Static checks of a candidate's text and symbols, before anything of it runs.

- on the source text: size and encoding (`check_source_text`), and the techniques it
  uses (hpcq.eval.techniques, on what gcc -E reads) against the stage's constraints
  (`check_techniques`);
- the symbol policy of a compiled kernel (`check_symbols`): the only global symbol
  defined is the entry point (helpers must be `static`, so no `clock_gettime` or
  `memcpy` of its own); every undefined symbol on an allow-list (no BLAS, no dlopen, no
  stdio, no fork/exec/threads, no exit; OpenMP only where the stage allows it).
hpcq.eval.object_checks applies it to the object, with everything else the ELF files say.
A failure is a `Finding`, which the engine turns into a `violation` result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hpcq.outcome import Constraints

MAX_SOURCE_BYTES = 256 * 1024


def word_set(text: str) -> frozenset[str]:
    """The whitespace-separated words of `text` (symbol lists written as prose)."""
    return frozenset(text.split())


# Undefined symbols a kernel may reference. gcc itself emits memcpy/memset for loops and
# __stack_chk_fail / *_chk for hardening; then allocation and libm; libgcc's CPU model
# for __builtin_cpu_supports dispatch (its constructor only runs cpuid) and the TLS
# accessor for `static __thread` scratch (it allocates, nothing else).
_ALLOWED = word_set(
    """
    memcpy memmove memset memcmp __memcpy_chk __memmove_chk __memset_chk __stack_chk_fail
    malloc calloc realloc free aligned_alloc posix_memalign _GLOBAL_OFFSET_TABLE_
    sqrt sqrtf fabs fabsf fma fmaf fmin fmax fminf fmaxf floor ceil round trunc
    exp exp2 log log2 log10 pow sin cos tan tanh copysign ldexp frexp modf fmod
    __cpu_model __cpu_features2 __cpu_indicator_init __tls_get_addr
    """
)
# OpenMP's runtime entry points (libgomp); timers and thread-count setters excluded.
_OPENMP = re.compile(
    r"^(GOMP_\w+|omp_get_(thread_num|num_threads|max_threads|num_procs)|omp_in_parallel)$"
)
_BLAS = re.compile(
    r"^(cblas_\w+|[sdcz](gemm|gemv|axpy|dot|scal|syrk|trsm)_?|openblas_\w+|mkl_\w+|bli_\w+)$", re.I
)
_LOADERS = frozenset({"dlopen", "dlsym", "dlmopen", "dlvsym", "__libc_dlopen_mode"})


@dataclass(frozen=True)
class Finding:
    """Why a candidate is a violation, in words a model (and a person) can act on."""

    message: str


def printable(name: str, limit: int = 60) -> str:
    """A symbol or section name, which the candidate chose, made printable and short."""
    text = "".join(c if c.isprintable() else "?" for c in name[:limit])
    return text + ("..." if len(name) > limit else "")


def printable_list(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ", ".join(printable(n) for n in listed[:8]) + (", ..." if len(listed) > 8 else "")


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


def check_symbols(
    defined: set[str], undefined: set[str], entry: str, constraints: Constraints
) -> Finding | None:
    if entry not in defined:
        return Finding(f"entry point `{entry}` is not defined (or is static)")
    extra = sorted(defined - {entry})
    if extra:
        return Finding(
            f"defines global symbol(s) {printable_list(extra)}: only `{entry}` may be global; "
            "make helpers `static` and do not replace library or timer functions"
        )
    blas = sorted(s for s in undefined if _BLAS.match(s))
    if blas:
        return Finding(f"calls a library BLAS ({printable_list(blas)}): write the kernel yourself")
    loaders = sorted(undefined & _LOADERS)
    if loaders:
        return Finding(f"loads code at run time ({printable_list(loaders)})")
    omp = sorted(s for s in undefined if _OPENMP.match(s))
    if omp and "openmp" in constraints.forbidden:
        return Finding(f"uses OpenMP ({printable_list(omp)}) but this stage forbids openmp")
    other = sorted(s for s in undefined if not may_import(s))
    if other:
        return Finding(
            f"calls {printable_list(other)}, not allowed in a kernel "
            "(allowed: memory allocation and copying, libm, OpenMP when the stage allows it)"
        )
    return None


def may_import(name: str) -> bool:
    """Whether a kernel may reference `name` at all (the stage may still forbid OpenMP)."""
    return name in _ALLOWED or _OPENMP.match(name) is not None
