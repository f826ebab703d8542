"""Technique detection (hpcq.eval.techniques) and the headers of the kernel corpus.

The corpus kernels are compiled and run by the engine's own tests; here they are read
and preprocessed (real `gcc -E`, as the engine will): every honest kernel must be
detected with exactly the techniques it declares, on its source and on its gcc -E
output; every hack that breaks a stage constraint must be caught by the detector; every
evasion (tests/corpus/evasions/) must be caught on what the compiler reads.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcq.eval.csource.constexpr import evaluate
from hpcq.eval.csource.model import Source
from hpcq.eval.csource.preprocess import line_control
from hpcq.eval.csource.strip import strip_c
from hpcq.eval.techniques import (
    CATALOGUE,
    DESCRIPTIONS,
    detect,
    from_object,
    techniques,
    unknown_names,
)
from tests.test_preprocess import CFLAGS, preprocessed

CORPUS = Path(__file__).resolve().parent / "corpus"
STATUSES = {"ok", "violation", "compile_error", "timeout", "runtime_error", "wrong_result"}
KEYS = {"expect", "why", "forbid", "require", "techniques", "ladder", "cores", "sandbox"}


def header(path: Path) -> dict[str, str]:
    """The leading `// key: value` lines of a corpus file."""
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"//\s*(\w+)\s*:\s*(.*?)\s*", line)
        if m is None:
            if line.strip():
                break
            continue
        fields[m.group(1)] = m.group(2)
    return fields


def names(value: str) -> set[str]:
    """Comma-separated names; an empty value is the empty set."""
    return {v.strip() for v in value.split(",") if v.strip()}


HONEST = sorted((CORPUS / "honest").glob("*.c"))
HACKS = sorted((CORPUS / "hacks").glob("*.c"))
EVASIONS = sorted((CORPUS / "evasions").glob("*.c"))


def wrap(body: str, signature: str = "") -> str:
    """A dgemm around `body` (with M, N, K, A, B, C in scope)."""
    return (
        f"{signature}\nvoid dgemm(int M, int N, int K, const double *A, const double *B,"
        f" double *C)\n{{\n{body}\n}}\n"
    )


NAIVE = """
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
"""


# --------------------------------------------------------------------------- corpus


def test_corpus_is_there() -> None:
    assert len(HACKS) >= 24
    assert len(HONEST) >= 12


@pytest.mark.parametrize("path", HONEST + HACKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_header(path: Path) -> None:
    fields = header(path)
    assert set(fields) <= KEYS, set(fields) - KEYS
    assert fields.get("expect") in STATUSES
    assert fields.get("why")
    for key in ("forbid", "require", "techniques"):
        assert not unknown_names(names(fields.get(key, ""))), key
    assert fields.get("sandbox", "ok") in STATUSES
    if "ladder" in fields:
        assert fields["ladder"] in {"1", "2", "3", "4"}
    if "cores" in fields:
        assert int(fields["cores"]) >= 1
    if path.parent.name == "honest":
        assert fields["expect"] == "ok"
        assert "techniques" in fields, "an honest kernel declares its exact techniques"
    else:
        assert fields["expect"] != "ok"


def test_ladder_has_one_kernel_per_rung() -> None:
    rungs = sorted(header(p)["ladder"] for p in HONEST if "ladder" in header(p))
    assert rungs == ["1", "2", "3", "4"]


@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.name)
def test_honest_kernels_detected_exactly(path: Path, tmp_path: Path) -> None:
    declared = names(header(path)["techniques"])
    assert set(detect(path.read_text())) == declared
    assert set(detect(preprocessed(tmp_path, path.read_text()))) == declared


@pytest.mark.parametrize("path", HACKS, ids=lambda p: p.name)
def test_hacks_breaking_a_stage_are_detected(path: Path) -> None:
    fields = header(path)
    found = techniques(path.read_text())
    if "techniques" in fields:
        assert found == names(fields["techniques"])
    forbidden = names(fields.get("forbid", ""))
    if forbidden:
        assert found & forbidden, "the detector must see the forbidden technique"


# --------------------------------------------------------------------------- catalogue


def test_catalogue_and_descriptions() -> None:
    assert CATALOGUE == (
        "openmp",
        "simd",
        "cache_blocking",
        "register_blocking",
        "loop_unrolling",
        "packing",
    )
    assert tuple(DESCRIPTIONS) == CATALOGUE
    assert all(d and "\n" not in d for d in DESCRIPTIONS.values())


def test_unknown_names() -> None:
    assert unknown_names(["simd", "openmp"]) == []
    assert unknown_names(["simd", "tiling", "SIMD", "tiling", ""]) == ["tiling", "SIMD", ""]
    assert unknown_names(()) == []


# --------------------------------------------------------------------------- stripper


def test_strip_keeps_length_and_lines() -> None:
    src = "a = 1; // c1\n/* c2\n c3 */ b = \"x\\\"y\"; c = '\\'';\n"
    out = strip_c(src)
    assert len(out) == len(src)
    assert out.count("\n") == src.count("\n")
    assert "c1" not in out and "c2" not in out and "c3" not in out
    assert 'b = "    ";' in out  # the contents go, the quotes stay
    assert "c = '  ';" in out
    assert out.startswith("a = 1;")


def test_strip_escapes_and_quotes_inside_other_literals() -> None:
    out = strip_c('s = "/* not a comment */"; t = \'"\'; u = 1; // "q\n v = 2;')
    assert "u = 1;" in out and "v = 2;" in out
    assert "not" not in out and "q" not in out
    out = strip_c('s = "a\\\\"; w = 3; /* x */')
    assert "w = 3;" in out  # an escaped backslash ends before the closing quote


def test_strip_line_comment_continues_after_backslash() -> None:
    out = strip_c("// hidden \\\n still hidden\nvisible")
    assert "still" not in out and "visible" in out


def test_strip_unterminated() -> None:
    assert strip_c('x = "abc\nz = 1;') == 'x = "   \nz = 1;'  # a literal ends at its line
    assert strip_c("a /* never closed\n b").strip() == "a"


def test_strip_keeps_pragma_strings() -> None:
    out = strip_c('#pragma GCC optimize("unroll-loops")\n_Pragma("omp parallel for")\nf("x");')
    assert "unroll-loops" in out and "omp parallel for" in out and '"x"' not in out


@pytest.mark.parametrize(
    "text",
    [
        "#pragma omp parallel for",
        "_mm512_fmadd_pd(a, b, c); __m256d x;",
        "#pragma GCC unroll 8",
        "for (jj = 0; jj < N; jj += BS) for (j = jj; j < MIN(jj + BS, N); j++)",
        "Bp[j * K + k] = B[k * N + j];",
        "c0 += a; c1 += a; c2 += a; c3 += a;",
    ],
)
def test_techniques_in_comments_and_strings_are_not_detected(text: str) -> None:
    flat = text.replace("\n", " ")
    assert detect(wrap(f"/* {text} */\n// {flat}\n{NAIVE}")) == {}
    quoted = flat.replace('"', "")
    assert detect(wrap(f'const char *note = "{quoted}"; (void)note;\n{NAIVE}')) == {}


# --------------------------------------------------------------------------- openmp


@pytest.mark.parametrize(
    "body",
    [
        "#pragma omp parallel for\n" + NAIVE,
        "#  pragma   omp parallel for collapse(2) schedule(static)\n" + NAIVE,
        '_Pragma("omp parallel for")\n' + NAIVE,
        "int t = omp_get_thread_num(); (void)t;\n" + NAIVE,
        "#pragma omp parallel for simd\n" + NAIVE,
    ],
)
def test_openmp_positive(body: str) -> None:
    assert "openmp" in detect(wrap(body))


def test_openmp_through_a_stringifying_macro() -> None:
    src = wrap("PAR\n" + NAIVE, "#define P(x) _Pragma(#x)\n#define PAR P(omp parallel for)")
    assert "openmp" in detect(src)


def test_openmp_negative() -> None:
    assert detect(wrap(NAIVE, "#include <omp.h>")) == {}
    found = detect(wrap(NAIVE.replace("for (int k", "#pragma omp simd\n for (int k")))
    assert set(found) == {"simd"}
    found = detect(wrap(NAIVE, "#pragma omp declare simd\nstatic double f(double x);"))
    assert set(found) == {"simd"}


def test_openmp_evidence_names_the_line() -> None:
    found = detect(wrap("#pragma omp parallel for\n" + NAIVE))
    assert found["openmp"] == "line 4: #pragma omp parallel for"


# --------------------------------------------------------------------------- simd

SIMD_BODY = """
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            %s
            C[i * N + j] = 0.0;
        }
