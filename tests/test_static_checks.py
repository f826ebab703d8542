"""The static checks. Source text and techniques; the object check (`check_object`) and
the library check (`check_shared_object`) on objects that gcc compiles and links for real
here: every load-time attack under tests/corpus/loadtime/ refused with its reason, by
each check on its own where the attack survives linking, and honest kernels accepted.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridges.bootstrap_variants import labelled_variants
from hpcq.eval import elf
from hpcq.eval import object_checks as oc
from hpcq.eval import static_checks as sc
from hpcq.outcome import Constraints

NONE = Constraints()


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


def test_cpu_dispatch_and_tls_symbols_are_allowed() -> None:
    undefined = {"__cpu_model", "__cpu_features2", "__cpu_indicator_init", "__tls_get_addr"}
    assert sc.check_symbols({"dgemm"}, undefined, "dgemm", NONE) is None


# -- compiled objects and linked libraries --------------------------------------------------

needs_gcc = pytest.mark.skipif(
    not (shutil.which("gcc") and shutil.which("readelf")), reason="needs gcc and binutils"
)
CORPUS = Path(__file__).resolve().parent / "corpus"
CFLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fPIC")
LINK = ("gcc", "-shared", "-nostartfiles", "-fopenmp", "k.o", "-o", "k.so", "-lm")
NOTHING_RUNS = "nothing of the kernel runs at load time"
LINK_FAILS = "the engine's link fails"
# file -> (substring of check_object's message, of check_shared_object's on the object
# linked without check_object, or what must hold of that library instead)
LOADTIME = {
    "constructor_priority.c": (
        "has a .init_array.00101 section, a table of functions the loader calls",
        "load-time constructor (.init_array entry 0: function hq_boot",
    ),
    "ctors.c": ("has a .ctors section", "load-time constructor (.init_array entry 0"),
    "ctor_thread_dies_later.c": (
        "has a .init_array section, a table of functions the loader calls",
        "load-time constructor (.init_array entry 0: function start",
    ),
    "ctor_fake_seccomp.c": (
        "has a .init_array section, a table of functions the loader calls",
        "load-time constructor (.init_array entry 0: function fake_the_sandbox",
    ),
    "exec_stack.c": ("asks for an executable stack", "asks for an executable stack"),
    "fini_fragment.c": (
        "has code in the .fini section: load-time code is not allowed",
        NOTHING_RUNS,
    ),
    "ifunc.c": ("defines IFUNC symbol(s) hq_hook", "IFUNC symbol(s) hq_hook"),
    "init_array_renamed.c": ("section .hq_boot has type INIT_ARRAY", NOTHING_RUNS),
    "init_fragment.c": (
        "has code in the .init section: load-time code is not allowed",
        NOTHING_RUNS,
    ),
    "init_symbol.c": ("defines _init, a name the toolchain reserves", "(DT_INIT)"),
    "int80_in_immediate.c": ("(int $0x80: cd 80) at .text+0x", "(int $0x80: cd 80) at .text+0x"),
    "preinit_array.c": ("has a .preinit_array section", LINK_FAILS),
    "reserved_name.c": ("defines __cpu_indicator_init, a name", NOTHING_RUNS),
    "rwx_section.c": ("section .hq_jit is writable and executable", "writable and executable"),
    "syscall_in_immediate.c": ("(syscall: 0f 05) at .text+0x", "(syscall: 0f 05) at .text+0x"),
}
HONEST_EXTRA = {
    "cpu_dispatch": """
#include <immintrin.h>
__attribute__((target("avx2,fma"))) static void fast(int M, int N, int K, const double *A,
                                                      const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) C[i * N + j] = 0.0;
        for (int k = 0; k < K; k++) {
            __m256d a = _mm256_set1_pd(A[i * K + k]);
            int j = 0;
            for (; j + 4 <= N; j += 4)
                _mm256_storeu_pd(C + i * N + j, _mm256_fmadd_pd(a, _mm256_loadu_pd(B + k * N + j),
                                                                _mm256_loadu_pd(C + i * N + j)));
            for (; j < N; j++) C[i * N + j] += A[i * K + k] * B[k * N + j];
        }
    }
}
static void plain(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("x86-64-v3"))
        fast(M, N, K, A, B, C);
    else
        plain(M, N, K, A, B, C);
}
""",
    "tls_scratch": """
