"""The object-level checks on recorded binutils output (the corpus tests run them for real)."""

from __future__ import annotations

from hpcq import static_checks as sc
from hpcq.outcome import Constraints

NONE = Constraints()


def test_parse_nm_splits_global_defined_and_undefined() -> None:
    text = "dgemm T 0000000000000000 0000000000000120\nhelper t 0 10\nmalloc U\n__gmon w\n"
    defined, undefined, ifuncs = sc.parse_nm(text + "fast i 0 10\n")
    assert defined == {"dgemm"}
    assert undefined == {"malloc", "__gmon"}
    assert ifuncs == {"fast"}
    f = sc.check_ifuncs(ifuncs)
    assert f is not None and "IFUNC" in f.message


def test_symbols_clean_kernel_passes() -> None:
    assert sc.check_symbols({"dgemm"}, {"memset", "aligned_alloc", "free"}, "dgemm", NONE) is None


def test_missing_entry() -> None:
    f = sc.check_symbols(set(), set(), "dgemm", NONE)
    assert f is not None and "entry point `dgemm`" in f.message


def test_extra_global_symbol() -> None:
    f = sc.check_symbols({"dgemm", "clock_gettime"}, set(), "dgemm", NONE)
    assert f is not None and "clock_gettime" in f.message


def test_blas_and_loaders() -> None:
    f = sc.check_symbols({"dgemm"}, {"cblas_dgemm"}, "dgemm", NONE)
    assert f is not None and "library BLAS" in f.message
    f = sc.check_symbols({"dgemm"}, {"dgemm_"}, "dgemm", NONE)
    assert f is not None and "library BLAS" in f.message
    f = sc.check_symbols({"dgemm"}, {"dlopen", "dlsym"}, "dgemm", NONE)
    assert f is not None and "loads code" in f.message


def test_openmp_allowed_unless_forbidden() -> None:
    omp = {"GOMP_parallel", "omp_get_thread_num"}
    assert sc.check_symbols({"dgemm"}, omp, "dgemm", NONE) is None
    f = sc.check_symbols({"dgemm"}, omp, "dgemm", Constraints(forbidden=frozenset({"openmp"})))
    assert f is not None and "forbids openmp" in f.message


def test_other_calls_are_violations() -> None:
    for name in ("printf", "exit", "fork", "system", "pthread_create", "fopen", "omp_get_wtime"):
        f = sc.check_symbols({"dgemm"}, {name}, "dgemm", NONE)
        assert f is not None and name in f.message, name


def test_constructor_sections() -> None:
    readelf = (
        "  [ 5] .init_array       INIT_ARRAY      0000000000000000 000058 000008 08  WA  0   0  8\n"
    )
    f = sc.check_sections(readelf)
    assert f is not None and ".init_array" in f.message
    assert sc.check_sections("  [ 1] .text PROGBITS 0 40 10 00 AX 0 0 1\n") is None


def test_syscall_instruction() -> None:
    f = sc.check_disassembly("   4:\tmov    $0x29,%eax\n   9:\tsyscall\n")
    assert f is not None and "syscall" in f.message
    assert sc.check_disassembly("   4:\tvfmadd231pd %zmm1,%zmm2,%zmm3\n") is None


def test_source_text() -> None:
    assert sc.check_source_text("") is not None
    assert sc.check_source_text("  \n") is not None
    assert sc.check_source_text("a" * (sc.MAX_SOURCE_BYTES + 1)) is not None
    assert sc.check_source_text("void dgemm(){}\x00") is not None
    assert sc.check_source_text("void dgemm(void) {}") is None


def test_techniques_against_constraints() -> None:
    found = {"openmp": "line 3: #pragma omp parallel for", "simd": "line 9: _mm512_fmadd_pd"}
    f = sc.check_techniques(found, Constraints(forbidden=frozenset({"openmp"})))
    assert f is not None and "openmp (line 3" in f.message
    f = sc.check_techniques(found, Constraints(required=frozenset({"packing"})))
    assert f is not None and "requires: packing" in f.message
    assert sc.check_techniques(found, Constraints(required=frozenset({"simd"}))) is None
