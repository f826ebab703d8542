"""Which optimization techniques a C kernel uses, found by reading what the compiler reads.

The SQD controller allows or forbids techniques per stage; the engine calls `detect` on
every candidate and compares the result with the stage constraints. `detect` takes the
candidate's own lines of its `gcc -E` output (`hpcq.eval.csource.preprocess.own_lines`: macros
expanded, `#define` lines and `#if 0` code gone, `_Pragma` turned into `#pragma`), so
token pasting, stringizing and disabled code all read as the compiler reads them; it
also works on raw source (the bootstrap corpus labels templates with it), where it reads
`#define` constants itself. Comments and string literals are blanked first (`strip_c`),
so a technique named only in a comment or a string is not detected; the text of
`#pragma` lines, the string of `_Pragma("...")`, the strings of `optimize(...)`
attributes and every string inside an `asm` statement are kept, since they are code.
`from_object` adds evidence read from the compiled object where it is decisive.

Rules, per technique (each yields the first line where it fired as evidence):

openmp
    a `#pragma omp` directive other than a pure `simd` / `declare simd` one, the same
    inside `_Pragma("omp ...")`, the bare tokens `omp parallel|for|task|...` anywhere
    (raw text: a macro that stringifies its argument into `_Pragma`), a call to an
    `omp_*` function, or any mention of the runtime's entry points (`GOMP_*`,
    `__builtin_GOMP_*`, `__kmpc_*`). `#include <omp.h>` alone is not use.
simd
    explicit vectorisation: x86 intrinsics (`_mm*_` except prefetch, pause, fences and
    `_mm_malloc`/`_mm_free`), the `__m128d/__m256d/__m512d/__mmask8...` types,
    `__builtin_ia32_*`, Arm NEON/SVE types and intrinsics (`float64x2_t`, `vld1q_f64`,
    `svfloat64_t`, `svmla_f64_x`), RISC-V `__riscv_v*`, GCC/Clang vector extensions in
    any spelling (`vector_size`, `__vector_size__`, `ext_vector_type`, a vector
    `mode(V4DF)`, `__builtin_shuffle`, `__builtin_shufflevector`,
    `__builtin_convertvector`), the `simd` function attribute, an `optimize` pragma or
    attribute that turns a vectoriser on (`"tree-vectorize"`, not `"no-tree-vectorize"`),
    the directives `#pragma omp simd` (also `parallel for simd`, `declare simd`),
    `#pragma GCC ivdep`, `#pragma ivdep`, `#pragma clang loop vectorize(...)`, and vector
    code in inline assembly: in the strings of an `asm` statement or asm label, an x86
    256- or 512-bit register (`ymm0`..`ymm31`, `zmm0`..`zmm31`, any prefix), an x86
    instruction whose mnemonic ends in `pd` or `ps` (packed double/single: `addpd`,
    `vmovupd`, `vfmadd231pd`, `shufps`), or an AArch64 vector register with an
    arrangement (`v0.2d`, `v1.4s`, `v2.d[1]`) or an SVE one (`z0.d`). Scalar SSE in asm
    (`addsd %xmm1, %xmm0`) and machine code written as bytes (`.byte 0xc4, ...`) are not
    seen here: the latter is what `from_object` is for. Auto-vectorisation by the
    compiler and an `#include <immintrin.h>` alone are not detected.
cache_blocking
    a loop (`for`, `while` or `do`; csource's loop model finds a `while` loop's
    increment among the last statements of its body and its init just before it)
    stepping by a block size (`v += S`, `v = v + S`, `v -= S`, where S is a constant >= 8
    (a literal, #define, enum or const, `sizeof` included) or a run-time name such as
    `bs`), with a loop nested at most 4 levels inside it that is bounded by the block:
    its header mentions `v` (or a variable assigned from a `min(...)`-like call or
    ternary mentioning `v`, at most 4000 characters before it) and its condition is a
    min-like call, a ternary, `&&`, such a variable, or mentions both `v` and S
    (`i < ii + BS`, `i < ii + 64`). A panel loop `j += 16` whose inner loops run to
    `min(j + 16, N)` therefore counts as blocking too.
register_blocking
    at least 4 distinct accumulators updated in one innermost loop. An accumulator is a
    floating-point or vector variable updated from itself (`c += ...`, `c = c + ...`,
    `c = _mm512_fmadd_pd(a, b, c)`, `c = fma(a, b, c)`); a local array of such type with a
    constant size of 4..256 elements counts as that many accumulators (sizes are constant
    expressions: `double acc[sizeof(double) / 2][4]` is 16, see
    hpcq.eval.csource.constexpr for the LP64 data model). Several partial sums of one
    reduction (s0..s3) therefore count too; updates of C in memory do not.
loop_unrolling
    `#pragma GCC unroll`, `#pragma unroll`, `#pragma clang loop unroll...`, an `optimize`
    pragma or attribute naming `unroll-loops` or `unroll-all-loops`, or manual
    unrolling: an innermost loop stepping by a constant 2..8 whose body refers to its own
    variable at an offset below the step (`k + 1`, `k + 3`, `p[1]`). Unroll-and-jam of an
    outer loop (a loop stepping by 4 around an inner loop, such as the rows of a
    register-blocked micro-kernel) is not counted as unrolling.
packing
    copying from an input matrix into another buffer, found per function (see
    hpcq.eval.packing): inside a loop, a store to memory (`Bp[...] = ...`, `*dst++ = ...`,
    `*(v4d *)(Bp + j) = ...`) or a store call (a name with "store", "stream", "scatter" or
    `st1`: intrinsics or the kernel's own macros) whose value reads elements of exactly
    one input, whatever arithmetic surrounds them (`1.0 * B[..]`, `alpha * B[..]`,
    `B[..] + 0.0`, `-(-B[..])`, `x ? B[..] : 0.0`, a temporary holding one, a vector
    load of one); or a `memcpy`/`memmove`/`mempcpy`/`bcopy` from an input anywhere. A
    value reading two inputs (`A[..] * B[..]`) is arithmetic, not a copy, and so is a
    value reading its own destination (`t[j] = t[j] + a * x[j]` updates t). Inputs are
    dgemm's 4th and 5th parameters, `const` floating-point pointer parameters of any
    function, and pointers assigned from them. The destination is not dgemm's output (6th
    parameter), a pointer assigned from it or a helper's parameter that a call passes it
    to, not an input, not a local array of at most 16 elements, and not `&variable`
    (`memcpy(&v, b + j, 32)` is an unaligned load).

Not detected: techniques hidden behind recursion or `goto` loops, `sizeof` of a
variable, and a copy whose value also reads the other input or its own destination on
purpose (`Bp[i] = B[i] + 0.0 * Bp[i]`). Everything is
linear or bounded per match, so a hostile 256 KiB source costs about a second at most.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from hpcq.eval import packing
from hpcq.eval.csource.declarations import (
    ASSIGN,
    STATEMENT_CHARS,
    assignments,
    float_arrays,
    float_scalars,
)
from hpcq.eval.csource.model import CALL, Loop, Source, words
from hpcq.eval.csource.strip import ASM_OPEN

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
    """Map each technique found in `source` to its evidence, e.g. "line 12: #pragma omp ...".
    `source` is best `hpcq.eval.csource.preprocess.own_lines` of the candidate's `gcc -E`
    output; raw source works too."""
    src = Source(source)
    found: dict[str, str] = {}
    for name, rule in (
        ("openmp", _openmp),
        ("simd", _simd),
        ("cache_blocking", _cache_blocking),
        ("register_blocking", _register_blocking),
        ("loop_unrolling", _loop_unrolling),
        ("packing", packing.first_copy),
    ):
        at = rule(src)
        if at is not None:
            found[name] = src.evidence(at)
    return found


# --------------------------------------------------------------------------- object code

_OPENMP_SYMBOL = re.compile(r"(?:GOMP_|omp_|__kmpc_)\w+")
_INSTRUCTION = re.compile(
    r"^\s*[0-9a-f]+:\s+(?:(?:[0-9a-f]{2} )+\s*|[0-9a-f]{8}\s+)?(?P<insn>[a-z{][^\n]*)$", re.M
)
_PREFIXES = {"lock", "rep", "repz", "repe", "repnz", "repne", "notrack", "bnd", "data16",
             "addr32", "cs", "ds", "es", "ss", "fs", "gs"}  # fmt: skip
_X86_PACKED_FP = re.compile(
    r"v?(?:add|sub|mul|div|min|max|sqrt|addsub|hadd|hsub|dp|rcp(?:14|28)?|rsqrt(?:14|28)?"
    r"|scalef|f(?:n?m(?:add|sub)|maddsub|msubadd)(?:132|213|231)?)p[sdh]"
)
_ARM_FP = re.compile(
    r"f(?:add|sub|mul|div|mla|mls|min|max|minnm|maxnm|sqrt|mulx|addp|abd|recp[es]|rsqrt[es]"
    r"|mad|msb|nmla|nmls|nmad|nmsb)"
)
_ARM_VECTOR = re.compile(r"\b(?:v\d{1,2}\.\d*[hsd]|z\d{1,2}\.[hsd])\b")


def from_object(undefined_symbols: Iterable[str], disassembly: str | None) -> dict[str, str]:
    """Evidence read from the compiled candidate: "openmp" when it references the OpenMP
    runtime (an undefined `GOMP_*`, `omp_*` or `__kmpc_*` symbol, version suffixes such
    as `@GOMP_4.0` ignored); "simd" when `disassembly` (`objdump -d --no-show-raw-insn`,
    raw bytes tolerated; x86_64 AT&T or AArch64) holds packed floating-point arithmetic:
    add, sub, mul, div, min, max, sqrt, reciprocal, dot product or fused multiply-add on
    packed doubles, singles or halves (`vfmadd231pd`, `vmulpd`, `addpd`, `vaddps`; on
    AArch64 `fmla v0.2d, ...`, SVE `z0.d`). Moves, shuffles, broadcasts, logic and scalar
    `sd`/`ss` forms are not. Pass the disassembly only of an object compiled with the
    auto-vectoriser off (`-fno-tree-vectorize -fno-tree-slp-vectorize`): then packed
    arithmetic can only come from the candidate asking for it."""
    found: dict[str, str] = {}
    symbols = sorted({s.strip().split("@")[0] for s in undefined_symbols})
    openmp = [s for s in symbols if _OPENMP_SYMBOL.fullmatch(s)]
    if openmp:
        found["openmp"] = f"object: calls {openmp[0]}"
    if disassembly:
        mnemonic = _packed_fp(disassembly)
        if mnemonic is not None:
            found["simd"] = f"object: {mnemonic} (packed FP arithmetic)"
    return found


def _packed_fp(disassembly: str) -> str | None:
    """The first packed floating-point arithmetic instruction's mnemonic, or None."""
    for m in _INSTRUCTION.finditer(disassembly):
        tokens = m.group("insn").replace("\t", " ").split(" ")
        tokens = [t for t in tokens if t]
        while tokens and (tokens[0] in _PREFIXES or tokens[0].startswith("{")):
            tokens.pop(0)
        if not tokens:
            continue
        mnemonic, operands = tokens[0], " ".join(tokens[1:])
        if _X86_PACKED_FP.fullmatch(mnemonic):
            return mnemonic
        if _ARM_FP.fullmatch(mnemonic) and _ARM_VECTOR.search(operands):
            return mnemonic
    return None


