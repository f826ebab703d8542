"""hpcq.eval.elf on real gcc output (cross-checked with binutils) and on malformed bytes."""

from __future__ import annotations

import contextlib
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcq.eval import elf
from hpcq.eval.elf import Elf, ElfError

pytestmark = pytest.mark.skipif(
    not (shutil.which("gcc") and shutil.which("readelf")), reason="needs gcc and binutils"
)

CFLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fPIC")
KERNEL = """
#include <stdlib.h>
#include <string.h>
static __thread double scratch[64];
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    double *row = N <= 64 ? scratch : malloc(sizeof(double) * (size_t)N);
    #pragma omp parallel for
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
    memset(row, 0, sizeof(double) * (size_t)N);
    C[0] += row[N - 1];
    if (row != scratch)
        free(row);
}
"""


def build(tmp: Path, source: str, link: bool = True) -> tuple[bytes, bytes]:
    """Compile (and link as the engine will) one C source; the object and library bytes."""
    (tmp / "k.c").write_text(source)
    subprocess.run(["gcc", *CFLAGS, "-c", "k.c", "-o", "k.o"], cwd=tmp, check=True)
    if link:
        link_argv = ["gcc", "-shared", "-nostartfiles", "-fopenmp", "k.o", "-o", "k.so", "-lm"]
        subprocess.run(link_argv, cwd=tmp, check=True)
    return (tmp / "k.o").read_bytes(), (tmp / "k.so").read_bytes() if link else b""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes]:
    tmp = tmp_path_factory.mktemp("elf")
    obj, lib = build(tmp, KERNEL)
    return tmp, obj, lib


def readelf(*argv: str) -> str:
    return subprocess.run(["readelf", "-W", *argv], capture_output=True, text=True).stdout


def test_object_sections_and_symbols_match_binutils(kernel: tuple[Path, bytes, bytes]) -> None:
    tmp, obj, _ = kernel
    parsed = Elf(obj)
    assert parsed.header.type == elf.ET_REL and parsed.machine == elf.EM_X86_64
    names = {s.name for s in parsed.sections if s.name}
    listed = set(re.findall(r"^\s*\[\s*\d+\]\s+(\S+)\s", readelf("-S", str(tmp / "k.o")), re.M))
    assert names == listed - {"NULL"}  # section 0 has no name: readelf shows its type
    assert {".text", ".tbss", ".rela.text", ".symtab", ".note.GNU-stack"} <= names
    text = next(s for s in parsed.sections if s.name == ".text")
    assert text.type == elf.SHT_PROGBITS and text.flags & elf.SHF_EXECINSTR
    assert len(parsed.section_data(text)) == text.size
    syms = {s.name: s for s in parsed.symbols()}
    dgemm = syms["dgemm"]
    assert (dgemm.type, dgemm.bind, dgemm.defined) == (elf.STT_FUNC, elf.STB_GLOBAL, True)
    assert dgemm.size > 0 and parsed.sections[dgemm.shndx].name == ".text"
    undefined = {s.name for s in parsed.symbols() if not s.defined and s.name}
    nm = subprocess.run(["nm", "-P", "k.o"], cwd=tmp, capture_output=True, text=True).stdout
    assert undefined == {ln.split()[0] for ln in nm.splitlines() if ln.split()[1] in "Uw"}
    assert {"free", "GOMP_parallel", "__tls_get_addr"} <= undefined
    rela = next(s for s in parsed.sections if s.name == ".rela.text")
    relocs = parsed.relocations(rela)
    assert relocs and all(0 <= r.offset < text.size for r in relocs)
    assert parsed.dynamic() == () and parsed.segments == ()


def test_library_segments_dynamic_and_relocations(kernel: tuple[Path, bytes, bytes]) -> None:
    tmp, _, lib = kernel
    parsed = Elf(lib)
    assert parsed.header.type == elf.ET_DYN
    loads = [p for p in parsed.segments if p.type == elf.PT_LOAD]
    assert any(p.flags & elf.PF_X for p in loads)
    dynamic = parsed.dynamic()
    needed = {parsed.dynamic_string(dynamic, e.value) for e in dynamic if e.tag == elf.DT_NEEDED}
    assert needed == set(re.findall(r"Shared library: \[(.+?)\]", readelf("-d", str(tmp / "k.so"))))
    assert {"libgomp.so.1", "libc.so.6"} <= needed
    relocs = parsed.dynamic_relocations(dynamic)
    assert len(relocs) == readelf("-r", str(tmp / "k.so")).count("R_X86_64_")
    exported = [s for s in parsed.symbols(elf.SHT_DYNSYM) if s.defined and s.name]
    assert [s.name for s in exported] == ["dgemm"]
    code = parsed.read(exported[0].value, 4)
    text = next(s for s in parsed.sections if s.name == ".text")
    start = exported[0].value - text.addr + text.offset
    assert code == lib[start : start + 4]
    with pytest.raises(ElfError):
        parsed.read(1 << 40, 8)


def _put(data: bytes, offset: int, fmt: str, *values: int | bytes) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def _walk(data: bytes) -> None:
    """Every accessor of the reader, as the static checks use them."""
    parsed = Elf(data)
    for table in (elf.SHT_SYMTAB, elf.SHT_DYNSYM):
        parsed.symbols(table)
    for s in parsed.sections:
        parsed.section_data(s)
        if s.type == elf.SHT_RELA:
            parsed.relocations(s)
    dynamic = parsed.dynamic()
    parsed.dynamic_relocations(dynamic)
    for e in dynamic:
        if e.tag == elf.DT_NEEDED:
            parsed.dynamic_string(dynamic, e.value)