"""


@pytest.mark.parametrize(
    "code",
    [
        "__m256d v = _mm256_setzero_pd(); (void)v;",
        "__m512d v; (void)v;",
        "__mmask8 m = 0; (void)m;",
        "float64x2_t v = vdupq_n_f64(0.0); (void)v;",
        "svfloat64_t v = svdup_n_f64(0.0); (void)v;",
        "v4d v = {0}; (void)v;",
    ],
)
def test_simd_positive(code: str) -> None:
    sig = "typedef double v4d __attribute__((vector_size(32)));"
    assert "simd" in detect(wrap(SIMD_BODY % code, sig))


@pytest.mark.parametrize("pragma", ["#pragma GCC ivdep", "#pragma omp simd", "#pragma ivdep"])
def test_simd_pragmas(pragma: str) -> None:
    found = detect(wrap(NAIVE.replace("for (int k", pragma + "\n for (int k")))
    assert set(found) == {"simd"}


def test_simd_negative() -> None:
    assert detect(wrap(NAIVE, "#include <immintrin.h>")) == {}
    prefetch = "_mm_prefetch((const char *)&B[j], _MM_HINT_T0);"
    assert detect(wrap(SIMD_BODY % prefetch, "#include <xmmintrin.h>")) == {}
    assert detect(wrap(SIMD_BODY % "double mm_v = 0, m256 = 1; (void)mm_v; (void)m256;")) == {}


# --------------------------------------------------------------------------- cache blocking

BLOCKED = """
    for (int i = 0; i < M * N; i++) C[i] = 0.0;
    for (int ii = 0; ii < M; ii += %(step)s)
        for (int kk = 0; kk < K; kk += %(step)s) {
            %(pre)s
            for (int i = ii; i < %(bound)s; i++)
                for (int k = kk; k < K && k < kk + %(step)s; k++)
                    for (int j = 0; j < N; j++)
                        C[i * N + j] += A[i * K + k] * B[k * N + j];
        }