# --------------------------------------------------------------------------- openmp / simd

_PRAGMA = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+([^\n]*)", re.M)
_PRAGMA_CALL = re.compile(r'\b_Pragma\s*\(\s*"((?:[^"\\\n]|\\.)*)"')
_OMP_TOKENS = re.compile(
    r"(?<![\w\"])omp[ \t]+(parallel|for|task|taskloop|sections|single|target|teams|"
    r"distribute|critical|atomic|barrier|loop)\b"
)
_OMP_SIMD_TOKENS = re.compile(r"(?<![\w\"])omp[ \t]+(?:\w+[ \t]+)*simd\b")
_OMP_CALL = re.compile(r"\bomp_\w+\s*\(|\b(?:__builtin_)?GOMP_\w+|\b__kmpc_\w+")


def _directives(src: Source) -> list[tuple[int, str]]:
    found = [(m.start(), " ".join(m.group(1).split())) for m in _PRAGMA.finditer(src.text)]
    for m in _PRAGMA_CALL.finditer(src.text):
        text = re.sub(r"\\(.)", r"\1", m.group(1))
        found.append((m.start(), " ".join(text.split())))
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
    r"|\b__builtin_(?:shuffle|shufflevector|convertvector)\b"
    r"|\b(?:__)?(?:vector_size|ext_vector_type)(?:__)?\b"
    r"|\b(?:__)?mode(?:__)?\s*\(\s*(?:__)?V\d+[A-Z]+(?:__)?\s*\)"
    r"|\b__attribute__\s*\(\(\s*(?:__)?simd(?:__)?\b"
    r"|\b(?:float|int|uint|poly)\d+x\d+(?:x\d)?_t\b"
    r"|\bv[a-z0-9]+q?_(?:n_|lane_|laneq_)?[fsu](?:8|16|32|64)\b"
    r"|\bsv(?:float|int|uint|bool)\w*_t\b|\bsv[a-z0-9]+(?:_n)?_[fsu]\d+(?:_[mxz])?\b"
    r"|\b__riscv_v\w+|\bvfloat\d+m\d+_t\b"
)
_SIMD_PRAGMA = re.compile(r"^(?:omp\b.*\bsimd\b|GCC ivdep\b|ivdep\b|clang loop vectorize)")
_OPTIMIZE = re.compile(r"\b(?:GCC[ \t]+)?(?:__)?optimize(?:__)?\s*\(([^()]*)\)")


