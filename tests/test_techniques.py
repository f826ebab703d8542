"""Technique detection (hpcq.techniques) and the headers of the kernel corpus.

The corpus kernels are compiled and run by the engine's own tests; here they are only
read: every honest kernel must be detected with exactly the techniques it declares, and
every hack that breaks a stage constraint must be caught by the detector.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcq.csource import strip_c
from hpcq.techniques import CATALOGUE, DESCRIPTIONS, detect, techniques, unknown_names

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
def test_honest_kernels_detected_exactly(path: Path) -> None:
    assert set(detect(path.read_text())) == names(header(path)["techniques"])


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