"""


@pytest.mark.parametrize(
    ("step", "pre", "bound"),
    [
        ("BS", "", "MIN(ii + BS, M)"),
        ("64", "int iend = ii + 64 < M ? ii + 64 : M;", "iend"),
        ("bs", "const int ie = imin(ii + bs, M);", "ie"),
        ("BS", "", "(ii + BS < M ? ii + BS : M)"),
    ],
)
def test_cache_blocking_positive(step: str, pre: str, bound: str) -> None:
    sig = "#define BS 32\n#define MIN(a, b) ((a) < (b) ? (a) : (b))\nstatic int imin(int a, int b) { return a < b ? a : b; }\nstatic const int bs = 48;"  # noqa: E501
    body = BLOCKED % {"step": step, "pre": pre, "bound": bound}
    assert "cache_blocking" in detect(wrap(body, sig))


def test_cache_blocking_unguarded_block_end() -> None:
    body = """
    for (int ii = 0; ii < M; ii += 64)
        for (int i = ii; i < ii + 64; i++)
            for (int j = 0; j < N; j++) C[i * N + j] = A[i] * B[j];
    """
    assert set(detect(wrap(body))) == {"cache_blocking"}


@pytest.mark.parametrize(
    "body",
    [
        NAIVE,
        # a block-sized step but no loop bounded by the block
        """
    for (int i = 0; i < M; i += 64)
        for (int k = 0; k < K; k++) C[i] = A[k];
        """,
        # a small step is a register tile, not a cache block
        """
    for (int j = 0; j < N; j += 4) {
        int w = N - j < 4 ? N - j : 4;
        for (int jj = j; jj < j + w; jj++) C[jj] = B[jj] * 2.0;
    }
        """,
    ],
)
def test_cache_blocking_negative(body: str) -> None:
    assert "cache_blocking" not in detect(wrap(body))


# --------------------------------------------------------------------------- register blocking

SCALAR_4 = """
    for (int i = 0; i < M; i++)
        for (int j = 0; j + 4 <= N; j += 4) {
            double c0 = 0, c1 = 0, c2 = 0, c3 = 0;
            for (int k = 0; k < K; k++) {
                const double a = A[i * K + k];
                c0 += a * B[k * N + j];
                c1 += a * B[k * N + j + 1];
                c2 = c2 + a * B[k * N + j + 2];
                c3 = fma(a, B[k * N + j + 3], c3);
            }
            C[i * N + j] = c0; C[i * N + j + 1] = c1; C[i * N + j + 2] = c2; C[i * N + j + 3] = c3;
        }
"""

ARRAY_ACC = """
    for (int i = 0; i + 4 <= M; i += 4)
        for (int j = 0; j + 8 <= N; j += 8) {
            double acc[4][8] = {{0}};
            for (int k = 0; k < K; k++)
                for (int r = 0; r < 4; r++)
                    for (int c = 0; c < 8; c++)
                        acc[r][c] += A[(i + r) * K + k] * B[k * N + j + c];
            for (int r = 0; r < 4; r++)
                for (int c = 0; c < 8; c++) C[(i + r) * N + j + c] = acc[r][c];
        }
"""

VECTOR_4 = """
    for (int i = 0; i + 2 <= M; i += 2)
        for (int j = 0; j + 8 <= N; j += 8) {
            __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();
            __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();
            for (int k = 0; k < K; k++) {
                __m256d b0 = _mm256_loadu_pd(B + k * N + j);
                __m256d b1 = _mm256_loadu_pd(B + k * N + j + 4);
                __m256d a0 = _mm256_set1_pd(A[i * K + k]);
                __m256d a1 = _mm256_set1_pd(A[(i + 1) * K + k]);
                c00 = _mm256_fmadd_pd(a0, b0, c00);
                c01 = _mm256_fmadd_pd(a0, b1, c01);
                c10 = _mm256_fmadd_pd(a1, b0, c10);
                c11 = _mm256_fmadd_pd(a1, b1, c11);
            }
            _mm256_storeu_pd(C + i * N + j, c00);
            _mm256_storeu_pd(C + i * N + j + 4, c01);
            _mm256_storeu_pd(C + (i + 1) * N + j, c10);
            _mm256_storeu_pd(C + (i + 1) * N + j + 4, c11);
        }
"""


def test_register_blocking_positive() -> None:
    assert set(detect(wrap(SCALAR_4))) == {"register_blocking"}
    assert set(detect(wrap(ARRAY_ACC))) == {"register_blocking"}
    assert set(detect(wrap(VECTOR_4, "#include <immintrin.h>"))) == {"register_blocking", "simd"}


def test_register_blocking_negative() -> None:
    three = SCALAR_4.replace("c3 = fma(a, B[k * N + j + 3], c3);", "C[j + 3] += a;")
    assert "register_blocking" not in detect(wrap(three))
    two = """
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s0 = 0, s1 = 0;
            for (int k = 0; k < K; k++) { s0 += A[i * K + k]; s1 += B[k * N + j]; }
            C[i * N + j] = s0 * s1;
        }
    """
    assert "register_blocking" not in detect(wrap(two))
    memory = """
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++)
            for (int j = 0; j + 4 <= N; j += 4) {
                C[i * N + j] += A[i * K + k] * B[k * N + j];
                C[i * N + j + 1] += A[i * K + k] * B[k * N + j + 1];
                C[i * N + j + 2] += A[i * K + k] * B[k * N + j + 2];
                C[i * N + j + 3] += A[i * K + k] * B[k * N + j + 3];
            }
    """
    assert set(detect(wrap(memory))) == {"loop_unrolling"}
    not_self = SCALAR_4.replace("c3 = fma(a, B[k * N + j + 3], c3);", "c3 = a;")
    assert "register_blocking" not in detect(wrap(not_self))


# --------------------------------------------------------------------------- loop unrolling


@pytest.mark.parametrize(
    "pragma", ["#pragma GCC unroll 4", "#pragma unroll(8)", "#pragma clang loop unroll(full)"]
)
def test_unroll_pragmas(pragma: str) -> None:
    found = detect(wrap(NAIVE.replace("for (int k", pragma + "\n for (int k")))
    assert set(found) == {"loop_unrolling"}


def test_unroll_optimize_pragma() -> None:
    found = detect(wrap(NAIVE, '#pragma GCC optimize("O3,unroll-loops")'))
    assert set(found) == {"loop_unrolling"}


def test_manual_unroll_positive() -> None:
    body = """
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            int k = 0;
            for (; k + 2 <= K; k += 2)
                s += A[i * K + k] * B[k * N + j] + A[i * K + k + 1] * B[(k + 1) * N + j];
            for (; k < K; k++) s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
    """
    assert set(detect(wrap(body))) == {"loop_unrolling"}
    pointer = """
    for (int i = 0; i < M * N; i++) C[i] = 0.0;
    for (const double *p = A; p + 2 <= A + M * K; p += 2) C[0] += p[0] * B[0] + p[1] * B[1];
    """
    assert "loop_unrolling" in detect(wrap(pointer))


def test_manual_unroll_negative() -> None:
    vector_step = SIMD_BODY % "for (int q = 0; q + 16 <= N; q += 16) C[q + 8] = B[q];"
    assert "loop_unrolling" not in detect(wrap(vector_step))
    plain_step = SIMD_BODY % "for (int q = 0; q + 4 <= N; q += 4) C[q] = B[q];"
    assert "loop_unrolling" not in detect(wrap(plain_step))
    # rows of a register tile: the i loop steps by 4 around the k loop
    rows = """
    for (int i = 0; i + 4 <= M; i += 4)
        for (int j = 0; j < N; j++) {
            double r0 = 0, r1 = 0, r2 = 0, r3 = 0;
            for (int k = 0; k < K; k++) {
                r0 += A[i * K + k] * B[k * N + j];
                r1 += A[(i + 1) * K + k] * B[k * N + j];
                r2 += A[(i + 2) * K + k] * B[k * N + j];
                r3 += A[(i + 3) * K + k] * B[k * N + j];
            }
            C[i * N + j] = r0 + r1 + r2 + r3;
        }
    """
    assert set(detect(wrap(rows))) == {"register_blocking"}


# --------------------------------------------------------------------------- packing

PACK_TAIL = """
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) s += A[i * K + k] * Bt[j * K + k];
            C[i * N + j] = s;
        }
    free(Bt);