#include <stddef.h>
static __thread double row[4096];
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        double *out = N <= 4096 ? row : C + (size_t)i * N;
        for (int j = 0; j < N; j++) out[j] = 0.0;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < N; j++) out[j] += A[i * K + k] * B[k * N + j];
        if (out == row)
            for (int j = 0; j < N; j++) C[(size_t)i * N + j] = row[j];
    }
}
""",
    "avx512_openmp": """
#include <immintrin.h>
__attribute__((target("avx512f")))
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    #pragma omp parallel for schedule(dynamic, 4)
    for (int i = 0; i < M; i++) {
        int j = 0;
        for (; j + 8 <= N; j += 8) {
            __m512d acc = _mm512_setzero_pd();
            for (int k = 0; k < K; k++)
                acc = _mm512_fmadd_pd(_mm512_set1_pd(A[i * K + k]),
                                      _mm512_loadu_pd(B + k * N + j), acc);
            _mm512_storeu_pd(C + i * N + j, acc);
        }
        for (; j < N; j++) {
            double s = 0.0;
            #pragma omp simd reduction(+:s)
            for (int k = 0; k < K; k++) s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
    }
}
""",
    "constants_cold_path": """
#include <stdlib.h>
#include <string.h>
static const double weight[8] = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
static double scale = 1.0;
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    double *tmp = malloc(sizeof(double) * (size_t)N);
    if (__builtin_expect(tmp == NULL, 0)) {
        memset(C, 0, sizeof(double) * (size_t)M * N);
        return;
    }
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) tmp[j] = 0.0;
        for (int k = 0; k < K; k++) {
            double a = A[i * K + k] * weight[k & 7] * scale * 1.0000000000000002;
            for (int j = 0; j < N; j++) tmp[j] += a * B[k * N + j];
        }
        memcpy(C + (size_t)i * N, tmp, sizeof(double) * (size_t)N);
    }
    free(tmp);
}
""",
}


def _build(
    tmp: Path, source: str, *cflags: str, link: tuple[str, ...] = LINK, asm: bool = False
) -> tuple[bytes, bytes | None]:
    """Compile like the engine (or assemble by hand), then link without any check."""
    src = tmp / ("k.s" if asm else "k.c")
    src.write_text(source)
    compile_argv = ["gcc", "-c", src.name, "-o", "k.o"] if asm else ["gcc", *CFLAGS, *cflags]
    if not asm:
        compile_argv += ["-c", src.name, "-o", "k.o"]
    subprocess.run(compile_argv, cwd=tmp, check=True, capture_output=True)
    linked = subprocess.run(link, cwd=tmp, capture_output=True)
    output = tmp / link[link.index("-o") + 1]
    lib = output.read_bytes() if linked.returncode == 0 else None
    return (tmp / "k.o").read_bytes(), lib


def _loader_runs_nothing(lib: bytes) -> bool:
    parsed = elf.Elf(lib)
    hooks = {elf.DT_INIT, elf.DT_FINI, elf.DT_INIT_ARRAY, elf.DT_FINI_ARRAY, elf.DT_PREINIT_ARRAY}
    relocs = parsed.dynamic_relocations(parsed.dynamic())
    irelative = elf.R_IRELATIVE[parsed.machine]
    return not any(e.tag in hooks for e in parsed.dynamic()) and all(
        r.type != irelative for r in relocs
    )


def _syscall_at(message: str, code: dict[str, bytes]) -> bytes:
    """The bytes a syscall finding points at, read back from the named section."""
    match = re.search(r"at (\.\w+)\+(0x[0-9a-f]+)", message)
    assert match is not None, message
    start = int(match.group(2), 16)
    return code[match.group(1)][start : start + 2]


def _sections(data: bytes) -> dict[str, bytes]:
    parsed = elf.Elf(data)
    return {s.name: parsed.section_data(s) for s in parsed.sections}


def test_every_loadtime_file_has_an_expectation() -> None:
    assert sorted(p.name for p in (CORPUS / "loadtime").glob("*.c")) == sorted(LOADTIME)
    for path in (CORPUS / "loadtime").glob("*.c"):
        header = path.read_text().splitlines()[:2]
        assert header[0] == "// expect: violation" and header[1].startswith("// why: ")


@needs_gcc
@pytest.mark.parametrize("name", sorted(LOADTIME))
def test_loadtime_attack_is_refused(name: str, tmp_path: Path) -> None:
    object_message, library_expectation = LOADTIME[name]
    obj, lib = _build(tmp_path, (CORPUS / "loadtime" / name).read_text())
    finding = oc.check_object(obj, "dgemm", NONE)
    assert finding is not None and object_message in finding.message, finding
    if "syscall" in object_message or "int $0x80" in object_message:
        assert _syscall_at(finding.message, _sections(obj)) in (b"\x0f\x05", b"\xcd\x80")
    if library_expectation == LINK_FAILS:
        assert lib is None
        return
    assert lib is not None
    finding = oc.check_shared_object(lib, "dgemm")
    if library_expectation == NOTHING_RUNS:  # this linker leaves the trick inert
        assert finding is not None or _loader_runs_nothing(lib)
    else:
        assert finding is not None and library_expectation in finding.message, finding
    if finding is not None and "(syscall" in finding.message:
        assert _syscall_at(finding.message, _sections(lib)) == b"\x0f\x05"


@needs_gcc
@pytest.mark.parametrize("name", ["init_fragment.c", "fini_fragment.c"])
def test_fragments_linked_with_crt_files_are_refused(name: str, tmp_path: Path) -> None:
    """Today's link (crt files) splices the fragment into the toolchain's _init/_fini;
    check_shared_object expects the -nostartfiles link and refuses any DT_INIT/DT_FINI."""
    crt_link = ("gcc", "-shared", "-fopenmp", "k.o", "-o", "k.so", "-lm")
    _, lib = _build(tmp_path, (CORPUS / "loadtime" / name).read_text(), link=crt_link)
    assert lib is not None
    finding = oc.check_shared_object(lib, "dgemm")
    assert finding is not None and "an _init function (DT_INIT)" in finding.message


ASM_HEAD = "\t.text\n\t.globl dgemm\n\t.type dgemm, @function\ndgemm:\n\tret\n"
ASM_NOTE = '\t.section .note.GNU-stack,"",@progbits\n'


@needs_gcc
def test_library_check_alone_catches_hand_made_objects(tmp_path: Path) -> None:
    cases = {
        "_fini function": ("void _fini(void) {}\nvoid dgemm(void) {}\n", "(DT_FINI)"),
        "destructor": (
            "static volatile int n;\n__attribute__((destructor)) static void bye(void) { n = 1; }\n"
            "void dgemm(void) {}\n",
            "destructors (DT_FINI_ARRAY)",
        ),
        "second export": (
            "void helper(void) {}\nvoid dgemm(void) {}\n",
            "exports helper besides `dgemm`",
        ),
        "hidden entry": (
            '__attribute__((visibility("hidden"))) void dgemm(void) {}\n',
            "does not export `dgemm`",
        ),
        "constructor named like libgcc's, beside libgcc's": (
            "static int flag;\n"
            "__attribute__((constructor)) static void __cpu_indicator_init(void) { flag = 1; }\n"
            'int dgemm(void) { return __builtin_cpu_supports("avx2") + flag; }\n',
            "load-time constructor (.init_array entry",
        ),
    }
    for what, (source, expected) in cases.items():
        _, lib = _build(tmp_path, source)
        assert lib is not None, what
        finding = oc.check_shared_object(lib, "dgemm")
        assert finding is not None and expected in finding.message, (what, finding)
    asm = {
        "init_array slot by an absolute relocation": (
            ASM_HEAD + '\t.section .init_array,"aw"\n\t.p2align 3\n\t.quad dgemm\n' + ASM_NOTE,
            "not a plain relative one",
        ),
        "no .note.GNU-stack": (ASM_HEAD, "executable stack"),
        "text relocation": (ASM_HEAD + "\t.p2align 3\n\t.quad dgemm\n" + ASM_NOTE, "DT_TEXTREL"),
    }
    for what, (source, expected) in asm.items():
        obj, lib = _build(tmp_path, source, asm=True)
        assert lib is not None, what
        finding = oc.check_shared_object(lib, "dgemm")
        assert finding is not None and expected in finding.message, (what, finding)
        if what != "text relocation":  # an absolute address in code: the .o has no fault
            assert oc.check_object(obj, "dgemm", NONE) is not None, what


@needs_gcc
def test_relocation_into_code_is_refused_without_the_textrel_flag(tmp_path: Path) -> None:
    _, lib = _build(tmp_path, ASM_HEAD + "\t.p2align 3\n\t.quad dgemm\n" + ASM_NOTE, asm=True)
    assert lib is not None
    parsed = elf.Elf(lib)
    dyn = next(p for p in parsed.segments if p.type == elf.PT_DYNAMIC)
    patched = bytearray(lib)
    for i, e in enumerate(parsed.dynamic()):  # hide the text relocation from the flags
        if e.tag == elf.DT_TEXTREL:
            struct.pack_into("<qQ", patched, dyn.offset + 16 * i, 21, 0)  # DT_DEBUG
        if e.tag == elf.DT_FLAGS:
            struct.pack_into("<qQ", patched, dyn.offset + 16 * i, e.tag, e.value & ~4)
    finding = oc.check_shared_object(bytes(patched), "dgemm")
    assert finding is not None and "outside its writable data" in finding.message, finding


@needs_gcc
def test_stripped_libraries_still_refuse_load_time_code(tmp_path: Path) -> None:
    stripped = (*LINK, "-s")
    for name, expected in (("ifunc.c", "IRELATIVE"), ("ctors.c", "entry 0: address 0x")):
        _, lib = _build(tmp_path, (CORPUS / "loadtime" / name).read_text(), link=stripped)
        assert lib is not None
        finding = oc.check_shared_object(lib, "dgemm")
        assert finding is not None and expected in finding.message, (name, finding)


@needs_gcc
def test_link_options_the_engine_never_uses_are_refused(tmp_path: Path) -> None:
    source = (CORPUS / "honest" / "ladder2_ikj.c").read_text()
    cases = {
        "-Wl,-z,execstack": "executable stack",
        "-Wl,--no-as-needed,-lz": "needs libz.so.1",
        "-Wl,-rpath,/tmp": "library search path",
    }
    for option, expected in cases.items():
        _, lib = _build(tmp_path, source, link=(*LINK, option))
        assert lib is not None, option
        finding = oc.check_shared_object(lib, "dgemm")
        assert finding is not None and expected in finding.message, (option, finding)
    pie = ("gcc", "-pie", "-nostartfiles", "-fopenmp", "k.o", "-o", "k.so", "-Wl,-e,dgemm")
    obj, lib = _build(tmp_path, source, link=pie)
    assert lib is not None
    finding = oc.check_shared_object(lib, "dgemm")
    assert finding is not None and "PT_INTERP" in finding.message
    wrong = oc.check_shared_object(obj, "dgemm")
    assert wrong is not None and "not a shared library" in wrong.message
    wrong = oc.check_object(lib, "dgemm", NONE)
    assert wrong is not None and "not a relocatable object" in wrong.message


@needs_gcc
def test_object_symbol_policy(tmp_path: Path) -> None:
    kernel = "void dgemm(int M, int N, int K, const double *A, const double *B, double *C)"
    cases = {
        "extern void cblas_dgemm(void);\nvoid dgemm(void) { cblas_dgemm(); }": "library BLAS",
        "#include <dlfcn.h>\nvoid *dgemm(void) { return dlopen(\"x\", 0); }": "loads code",
        "#include <stdio.h>\nvoid dgemm(void) { puts(\"hi\"); }": "calls puts",
        "void helper(void) {}\nvoid dgemm(void) { helper(); }": "only `dgemm` may be global",
        "double dgemm[4];": "is not a function in .text",
        "__attribute__((visibility(\"hidden\"))) void dgemm(void) {}": "is hidden",
        "void sgemm(void) {}": "entry point `dgemm` is not defined",
        'static int x __attribute__((section(".hq_data"))) = 1;\nint dgemm(void) { return x; }':
            "has a section .hq_data ",
        'static int x __attribute__((section(".rodata.hq"))) = 1;\n'
        "int dgemm(void) { return x++; }": "has a section .rodata.hq ",
        kernel + "{\n#pragma omp parallel for\nfor (int i = 0; i < M * N; i++) C[i] = 0;\n}":
            "forbids openmp",
    }  # fmt: skip
    no_openmp = Constraints(forbidden=frozenset({"openmp"}))
    for source, expected in cases.items():
        obj, _ = _build(tmp_path, source)
        finding = oc.check_object(obj, "dgemm", no_openmp)
        assert finding is not None and expected in finding.message, (source, finding)


def _honest_sources() -> dict[str, str]:
    sources = {f"honest/{p.name}": p.read_text() for p in sorted((CORPUS / "honest").glob("*.c"))}
    sources.update(HONEST_EXTRA)
    seen: set[tuple[str, bool]] = set()
    for item in labelled_variants():  # one per family, with and without OpenMP
        key = (item.variant.family, item.variant.openmp)
        if key not in seen:
            seen.add(key)
            sources[f"variant/{key[0]}{'-omp' if key[1] else ''}"] = item.source
    return sources


HONEST = _honest_sources()


@needs_gcc
@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_kernel_passes_both_checks(name: str, tmp_path: Path) -> None:
    obj, lib = _build(tmp_path, HONEST[name])
    assert lib is not None
    assert oc.check_object(obj, "dgemm", NONE) is None
    assert oc.check_shared_object(lib, "dgemm") is None


@needs_gcc
@pytest.mark.parametrize("flags", [("-g",), ("-g3",), ("-mprefer-vector-width=256",),
                                   ("-fno-tree-vectorize",), ("-march=x86-64-v4",)])  # fmt: skip
def test_honest_kernels_pass_with_other_flags(flags: tuple[str, ...], tmp_path: Path) -> None:
    for name in ("cpu_dispatch", "tls_scratch", "avx512_openmp", "honest/packed_b.c"):
        obj, lib = _build(tmp_path, HONEST[name], *flags)
        assert lib is not None
        assert oc.check_object(obj, "dgemm", NONE) is None, (name, flags)
        assert oc.check_shared_object(lib, "dgemm") is None, (name, flags)


@needs_gcc
def test_cpu_dispatch_keeps_only_libgcc_constructor(tmp_path: Path) -> None:
    obj, lib = _build(tmp_path, HONEST["cpu_dispatch"])
    assert lib is not None
    assert {"__cpu_model", "__cpu_features2", "__cpu_indicator_init"} <= oc.undefined_symbols(obj)
    parsed = elf.Elf(lib)
    assert any(e.tag == elf.DT_INIT_ARRAY for e in parsed.dynamic())  # libgcc's probe
    assert oc.check_shared_object(lib, "dgemm") is None


def test_syscall_bytes_are_found_at_any_offset() -> None:
    x86, arm = elf.EM_X86_64, elf.EM_AARCH64
    assert oc._find_syscall(x86, b"\x90\xba\x0f\x05\x90") == (2, "syscall: 0f 05")
    assert oc._find_syscall(x86, b"\x0f\x0f\x34") == (1, "sysenter: 0f 34")
    assert oc._find_syscall(x86, b"\x00\xcd\x80") == (1, "int $0x80: cd 80")
    assert oc._find_syscall(x86, b"\x0f\x1f\x44\x00\x00\xcd\x81\x05\x0f") is None
    assert oc._find_syscall(arm, b"\x00\x01\x00\x00\xd4") == (1, "svc: 01 00 00 d4")  # svc #0
    assert oc._find_syscall(arm, b"\x01\x10\x00\xd4") is not None  # svc #0x80
    assert oc._find_syscall(arm, b"\x02\x00\x00\xd4\x1f\x20\x03\xd5") is None  # hvc, nop


@needs_gcc
def test_aarch64_objects_are_scanned_for_svc(tmp_path: Path) -> None:
    """No aarch64 compiler here: an x86 object relabelled aarch64 carries `svc #0`."""
    obj, _ = _build(tmp_path, 'void dgemm(void) { __asm__(".byte 0x01, 0, 0, 0xd4"); }')
    relabelled = obj[:18] + struct.pack("<H", elf.EM_AARCH64) + obj[20:]
    finding = oc.check_object(relabelled, "dgemm", NONE)
    assert finding is not None and "(svc: 01 00 00 d4) at .text+0x" in finding.message


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    if not shutil.which("gcc"):
        pytest.skip("needs gcc")
    obj, lib = _build(tmp_path_factory.mktemp("real"), HONEST["cpu_dispatch"])
    assert lib is not None
    return obj, lib


@settings(
    max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_malformed_files_are_findings_not_crashes(
    real_files: tuple[bytes, bytes], data: st.DataObject
) -> None:
    obj, lib = real_files
    mutated = bytearray(data.draw(st.sampled_from([obj, lib])))
    for _ in range(data.draw(st.integers(1, 6))):
        mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    for blob in (bytes(mutated), bytes(mutated[: data.draw(st.integers(0, len(mutated)))])):
        result = oc.check_object(blob, "dgemm", NONE)
        assert result is None or result.message
        result = oc.check_shared_object(blob, "dgemm")
        assert result is None or result.message
        with contextlib.suppress(elf.ElfError):
            oc.undefined_symbols(blob)
    garbage = oc.check_object(b"\x7fELF garbage", "dgemm", NONE)
    assert garbage is not None and "cannot be checked" in garbage.message