def _simd(src: Source) -> int | None:
    hits = [at for at, d in _directives(src) if _SIMD_PRAGMA.match(d)]
    for m in (_SIMD_CODE.search(src.text), _OMP_SIMD_TOKENS.search(src.text)):
        if m is not None:
            hits.append(m.start())
    hits += [at for at, opts in _optimize_options(src) if any("vectorize" in o for o in opts)]
    asm = _vector_asm(src)
    if asm is not None:
        hits.append(asm)
    return min(hits, default=None)


def _optimize_options(src: Source) -> list[tuple[int, list[str]]]:
    """(offset, options) of each `optimize` pragma or attribute: `"-funroll-loops"` and
    `"unroll-loops"` both read `unroll-loops`; negated options (`no-...`) are left out."""
    out = []
    for m in _OPTIMIZE.finditer(src.text):
        options = []
        for raw in re.findall(r'"([^"]*)"', m.group(1).replace('\\"', '"')):  # in _Pragma
            for option in raw.split(","):
                option = option.strip().removeprefix("-").removeprefix("f")
                if option and not option.startswith("no-"):
                    options.append(option)
        out.append((m.start(), options))
    return out


_ASM_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_VECTOR_REGISTER = re.compile(
    r"(?<![\w.])%{0,2}[yz]mm(?:[12]?\d|3[01])\b|\bv(?:[12]?\d|3[01])\.\d*[bhsdq]\b"
    r"|\bz(?:[12]?\d|3[01])\.[bhsdq]\b"
)
_PACKED_MNEMONIC = re.compile(r"v?[a-z]\w*p[sd]")