"""
ALLOC = "double *Bt = malloc(sizeof(double) * N * K);\n"


@pytest.mark.parametrize(
    "copy",
    [
        "for (int k = 0; k < K; k++) for (int j = 0; j < N; j++) Bt[j * K + k] = B[k * N + j];",
        "for (int k = 0; k < K; k++) { const double *src = B + k * N;"
        " for (int j = 0; j < N; j++) Bt[j * K + k] = src[j]; }",
        "for (int k = 0; k < K; k++) for (int j = 0; j < N; j++) {"
        " double b = B[k * N + j]; Bt[j * K + k] = b; }",
        "for (int k = 0; k < K; k++) for (int j = 0; j < N; j++)"
        " Bt[j * K + k] = j < N ? B[k * N + j] : 0.0;",
        "memcpy(Bt, B, sizeof(double) * N * K);",
        "for (int k = 0; k < K; k++) memcpy(&Bt[k * N], &B[k * N], sizeof(double) * N);",
        "double *dst = Bt; for (const double *p = B; p < B + N * K; ) *dst++ = *p++;",
    ],
)
def test_packing_positive(copy: str) -> None:
    src = wrap(ALLOC + copy + PACK_TAIL, "#include <stdlib.h>\n#include <string.h>")
    assert "packing" in detect(src)


def test_packing_vector_copy_in_a_helper() -> None:
    helper = """#include <immintrin.h>
static void pack(int K, int N, const double *src, double *panel)
{
    for (int k = 0; k < K; k++)
        _mm256_store_pd(panel + 4 * k, _mm256_loadu_pd(src + k * N));
}"""
    assert "packing" in detect(wrap("(void)M; (void)A; (void)C;", helper))


@pytest.mark.parametrize(
    "body",
    [
        NAIVE,
        # a scalar temporary and a register-sized array are not buffers
        """
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double a[4];
            for (int k = 0; k < 4 && k < K; k++) a[k] = A[i * K + k];
            double x = A[i * K];
            C[i * N + j] = a[0] * x * B[j];
        }
        """,
        # copying to C, from C, or into one vector variable
        """
    static double saved[64];
    for (int i = 0; i < M * N && i < 64; i++) C[i] = A[i];
    memcpy(saved, C, sizeof saved);
    double v[2];
    memcpy(&v, B, sizeof v);
    (void)v;
        """,
    ],
)
def test_packing_negative(body: str) -> None:
    assert "packing" not in detect(wrap(body, "#include <string.h>"))


def test_packing_names_follow_the_signature() -> None:
    body = "for (int i = 0; i < m * k; i++) buf[i] = x[i];"
    src = (
        "static double buf[1 << 16];\n"
        "void dgemm(int m, int n, int k, const double *x, const double *y, double *z)\n"
        "{ (void)n; (void)y; (void)z; " + body + " }"
    )
    assert "packing" in detect(src)
    assert "packing" not in detect(src.replace("buf[i] = x[i]", "z[i] = x[i]"))


# --------------------------------------------------------------------------- robustness

C_TOKENS = [
    "for", "(", ")", "{", "}", "[", "]", ";", ",", "=", "+=", "+", "*", "?", ":", "<",
    "i", "j", "k", "ii", "BS", "A", "B", "C", "Bp", "c0", "double", "const", "__m256d",
    "#pragma omp", "#pragma GCC unroll 4", "\n", " ", "//", "/*", "*/", '"', "'", "\\",
    "_mm256_fmadd_pd", "MIN", "memcpy", "8", "64", "1", "#define BS 32\n", "typedef",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(C_TOKENS), max_size=200))
def test_detect_never_fails_on_token_soup(tokens: list[str]) -> None:
    found = detect(" ".join(tokens))
    assert set(found) <= set(CATALOGUE)
    assert all(re.match(r"line \d+: ", evidence) for evidence in found.values())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_detect_never_fails_on_any_text(text: str) -> None:
    assert set(detect(text)) <= set(CATALOGUE)
    assert len(strip_c(text)) == len(text)


@pytest.mark.parametrize(
    "hostile",
    [
        "for(int i=0;i<M;i+=BS){" * 1500 + "C[0]=A[0];" + "}" * 1500,
        "void f(){" + "for(int i=0;i<n;i++) x[i]=B[i];\n" * 2000 + "}",
        "x=" * 30000,
        "a[" * 30000,
        "double " * 10000,
        "min" * 20000 + "(",
        "(" * 60000,
        "#pragma omp " + '"a" ' * 15000,
    ],
    ids=["nested", "flat", "assign", "subscripts", "types", "ident", "parens", "quotes"],
)
def test_detect_is_fast_on_hostile_sources(hostile: str) -> None:
    start = time.monotonic()
    detect(hostile)
    assert time.monotonic() - start < 5.0


# --------------------------------------------------------------------------- evasions
# Each evasion as the compiler reads it: the candidate through real `gcc -E`, own lines.

STRIDED_SIMD = """
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            %s
            C[i * N + j] = 0.0;
        }