def test_every_truncation_is_an_elf_error(kernel: tuple[Path, bytes, bytes]) -> None:
    _, obj, lib = kernel
    for data in (obj, lib):
        _walk(data)
        for n in range(0, len(data) - 1, max(1, len(data) // 400)):
            with pytest.raises(ElfError):
                _walk(data[:n])


def test_bad_header_fields(kernel: tuple[Path, bytes, bytes]) -> None:
    _, obj, _ = kernel
    bad = {
        "magic": _put(obj, 0, "<4s", b"\x7fELG"),
        "32-bit": _put(obj, 4, "<B", 1),
        "big-endian": _put(obj, 5, "<B", 2),
        "machine": _put(obj, 18, "<H", 3),
        "shoff past end": _put(obj, 40, "<Q", len(obj)),
        "shoff huge": _put(obj, 40, "<Q", 1 << 63),
        "shentsize": _put(obj, 58, "<H", 40),
        "shnum huge": _put(obj, 60, "<H", 0xFEFF),
        "extended numbering": _put(obj, 60, "<H", 0),
        "shstrndx": _put(obj, 62, "<H", 0xFFFF),
        "phnum huge": _put(_put(obj, 54, "<H", 56), 56, "<H", 0xFFFE),
    }
    for what, data in bad.items():
        started = time.monotonic()
        with pytest.raises(ElfError):
            _walk(data)
        assert time.monotonic() - started < 0.5, what


def _section_header(data: bytes, name: str) -> int:
    parsed = Elf(data)
    index = next(s.index for s in parsed.sections if s.name == name)
    return parsed.header.shoff + 64 * index


def test_bad_section_fields(kernel: tuple[Path, bytes, bytes]) -> None:
    _, obj, _ = kernel
    symtab = _section_header(obj, ".symtab")
    text = _section_header(obj, ".text")
    bad = {
        "section past end": _put(obj, text + 24, "<Q", len(obj) - 4),
        "section offset huge": _put(obj, text + 24, "<Q", (1 << 64) - 8),
        "symtab size huge": _put(obj, symtab + 32, "<Q", 24 * 10**9),
        "symtab entsize": _put(obj, symtab + 56, "<Q", 16),
        "symtab link": _put(obj, symtab + 40, "<I", 9999),
    }
    parsed = Elf(obj)
    table = next(s for s in parsed.sections if s.name == ".symtab")
    bad["symtab links to itself"] = _put(obj, symtab + 40, "<I", table.index)
    first = table.offset + 24  # symbol 1
    bad["symbol name offset"] = _put(obj, first, "<I", 1 << 31)
    bad["symbol section index"] = _put(obj, first + 6, "<H", 0xFEFE)
    strtab = parsed.sections[table.link]
    bad["unterminated names"] = _put(obj, strtab.offset + strtab.size - 1, "<B", 0x41)
    for what, data in bad.items():
        with pytest.raises(ElfError):
            _walk(data)
        assert what


def test_bad_dynamic_fields(kernel: tuple[Path, bytes, bytes]) -> None:
    _, _, lib = kernel
    parsed = Elf(lib)
    dyn = next(p for p in parsed.segments if p.type == elf.PT_DYNAMIC)
    entries = parsed.dynamic()
    phdr = parsed.header.phoff + 56 * parsed.segments.index(dyn)
    relasz = next(i for i, e in enumerate(entries) if e.tag in (elf.DT_RELASZ, elf.DT_PLTRELSZ))
    needed = next(i for i, e in enumerate(entries) if e.tag == elf.DT_NEEDED)
    no_null = bytearray(lib)
    for i in range(dyn.filesz // 16):
        struct.pack_into("<qQ", no_null, dyn.offset + 16 * i, 21, 0)  # all DT_DEBUG
    bad = {
        "no DT_NULL": bytes(no_null),
        "dynamic past end": _put(lib, phdr + 32, "<Q", len(lib)),
        "relocation table huge": _put(lib, dyn.offset + 16 * relasz + 8, "<Q", 1 << 40),
        "relocation table odd": _put(lib, dyn.offset + 16 * relasz + 8, "<Q", 25),
        "needed name": _put(lib, dyn.offset + 16 * needed + 8, "<Q", 1 << 20),
    }
    for what, data in bad.items():
        with pytest.raises(ElfError):
            _walk(data)
        assert what


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(ElfError):
        _walk(data)
    with contextlib.suppress(ElfError):
        _walk(b"\x7fELF\x02\x01\x01" + data)


@settings(
    max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_mutated_real_files_raise_only_elf_error(
    kernel: tuple[Path, bytes, bytes], data: st.DataObject
) -> None:
    _, obj, lib = kernel
    original = data.draw(st.sampled_from([obj, lib]))
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, 255 if data.draw(st.booleans()) else len(mutated) - 1))
        mutated[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ElfError):
        _walk(bytes(mutated))


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(ElfError):
        Elf(bytes(elf.MAX_FILE_BYTES + 1))
    assert issubclass(ElfError, ValueError)  # callers may catch it as malformed input