def _vector_asm(src: Source) -> int | None:
    """The offset of the first asm statement or label whose strings hold vector code."""
    text = src.text
    for m in ASM_OPEN.finditer(text):
        close = src.match.get(m.end() - 1)
        if close is None:
            continue
        strings = " ".join(_ASM_STRING.findall(text, m.end(), close))
        if _VECTOR_REGISTER.search(strings) or _packed_asm(strings):
            return m.start()
    return None


def _packed_asm(code: str) -> bool:
    """Whether an instruction of `code` (asm string contents) is a packed x86 one."""
    code = code.replace("\\n", "\n").replace("\\t", " ").replace(";", "\n")
    for statement in code.split("\n"):
        parts = statement.split(":")[-1].split()  # after any label
        if parts and _PACKED_MNEMONIC.fullmatch(parts[0].lower()):
            return True
    return False


# --------------------------------------------------------------------------- cache blocking


def _has_min(expr: str) -> bool:
    """A `min(...)`-like call (min, MIN, imin, fmin, min_int) or a ternary."""
    return "?" in expr or any("min" in m.group(1).lower() for m in CALL.finditer(expr))


def _cache_blocking(src: Source) -> int | None:
    inner_loops: dict[int, _Inner] = {}
    index = {loop.start: k for k, loop in enumerate(src.loops)}
    for k, loop in enumerate(src.loops):
        if loop.var is None or loop.step is None or not _block_step(src, loop.step):
            continue
        names_step = _step_test(loop.step, src.value(loop.step))
        for inner in src.nested(k, 4):
            if inner.start not in inner_loops:
                top = src.enclosing(index[inner.start], 4)  # any loop looking at `inner`
                inner_loops[inner.start] = _Inner(src, inner, max(top, inner.start - 4000))
            if inner_loops[inner.start].bounded_by(loop.var, loop.body_start, names_step):
                return loop.start
    return None