"""


@pytest.mark.parametrize(
    "typedef",
    [
        "typedef double v4 __attribute__((__vector_size__(32)));",
        "typedef double v4 __attribute__ ((vector_size (4 * sizeof (double))));",
        "#define VS(n) __attribute__((__vector_size__(n)))\ntypedef double v4 VS(32);",
        "#define CAT(a, b) a##b\ntypedef double v4 __attribute__((CAT(vector_, size)(32)));",
        "typedef double v4 __attribute__((__mode__(__V4DF__)));",
    ],
)
def test_evasion_vector_extension_in_any_spelling(typedef: str, tmp_path: Path) -> None:
    src = wrap(STRIDED_SIMD % "v4 x = {0}; (void)x;", typedef)
    assert "simd" in detect(preprocessed(tmp_path, src))


@pytest.mark.parametrize(
    "asm",
    [
        '__asm__ volatile("vfmadd231pd %%zmm1, %%zmm2, %%zmm0" ::: "xmm0", "memory");',
        'asm("vxorps %ymm3, %ymm3, %ymm3");',
        '__asm__ __volatile__("addpd %%xmm1, %%xmm0\\n\\t" "movupd %%xmm0, (%0)" :: "r"(C));',
        'asm volatile(".intel_syntax noprefix\\n vmulps zmm0, zmm1, zmm2\\n .att_syntax");',
        'asm volatile("fmla v0.2d, v1.2d, v2.d[0]");',
        "#define S(...) #__VA_ARGS__\n asm(S(vaddpd %ymm0, %ymm1, %ymm2));",
        'register double r __asm__("zmm4"); (void)r;',
    ],
)
def test_evasion_vector_code_in_inline_asm(asm: str, tmp_path: Path) -> None:
    found = detect(preprocessed(tmp_path, wrap(STRIDED_SIMD % asm)))
    assert "simd" in found and found["simd"].startswith("line ")


def test_scalar_inline_asm_is_not_simd(tmp_path: Path) -> None:
    asm = '__asm__("addsd %%xmm1, %%xmm0\\n\\tmovsd %%xmm0, (%0)\\nloops: jmp loops" :: "r"(C));'
    assert "simd" not in detect(preprocessed(tmp_path, wrap(STRIDED_SIMD % asm)))


def test_evasion_token_pasted_intrinsics(tmp_path: Path) -> None:
    macros = "#include <immintrin.h>\n#define CAT(a, b) a##b\n#define VT CAT(__m, 256d)"
    body = STRIDED_SIMD % "VT v = CAT(_mm256_, setzero_pd)(); (void)v;"
    assert "simd" not in detect(wrap(body, macros))  # the raw text names no intrinsic
    found = detect(preprocessed(tmp_path, wrap(body, macros)))
    assert found["simd"] == "line 9: __m256d v = _mm256_setzero_pd(); (void)v;"


def test_evasion_token_pasted_omp_pragma(tmp_path: Path) -> None:
    macros = (
        "#define CAT(a, b) a##b\n#define STR(x) #x\n#define PRAGMA(x) _Pragma(STR(x))\n"
        "#define THREADS PRAGMA(CAT(o, mp) CAT(para, llel) for)"
    )
    src = wrap("THREADS\n" + NAIVE, macros)
    assert "openmp" not in detect(src)
    assert detect(preprocessed(tmp_path, src))["openmp"] == "line 7: #pragma omp parallel for"


def test_evasion_simd_pragma_from_a_macro_on_the_loop_line(tmp_path: Path) -> None:
    macros = '#define VEC _Pragma("omp simd")'
    src = wrap(NAIVE.replace("for (int k", "VEC for (int k"), macros)
    assert set(detect(preprocessed(tmp_path, src))) == {"simd"}


@pytest.mark.parametrize(
    "value",
    ["1.0 * B[k * N + j]", "alpha * B[k * N + j]", "B[k * N + j] + 0.0", "-(-B[k * N + j])",
     "(B[k * N + j] * 2.0) / 2.0", "fma(1.0, B[k * N + j], 0.0)", "SCALE(B[k * N + j])"],
)  # fmt: skip
def test_evasion_packing_through_arithmetic(value: str, tmp_path: Path) -> None:
    copy = (
        "const double alpha = 1.0;\n"
        f"for (int k = 0; k < K; k++) for (int j = 0; j < N; j++) Bt[j * K + k] = {value};\n"
    )
    sig = "#include <stdlib.h>\n#include <math.h>\n#define SCALE(x) (1.0 * (x))"
    src = wrap(ALLOC + copy + PACK_TAIL, sig)
    assert set(detect(preprocessed(tmp_path, src))) == {"packing"}


def test_products_of_both_inputs_are_not_packing(tmp_path: Path) -> None:
    body = """
    double *T = malloc(sizeof(double) * N);
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) T[j] = A[i * K] * B[j];
        for (int j = 0; j < N; j++) C[i * N + j] = T[j];
    }
    double *rows[64];
    for (int k = 0; k < K && k < 64; k++) rows[k] = (double *)B + k * N;
    free(T);
    """
    assert "packing" not in detect(preprocessed(tmp_path, wrap(body, "#include <stdlib.h>")))


def test_updates_and_helpers_writing_c_are_not_packing(tmp_path: Path) -> None:
    helpers = """
