"""Which optimization techniques a C kernel uses, found by reading its source.

The SQD controller allows or forbids techniques per stage; the engine calls `detect` on
every candidate and compares the result with the stage constraints. Detection is
heuristic (the source is not compiled here) but deliberately simple to audit. It runs on
the source with comments and string literals blanked (`strip_c`), so a technique named
only in a comment or a string is not detected. The text inside `#pragma` lines and inside
`_Pragma("...")` is kept, since that string is code.

Rules, per technique (each yields the first line where it fired as evidence):

openmp
    a `#pragma omp` directive other than a pure `simd` / `declare simd` one, the same
    inside `_Pragma("omp ...")`, the bare tokens `omp parallel|for|task|...` anywhere
    (a macro that stringifies its argument into `_Pragma`), or a call to an `omp_*`
    function. `#include <omp.h>` alone is not use.
simd
    explicit vectorisation: x86 intrinsics (`_mm*_` except prefetch, pause, fences and
    `_mm_malloc`/`_mm_free`), the `__m128d/__m256d/__m512d/__mmask8...` types,
    `__builtin_ia32_*`, Arm NEON/SVE types and intrinsics (`float64x2_t`, `vld1q_f64`,
    `svfloat64_t`, `svmla_f64_x`), RISC-V `__riscv_v*`, GCC/Clang vector extensions
    (`vector_size`, `ext_vector_type`, `__builtin_shuffle`), and the directives
    `#pragma omp simd` (also `parallel for simd`), `#pragma GCC ivdep`, `#pragma ivdep`,
    `#pragma clang loop vectorize(...)`. Auto-vectorisation by the compiler and an
    `#include <immintrin.h>` alone are not detected.
cache_blocking
    a `for` loop stepping by a block size (`v += S` or `v = v + S`, where S is a constant
    >= 8 through #define/enum/const, or a run-time name such as `bs`), with a loop nested
    at most 4 levels inside it that is bounded by the block: its header mentions `v` (or a
    variable assigned from a `min(...)`-like call or ternary mentioning `v`, at most 4000
    characters before it) and its condition is a min-like call, a ternary, `&&`, such a
    variable, or mentions both `v` and S (`i < ii + BS`). A panel loop `j += 16` whose
    inner loops run to `min(j + 16, N)` therefore counts as blocking too.
register_blocking
    at least 4 distinct accumulators updated in one innermost loop. An accumulator is a
    floating-point or vector variable updated from itself (`c += ...`, `c = c + ...`,
    `c = _mm512_fmadd_pd(a, b, c)`, `c = fma(a, b, c)`); a local array of such type with a
    constant size of 4..256 elements counts as that many accumulators. Several partial
    sums of one reduction (s0..s3) therefore count too; updates of C in memory do not.
loop_unrolling
    `#pragma GCC unroll`, `#pragma unroll`, `#pragma clang loop unroll...`,
    `#pragma GCC optimize("unroll-loops")`, or manual unrolling: an innermost `for` loop
    stepping by a constant 2..8 whose body refers to its own variable at an offset below
    the step (`k + 1`, `k + 3`, `p[1]`). Unroll-and-jam of an outer loop (a loop stepping
    by 4 around an inner loop, such as the rows of a register-blocked micro-kernel or a
    k loop feeding four rows of B to an inner j loop) is not counted as unrolling.
packing
    copying from an input matrix into another buffer, found per function: inside a loop,
    an assignment statement whose right-hand side is one element of an input
    (`Bp[j*K + k] = B[k*N + j]`, `*dst++ = *src++`, `x ? B[..] : 0.0` zero padding, or a
    temporary holding one), a store call (any name containing "store": intrinsics or the
    kernel's own macros) of a load call reading an input, or a `memcpy`/`memmove` from an
    input anywhere. Inputs are dgemm's 4th and 5th parameters, `const` floating-point
    pointer parameters of any function, and pointers initialised from them. The
    destination is not dgemm's output (6th parameter) or a pointer initialised from it,
    not an input, not a local array of at most 16 elements, and not `&variable`
    (`memcpy(&v, b + j, 32)` is an unaligned vector load).

Everything is linear or bounded per match, so a hostile 256 KiB source costs about a
second at most.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hpcq.csource import (
    WORD,
    Source,
    mentions,
    split_top,
    words,
)

CATALOGUE: tuple[str, ...] = (
    "openmp",
    "simd",
    "cache_blocking",
    "register_blocking",
    "loop_unrolling",
    "packing",
)

DESCRIPTIONS: dict[str, str] = {
    "openmp": "OpenMP multithreading (#pragma omp parallel for and friends).",
    "simd": "Explicit SIMD: vector intrinsics, vector types or #pragma omp simd.",
    "cache_blocking": "Loop tiling so blocks of A, B and C stay in cache while reused.",
    "register_blocking": "A micro-kernel keeping a tile of C in several register accumulators.",
    "loop_unrolling": "Unrolled loops, by #pragma GCC unroll or by hand.",
    "packing": "Copying tiles of A or B into contiguous buffers before computing.",
}


def unknown_names(names: Iterable[str]) -> list[str]:
    """Names that are not techniques of the catalogue, in order, each once (exact match)."""
    seen: list[str] = []
    for name in names:
        if name not in CATALOGUE and name not in seen:
            seen.append(name)
    return seen


def techniques(source: str) -> frozenset[str]:
    return frozenset(detect(source))


def detect(source: str) -> dict[str, str]:
    """Map each technique found in `source` to its evidence, e.g. "line 12: #pragma omp ..."."""
    src = Source(source)
    found: dict[str, str] = {}
    for name, rule in (
        ("openmp", _openmp),
        ("simd", _simd),
        ("cache_blocking", _cache_blocking),
        ("register_blocking", _register_blocking),
        ("loop_unrolling", _loop_unrolling),
        ("packing", _packing),
    ):
        at = rule(src)
        if at is not None:
            found[name] = src.evidence(at)
    return found


# --------------------------------------------------------------------------- openmp / simd

_PRAGMA = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+([^\n]*)", re.M)
_PRAGMA_CALL = re.compile(r"\b_Pragma\s*\(\s*\"([^\"\n]*)\"")
_OMP_TOKENS = re.compile(
    r"(?<![\w\"])omp[ \t]+(parallel|for|task|taskloop|sections|single|target|teams|"
    r"distribute|critical|atomic|barrier)\b"
)
_OMP_SIMD_TOKENS = re.compile(r"(?<![\w\"])omp[ \t]+(?:\w+[ \t]+)*simd\b")
_OMP_CALL = re.compile(r"\bomp_\w+\s*\(")


def _directives(src: Source) -> list[tuple[int, str]]:
    found = [(m.start(), " ".join(m.group(1).split())) for m in _PRAGMA.finditer(src.text)]
    found += [(m.start(), " ".join(m.group(1).split())) for m in _PRAGMA_CALL.finditer(src.text)]
    return sorted(found)


def _omp_words(directive: str) -> list[str] | None:
    words = directive.split()
    return words[1:] if words and words[0] == "omp" else None


def _openmp(src: Source) -> int | None:
    hits = []
    for at, directive in _directives(src):
        rest = _omp_words(directive)
        if rest is not None and not (rest[:1] == ["simd"] or rest[:2] == ["declare", "simd"]):
            hits.append(at)
    bare = _OMP_TOKENS.search(src.text)
    for m in (bare, _OMP_CALL.search(src.text)):
        if m is not None and not _PRAGMA.match(src.text, src.text.rfind("\n", 0, m.start()) + 1):
            hits.append(m.start())
    return min(hits, default=None)


_SIMD_CODE = re.compile(
    r"\b(?!_mm_(?:prefetch|malloc|free|pause|sfence|lfence|mfence|clflush|getcsr|setcsr)\b)"
    r"_mm\d*_\w+"
    r"|\b__m(?:64|128|256|512)[dhi]?\b|\b__mmask\d+\b|\b__builtin_ia32_\w+"
    r"|\b__builtin_shuffle(?:vector)?\b|\bvector_size\b|\bext_vector_type\b"
    r"|\b(?:float|int|uint|poly)\d+x\d+(?:x\d)?_t\b"
    r"|\bv[a-z0-9]+q?_(?:n_|lane_|laneq_)?[fsu](?:8|16|32|64)\b"
    r"|\bsv(?:float|int|uint|bool)\w*_t\b|\bsv[a-z0-9]+(?:_n)?_[fsu]\d+(?:_[mxz])?\b"
    r"|\b__riscv_v\w+|\bvfloat\d+m\d+_t\b"
)
_SIMD_PRAGMA = re.compile(r"^(?:omp\b.*\bsimd\b|GCC ivdep\b|ivdep\b|clang loop vectorize)")


def _simd(src: Source) -> int | None:
    hits = [at for at, d in _directives(src) if _SIMD_PRAGMA.match(d)]
    for m in (_SIMD_CODE.search(src.text), _OMP_SIMD_TOKENS.search(src.text)):
        if m is not None:
            hits.append(m.start())
    return min(hits, default=None)


# --------------------------------------------------------------------------- cache blocking

_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_ASSIGN = re.compile(r"(?<![\w.>])(\w+)\s*=(?!=)")
_STATEMENT_CHARS = 4000  # longest right-hand side looked at


def _assignments(
    pattern: re.Pattern[str], text: str, start: int = 0, end: int | None = None, stop: str = ";"
) -> list[tuple[re.Match[str], str]]:
    """Matches of `pattern` (ending at an `=`) with the text after it up to `stop`. Finding
    the end with str.find keeps the scan linear on text without semicolons."""
    end = len(text) if end is None else end
    out = []
    for m in pattern.finditer(text, start, end):
        limit = min(end, m.end() + _STATEMENT_CHARS)
        ends = [i for i in (text.find(c, m.end(), limit) for c in stop) if i >= 0]
        if ends:
            out.append((m, text[m.end() : min(ends)]))
    return out


def _has_min(expr: str) -> bool:
    """A `min(...)`-like call (min, MIN, imin, fmin, min_int) or a ternary."""
    return "?" in expr or any("min" in m.group(1).lower() for m in _CALL.finditer(expr))


def _cache_blocking(src: Source) -> int | None:
    for k, loop in enumerate(src.loops):
        if loop.var is None or loop.step is None or not _block_step(src, loop.step):
            continue
        v = loop.var
        for inner in src.nested(k, 4):
            # variables holding the end of the block, assigned shortly before the inner loop
            region = src.text[max(loop.body_start, inner.start - 4000) : inner.start]
            bound_vars = {
                m.group(1)
                for m, rhs in _assignments(_ASSIGN, region)
                if _has_min(rhs) and mentions(rhs, v)
            }
            header = inner.init + ";" + inner.cond
            if not any(mentions(header, name) for name in {v} | bound_vars):
                continue
            cond = inner.cond
            bounded = (
                _has_min(cond)
                or "&&" in cond
                or any(mentions(cond, name) for name in bound_vars)
                or (mentions(cond, v) and words(loop.step) <= words(cond))
            )
            if bounded:
                return loop.start
    return None


def _block_step(src: Source, step: str) -> bool:
    value = src.value(step)
    if value is not None:
        return value >= 8
    return bool(words(step))  # a run-time block size such as `bs`


# --------------------------------------------------------------------------- register blocking

_UPDATE = re.compile(r"(?<![\w.>])(\w+)((?:\s*\[[^\];]{0,120}\])*)\s*([-+]?=)(?!=)")


def _register_blocking(src: Source) -> int | None:
    arrays = src.float_arrays
    scalars = src.float_scalars
    for loop in src.innermost():
        body = src.body(loop)
        names: set[str] = set()
        count = 0
        for m, rhs in _assignments(_UPDATE, body):
            name, subs, op = m.group(1), m.group(2), m.group(3)
            lvalue = name + subs
            same = r"(?<![\w.])" + re.escape(lvalue).replace(r"\ ", r"\s*") + r"(?!\w)"
            self_update = op != "=" or re.search(same, rhs) is not None
            if not self_update or name in names:
                continue
            if subs.strip() and name in arrays:
                names.add(name)
                count += arrays[name]
            elif not subs.strip() and name in scalars:
                names.add(name)
                count += 1
        if count >= 4:
            return loop.start
    return None


# --------------------------------------------------------------------------- unrolling

_UNROLL_PRAGMA = re.compile(r"^(?:GCC unroll\b|unroll\b|clang loop unroll|GCC optimize.*unroll)")


def _loop_unrolling(src: Source) -> int | None:
    hits = [at for at, d in _directives(src) if _UNROLL_PRAGMA.match(d)]
    for loop in src.innermost():
        if loop.var is None or loop.step is None:
            continue
        step = src.value(loop.step)
        if step is None or not 2 <= step <= 8:
            continue
        v = re.escape(loop.var)
        offsets = re.findall(
            rf"(?<![\w.])(?:{v}\s*\+\s*(\d+)\b|{v}\s*\[\s*(\d+)\s*\])", src.body(loop)
        )
        if any(0 < int(a or b) < step for a, b in offsets):
            hits.append(loop.start)
    return min(hits, default=None)


# --------------------------------------------------------------------------- packing

_CONST_PTR_PARAM = re.compile(
    r"[(,]\s*(?:const\s+(?:double|float)|(?:double|float)\s+const)\s*\*\s*"
    r"(?:restrict\s+|__restrict\w*\s+)?(\w+)"
)
_PTR_INIT = re.compile(r"\*\s*(?:const\s+)?(?:restrict\s+|__restrict\w*\s+)?(\w+)\s*=(?!=)")
_SUBSCRIPTS = r"(?:\s*\[[^\[\];]{0,120}(?:\[[^\[\];]{0,120}\][^\[\];]{0,120})*\])+"
_CAST = r"(?:\(\s*(?:const\s+)?(?:double|float)\s*\)\s*)?"
_COPY = re.compile(
    r"(?<![\w.>\]])(?:(?P<n1>\w+)" + _SUBSCRIPTS + r"|\*\s*\(?\s*(?P<n2>\w+)[^;=()]{0,120}\)?)"
    r"\s*=(?!=)"
)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fFlL]?"


def _packing(src: Source) -> int | None:
    hits = []
    for name, params, start, end in _functions(src):
        at = _packing_in(src, name, params, start, end)
        if at is not None:
            hits.append(at)
    return min(hits, default=None)


def _functions(src: Source) -> list[tuple[str, str, int, int]]:
    """(name, parameter text, body start, body end) of each function definition; the whole
    text as one scope named dgemm when there is none (a fragment)."""
    text, found = src.text, []
    pos = 0
    while (brace := text.find("{", pos)) >= 0:
        close = src.match.get(brace, len(text) - 1)
        head_end = brace - 1
        while head_end >= 0 and text[head_end].isspace():
            head_end -= 1
        opening = src.opener.get(head_end) if head_end >= 0 and text[head_end] == ")" else None
        if opening is not None:
            name = re.search(r"(\w+)\s*$", text[max(0, opening - 200) : opening])
            params = text[opening + 1 : head_end]
            found.append((name.group(1) if name else "", params, brace, close))
        pos = close + 1
    return found or [("dgemm", "", 0, len(text))]


def _packing_in(src: Source, name: str, params: str, start: int, end: int) -> int | None:
    text = src.text
    inputs, output = _packing_names(text[start:end], name, params)
    alt = "|".join(sorted(re.escape(n) for n in inputs if n))
    if not alt:
        return None
    pure = re.compile(
        _CAST + rf"(?:(?:{alt}){_SUBSCRIPTS}|\*\s*(?:{alt})\s*(?:\+\+)?"
        rf"|\*\s*\(\s*(?:{alt})\b[^()]*\))"
    )
    small = {n for n, size in src.float_arrays.items() if size <= 16}
    excluded = inputs | output | small
    # temporaries holding one element (or one vector) of an input: `double b = B[k*N + j];`
    temps = {
        m.group(1)
        for m, rhs in _assignments(_ASSIGN, text, start, end)
        if pure.fullmatch(rhs.strip()) or _loads_input(rhs, inputs)
    }
    hits = []
    for m, rhs in _assignments(_COPY, text, start, end):
        dest, rhs = m.group("n1") or m.group("n2"), rhs.strip()
        if dest in excluded or not _statement_start(src, m.start()) or not src.in_loop(m.start()):
            continue
        if pure.fullmatch(rhs) or rhs in temps or _padded_read(rhs, pure):
            hits.append(m.start())
    for m in _CALL.finditer(text, start, end):
        call = m.group(1)
        close = src.match.get(m.end() - 1)
        if close is None or not ("store" in call.lower() or call in ("memcpy", "memmove")):
            continue
        if close - m.end() > _STATEMENT_CHARS:
            continue
        args = split_top(text[m.end() : close], ",")
        dest = (WORD.findall(args[0]) or [""])[0]
        if dest in excluded or len(args) < 2 or re.fullmatch(r"&\s*\w+", args[0]):
            continue  # `memcpy(&v, b + j, 32)` is an unaligned load into one variable
        if call.startswith("mem"):
            copies = bool(words(args[1]) & inputs)
        else:
            copies = any(_loads_input(a, inputs) or a in temps for a in args[1:])
        if copies:
            hits.append(m.start())
    return min(hits, default=None)


def _statement_start(src: Source, pos: int) -> bool:
    """Whether a statement can begin at `pos`: after `;`, a brace, `else` or a loop/if header."""
    text = src.text
    pos -= 1
    while pos >= 0 and text[pos].isspace():
        pos -= 1
    if pos < 0 or text[pos] in ";{}":
        return True
    if text[pos] == ")":
        opening = src.opener.get(pos)
        if opening is None:
            return False
        return re.search(r"\b(for|while|if)\s*$", text[max(0, opening - 10) : opening]) is not None
    return text[max(0, pos - 4) : pos + 1] == "else"


def _padded_read(rhs: str, pure: re.Pattern[str]) -> bool:
    """`cond ? B[k*N + j] : 0.0`: a read with zero padding at the edge of a tile."""
    cond, _, rest = rhs.partition("?")
    yes, _, no = rest.partition(":")
    if not cond or not no:
        return False
    yes, no = yes.strip(), no.strip()
    return bool(
        (pure.fullmatch(yes) and re.fullmatch(_NUMBER, no))
        or (pure.fullmatch(no) and re.fullmatch(_NUMBER, yes))
    )


def _packing_names(body: str, name: str, params: str) -> tuple[set[str], set[str]]:
    """(inputs, outputs) of one function: dgemm's A, B and C by position, `const` pointer
    parameters, and pointers initialised from either."""
    names = [(WORD.findall(p) or [""])[-1] for p in params.split(",")]
    inputs, output = ({"A", "B"}, {"C"}) if not params else (set(), set())
    if name == "dgemm" and len(names) >= 6:
        inputs, output = set(names[3:5]), {names[5]}
    inputs |= {m.group(1) for m in _CONST_PTR_PARAM.finditer("(" + params)}
    for _ in range(2):  # pointers initialised from inputs (or C) are inputs (or C) too
        for m, rhs in _assignments(_PTR_INIT, body, stop=";,"):
            seen = words(rhs)
            if seen & output:
                output.add(m.group(1))
            elif seen & inputs and "alloc" not in rhs:
                inputs.add(m.group(1))
    return inputs, output


def _loads_input(expr: str, inputs: set[str]) -> bool:
    """Whether `expr` is a vector load intrinsic reading one of `inputs`."""
    expr = expr.strip()
    m = _CALL.match(expr)
    return m is not None and "load" in m.group(1).lower() and bool(words(expr[m.end() :]) & inputs)