class _Inner:
    """A loop nested in a candidate block loop, and what it offers as a block bound."""

    def __init__(self, src: Source, loop: Loop, region_start: int) -> None:
        self.header = words(loop.init + ";" + loop.cond)
        self.cond_words, self.cond = words(loop.cond), loop.cond
        self.direct = _has_min(loop.cond) or "&&" in loop.cond
        # assignments from a min-like call or a ternary before the loop: block ends
        self.ends = [
            (region_start + m.start(), m.group(1), words(rhs))
            for m, rhs in assignments(ASSIGN, src.text[region_start : loop.start])
            if _has_min(rhs)
        ]

    def bounded_by(self, v: str, body_start: int, names_step: Callable[[str], bool]) -> bool:
        """Whether this loop runs within the block of variable `v` (see the docstring)."""
        direct = self.direct or (v in self.cond_words and names_step(self.cond))
        if direct and v in self.header:
            return True
        ends = [n for at, n, rhs in self.ends if at >= body_start and v in rhs]
        in_header = v in self.header or any(n in self.header for n in ends)
        return in_header and (direct or any(n in self.cond_words for n in ends))


def _block_step(src: Source, step: str) -> bool:
    value = src.value(step)
    if value is not None:
        return value >= 8
    return bool(words(step))  # a run-time block size such as `bs`


def _step_test(step: str, value: int | None) -> Callable[[str], bool]:
    """A test of whether a condition names the step: its names (`BS`), else its text or
    its value (`64`)."""
    names = words(step)
    if names and not step.lstrip("(").startswith("sizeof"):
        return lambda cond: names <= words(cond)
    flat = "".join(step.split())
    number = re.compile(rf"(?<![\w.]){value}(?![\w.])") if value is not None else None
    return lambda cond: flat in "".join(cond.split()) or bool(number and number.search(cond))


# --------------------------------------------------------------------------- register blocking

_UPDATE = re.compile(r"(?<![\w.>])(\w+)((?:\s*\[[^\];]{0,120}\])*)\s*([-+]?=)(?!=)")


def _register_blocking(src: Source) -> int | None:
    arrays = float_arrays(src)
    scalars = float_scalars(src)
    for loop in src.innermost():
        names: set[str] = set()
        count = 0
        for m in _UPDATE.finditer(src.text, loop.body_start, loop.body_end):
            name, subs, op = m.group(1), m.group(2).strip(), m.group(3)
            if name in names or not (name in arrays if subs else name in scalars):
                continue
            semi = src.text.find(";", m.end(), min(loop.body_end, m.end() + STATEMENT_CHARS))
            if semi < 0:
                continue
            same = r"(?<![\w.])" + re.escape(name + subs).replace(r"\ ", r"\s*") + r"(?!\w)"
            if op == "=" and re.search(same, src.text[m.end() : semi]) is None:
                continue  # not updated from itself
            names.add(name)
            count += arrays[name] if subs else 1
        if count >= 4:
            return loop.start
    return None


# --------------------------------------------------------------------------- unrolling

_UNROLL_PRAGMA = re.compile(r"^(?:GCC unroll\b|unroll\b|clang loop unroll)")


def _loop_unrolling(src: Source) -> int | None:
    hits = [at for at, d in _directives(src) if _UNROLL_PRAGMA.match(d)]
    hits += [
        at
        for at, opts in _optimize_options(src)
        if any(o in ("unroll-loops", "unroll-all-loops") for o in opts)
    ]
    for loop in src.innermost():
        if loop.var is None or loop.step is None:
            continue
        step = src.value(loop.step)
        if step is None or not 2 <= step <= 8:
            continue
        v = re.escape(loop.var)
        sign = "-" if re.search(r"-=|--|=.*-", loop.incr) else r"\+"  # a loop counting down
        offsets = re.findall(
            rf"(?<![\w.])(?:{v}\s*{sign}\s*(\d+)\b|{v}\s*\[\s*(\d+)\s*\])", src.body(loop)
        )
        if any(0 < int(a or b) < step for a, b in offsets):
            hits.append(loop.start)
    return min(hits, default=None)