static void scale_row(int n, double a, const double *x, double *y)
{ for (int j = 0; j < n; j++) y[j] = a * x[j]; }
static void axpy(int n, double a, const double *x, double *t)
{ for (int j = 0; j < n; j++) t[j] = t[j] + a * x[j]; }
"""
    body = """
    double *T = calloc((size_t)N, sizeof(double));
    for (int i = 0; i < M; i++) {
        scale_row(N, A[i * K], B, C + i * N);
        for (int k = 1; k < K; k++) axpy(N, A[i * K + k], B + k * N, T);
        for (int j = 0; j < N; j++) { C[i * N + j] += T[j]; T[j] = 0.0; }
    }
    free(T);
    """
    src = wrap(body, "#include <stdlib.h>" + helpers)
    assert detect(preprocessed(tmp_path, src)) == {}
    copying = src.replace("y[j] = a * x[j]", "y[j] = a * x[j], T2[j] = x[j] * a")
    copying = copying.replace("#include <stdlib.h>", "#include <stdlib.h>\nstatic double T2[4096];")
    assert set(detect(preprocessed(tmp_path, copying))) == {"packing"}


@pytest.mark.parametrize(
    "loops",
    [
        # jj = 0; while (jj < N) { ...; jj += BS; }
        """int jj = 0;
    while (jj < N) {
        const int je = MIN(jj + BS, N);
        for (int i = 0; i < M; i++) { int j = jj; while (j < je) { C[i * N + j] = B[j]; j++; } }
        jj += BS;
    }""",
        """int jj = 0;
    do {
        for (int i = 0; i < M; i++)
            for (int j = jj; j < jj + BS && j < N; j++) C[i * N + j] = B[j];
        jj = jj + BS;
    } while (jj < N);""",
        """for (int jj = 0; jj < N;) {
        for (int i = 0; i < M; i++)
            for (int j = jj; j < MIN(jj + BS, N); j++) C[i * N + j] = B[j];
        jj += BS;
    }""",
        """for (int jj = N - 1; jj >= 0; jj -= BS)
        for (int j = jj; j > jj - BS && j >= 0; j--) C[j] = B[j];""",
    ],
    ids=["while", "do-while", "for-without-increment", "counting-down"],
)
def test_evasion_blocking_without_a_for_step(loops: str, tmp_path: Path) -> None:
    macros = "#define BS 64\n#define MIN(a, b) ((a) < (b) ? (a) : (b))"
    src = wrap(loops, macros)
    assert "cache_blocking" in detect(src)
    assert set(detect(preprocessed(tmp_path, src))) == {"cache_blocking"}


def test_while_zero_is_not_a_loop() -> None:
    src = Source("do { x(); } while (0); while (0) { y(); } while (n) { n -= 16; }")
    assert [(loop.cond.strip(), loop.var, loop.step) for loop in src.loops] == [("n", "n", "16")]


@pytest.mark.parametrize(
    ("decl", "macros"),
    [
        ("double acc[sizeof(double) / 2][4] = {{0}};", ""),
        ("double acc[R][R] = {{0}};", "#define R (sizeof(long) / 2)"),
        ("double acc[sizeof(float)][(int)sizeof(int)] = {{0}};", ""),
        ("double acc[sizeof(v4) / sizeof(double)][4] = {{0}};",
         "typedef double v4 __attribute__((vector_size(32)));"),
    ],
)  # fmt: skip
def test_evasion_register_tile_sized_by_sizeof(decl: str, macros: str, tmp_path: Path) -> None:
    body = f"""
    for (int i = 0; i + 4 <= M; i += 4)
        for (int j = 0; j + 4 <= N; j += 4) {{
            {decl}
            for (int k = 0; k < K; k++)
                for (int r = 0; r < 4; r++)
                    for (int c = 0; c < 4; c++)
                        acc[r][c] += A[(i + r) * K + k] * B[k * N + j + c];
            for (int r = 0; r < 4; r++)
                for (int c = 0; c < 4; c++) C[(i + r) * N + j + c] = acc[r][c];
        }}
    """
    assert "register_blocking" in detect(preprocessed(tmp_path, wrap(body, macros)))


def test_evasion_openmp_runtime_called_by_hand(tmp_path: Path) -> None:
    sig = "extern void GOMP_parallel(void (*)(void *), void *, unsigned, unsigned);"
    src = wrap("GOMP_parallel(0, 0, 0, 0);\n" + NAIVE, sig)
    assert "openmp" in detect(preprocessed(tmp_path, src))


@pytest.mark.parametrize(
    ("attribute", "technique"),
    [
        ('__attribute__((optimize("O3", "tree-vectorize")))', "simd"),
        ('__attribute__((__optimize__("-ftree-loop-vectorize")))', "simd"),
        ('#pragma GCC optimize ("tree-vectorize")\n', "simd"),
        ('__attribute__((optimize("unroll-loops")))', "loop_unrolling"),
        ("__attribute__((simd))", "simd"),
    ],
)
def test_evasion_compiler_switched_on_from_the_source(
    attribute: str, technique: str, tmp_path: Path
) -> None:
    src = attribute + wrap(NAIVE)
    assert set(detect(preprocessed(tmp_path, src))) == {technique}


def test_vectoriser_switched_off_is_not_simd(tmp_path: Path) -> None:
    src = '__attribute__((optimize("no-tree-vectorize")))' + wrap(NAIVE)
    assert detect(preprocessed(tmp_path, src)) == {}


# --------------------------------------------------------------------------- negatives


@pytest.mark.parametrize(
    "text",
    [
        "#pragma omp parallel for",
        "_mm512_fmadd_pd(a, b, c); __m256d x;",
        "#pragma GCC unroll 8",
        "for (int jj = 0; jj < N; jj += 64) for (int j = jj; j < jj + 64 && j < N; j++) C[j] = 0;",
        "for (int k = 0; k < K; k++) Bp[k] = 1.0 * B[k];",
        "double c0 = 0, c1 = 0, c2 = 0, c3 = 0; for (;;) { c0 += 1; c1 += 1; c2 += 1; c3 += 1; }",
        'asm("vfmadd231pd %zmm0, %zmm1, %zmm2");',
    ],
)
def test_disabled_code_comments_and_strings_are_not_detected(text: str, tmp_path: Path) -> None:
    disabled = f"#if 0\n{text}\n#endif\n#ifdef NEVER_DEFINED\n{text}\n#endif\n"
    unused_macro = "#define UNUSED_" + " \\\n".join(["(x)", text.replace("#", "").strip()])
    flat = text.replace("\n", " ").replace("*/", "")
    commented = f"/* {flat} */\n// {flat}\n"
    quoted = flat.replace('"', "").replace("\\", "")
    string = f'const char *note = "{quoted}"; (void)note;\n'
    for body in (disabled, unused_macro + "\n", commented, string):
        src = wrap(body + NAIVE, "static double Bp[64];")
        assert detect(preprocessed(tmp_path, src)) == {}, body


# --------------------------------------------------------------------------- evasion corpus


@pytest.mark.parametrize("path", EVASIONS, ids=lambda p: p.name)
def test_evasion_corpus_is_caught(path: Path, tmp_path: Path) -> None:
    """Each attack file breaks its stage's `forbid`; the evidence is the source as gcc
    -E reads it, or a linemarker forged in it, or (simd, openmp) the compiled object."""
    fields = header(path)
    assert fields["expect"] == "violation" and fields["why"]
    forbidden = names(fields["forbid"])
    assert forbidden and not unknown_names(forbidden)
    source = path.read_text()
    if line_control(source) is not None:
        return  # the engine refuses linemarkers: they can hide code from own_lines
    found = set(detect(preprocessed(tmp_path, source)))
    found |= set(from_object(*compiled(tmp_path, source)))
    assert found & forbidden


def test_evasion_corpus_covers_each_class() -> None:
    assert len(EVASIONS) >= 8
    forbidden = set().union(*(names(header(p)["forbid"]) for p in EVASIONS))
    assert forbidden >= {"simd", "openmp", "packing", "cache_blocking", "register_blocking"}


# --------------------------------------------------------------------------- object evidence

NO_VECTORISER = ("-fno-tree-vectorize", "-fno-tree-slp-vectorize")


def compiled(tmp_path: Path, source: str, name: str = "cand") -> tuple[list[str], str]:
    """(undefined symbols, objdump -d text) of `source` compiled as the engine does when a
    stage forbids simd: the auto-vectoriser off."""
    (tmp_path / f"{name}.c").write_text(source)

    def run(*argv: str) -> str:
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("gcc", "-c", *CFLAGS, *NO_VECTORISER, f"{name}.c")
    nm = run("nm", "-P", "-u", f"{name}.o")
    disasm = run("objdump", "-d", "--no-show-raw-insn", f"{name}.o")
    return [line.split()[0] for line in nm.splitlines() if line.strip()], disasm


X86 = """
0000000000000000 <dgemm>:
   0:\tvbroadcastsd (%rdi),%ymm0
   5:\tc5 fd 10 0e          \tvmovupd (%rsi),%ymm1
   9:\tvxorpd %ymm2,%ymm2,%ymm2
   d:\tvunpcklpd %xmm1,%xmm0,%xmm0
  11:\tvfmadd231sd %xmm1,%xmm0,%xmm2
  16:\taddsd  %xmm1,%xmm0
  1a:\tvpermpd $0x1b,%ymm0,%ymm1
  1f:\tvandpd %ymm0,%ymm1,%ymm2
  23:\tvmovapd %zmm0,%zmm1
  28:\tvshufpd $0x5,%ymm0,%ymm0,%ymm0
"""


@pytest.mark.parametrize(
    ("line", "mnemonic"),
    [
        ("  30:\tvfmadd231pd %ymm1,%ymm0,%ymm2", "vfmadd231pd"),
        ("  30:\tc4 e2 fd b8 d1       \tvfmadd231pd %ymm1,%ymm0,%ymm2", "vfmadd231pd"),
        ("  30:\tvmulpd (%rax){1to8},%zmm1,%zmm0{%k1}", "vmulpd"),
        ("  30:\taddpd  %xmm1,%xmm0", "addpd"),
        ("  30:\tvaddps %ymm1,%ymm0,%ymm0", "vaddps"),
        ("  30:\tvdivpd %xmm1,%xmm0,%xmm0", "vdivpd"),
        ("  30:\tvsqrtps %ymm1,%ymm0", "vsqrtps"),
        ("  30:\t{evex} vmaxpd %ymm1,%ymm0,%ymm0", "vmaxpd"),
        ("  30:\t4e61cc20 \tfmla\tv0.2d, v1.2d, v1.2d", "fmla"),
        ("  30:\tfadd\tv0.4s, v0.4s, v1.4s", "fadd"),
        ("  30:\tfmla\tz0.d, p0/m, z1.d, z2.d", "fmla"),
    ],
)
def test_packed_fp_arithmetic_in_the_object(line: str, mnemonic: str) -> None:
    found = from_object([], X86 + line + "\n")
    assert found == {"simd": f"object: {mnemonic} (packed FP arithmetic)"}


def test_moves_shuffles_logic_and_scalar_are_not_packed_arithmetic() -> None:
    arm = "   0:\tfmadd\td0, d1, d2, d3\n   4:\tfadd\td0, d0, d1\n   8:\tld1\t{v0.2d}, [x0]\n"
    assert from_object([], X86 + arm) == {}
    assert from_object([], None) == {} and from_object([], "") == {}


def test_openmp_runtime_symbols() -> None:
    found = from_object(["memcpy", "GOMP_parallel@GOMP_4.0", "omp_get_thread_num"], None)
    assert found == {"openmp": "object: calls GOMP_parallel"}
    assert from_object([" __kmpc_fork_call "], None) == {"openmp": "object: calls __kmpc_fork_call"}
    assert from_object(["malloc", "free", "fma", "GOMPX", "comp_x"], X86) == {}


def _scalar_kernels() -> list[tuple[str, str]]:
    from bridges.bootstrap_variants import all_variants

    honest = [(p.name, p.read_text()) for p in HONEST if "simd" not in header(p)["techniques"]]
    variants = [(repr(v), v.source()) for v in all_variants() if not v.vector_pragma]
    return honest + variants


def test_scalar_kernels_compile_to_no_packed_arithmetic(tmp_path: Path) -> None:
    """Honest kernels without simd (the corpus and the bootstrap variants), compiled with the
    auto-vectoriser off, hold no packed FP arithmetic: object evidence never accuses them."""
    kernels = _scalar_kernels()
    assert len(kernels) > 40
    for k, (label, source) in enumerate(kernels):
        undefined, disasm = compiled(tmp_path, source, f"k{k}")
        found = from_object(undefined, disasm)
        assert "simd" not in found, label
        assert ("openmp" in found) == ("omp parallel" in source), label


@pytest.mark.parametrize(
    "name", ["ladder4_avx512_regblock.c", "vector_ext.c", "omp_simd_reduction.c"]
)
def test_simd_kernels_compile_to_packed_arithmetic(name: str, tmp_path: Path) -> None:
    undefined, disasm = compiled(tmp_path, (CORPUS / "honest" / name).read_text())
    assert "simd" in from_object(undefined, disasm)


# --------------------------------------------------------------------------- constants


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("sizeof(double) / 2", 4), ("sizeof(long) / 2", 4), ("sizeof (unsigned long long)", 8),
        ("sizeof(float)", 4), ("sizeof(int) * sizeof(short)", 8), ("sizeof(long double)", 16),
        ("sizeof(double *)", 8), ("sizeof(double[4]) / sizeof(double)", 4),
        ("(int)sizeof(char)", 1),
        ("sizeof(__m256d) / sizeof(double)", 4), ("sizeof 1.0f", 4), ("_Alignof(double)", 8),
        ("BS / 2", 32), ("-7 / 2", -3), ("1 << 4 | 1", 17), ("BS > 32 ? 2 : 1", 2), ("0x10u", 16),
    ],
)  # fmt: skip
def test_constant_expressions(expr: str, value: int) -> None:
    assert evaluate(expr, {"BS": "64"}) == value


@pytest.mark.parametrize(
    "expr", ["n", "sizeof(x)", "1 << 70", "LOOP", "(", "1 / 0", "4 4", "(" * 500 + "1" + ")" * 500]
)
def test_constant_expressions_without_a_value(expr: str) -> None:
    assert evaluate(expr, {"LOOP": "LOOP + 1"}) is None


# --------------------------------------------------------------------------- cost on 256 KiB

SIZE = 256 * 1024
HEAD = "void dgemm(int M,int N,int K,const double*A,const double*B,double*C){"
PATHOLOGICAL = {
    "nested-blocks": ("for(int i=0;i<M;i+=BS){", "", "}" * 5000),
    "while-blocks": ("while(i<n){i+=8;", "", "}"),
    "assignments": ("x=", HEAD + "for(;;){", "}}"),
    "copies": ("Bp[i]=-(-B[i]);", HEAD + "for(;;){", "}}"),
    "temporaries": ("double t=B[i];", HEAD, ""),
    "nested-calls": ("x=f(", "void g(const double*B){for(;;){", ""),
    "strings": ('"\\\\', "", ""),
    "asm": ('asm("addsd %xmm0,%xmm1");', "", ""),
    "sizeof": ("double a[sizeof(sizeof(", "", ""),
    "pragmas": ('_Pragma("GCC optimize(\\"O3\\")") ', "", ""),
}  # fmt: skip


@pytest.mark.parametrize("case", PATHOLOGICAL, ids=list(PATHOLOGICAL))
def test_detect_bounded_on_256k_pathological_sources(case: str) -> None:
    """About a second each on an idle core; the bound leaves room for a loaded 2-core box."""
    unit, head, tail = PATHOLOGICAL[case]
    hostile = head + unit * ((SIZE - len(head) - len(tail)) // len(unit)) + tail
    start = time.process_time()
    found = detect(hostile)
    assert time.process_time() - start < 8.0
    assert set(found) <= set(CATALOGUE)
