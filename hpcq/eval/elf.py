"""A small reader of ELF64 little-endian files (x86_64 and aarch64) for untrusted bytes.

The static checks read a candidate's object (cand.o) and shared object (cand.so) with
it: section headers, program headers, symbols, dynamic entries and RELA relocations.
Those bytes come from a compiler run on untrusted source, so they are untrusted too:
every offset and count is checked against the file before use, counts are capped, no
loop runs longer than a count so checked, and any malformed input raises `ElfError`,
never another exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hpcq.errors import HpcqError

EM_X86_64 = 62
EM_AARCH64 = 183
ET_REL, ET_DYN = 1, 3

SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_NOTE, SHT_NOBITS, SHT_REL, SHT_DYNSYM = 7, 8, 9, 11
SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY, SHT_GROUP = 14, 15, 16, 17
SHT_X86_64_UNWIND = 0x70000001

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHF_MERGE, SHF_STRINGS, SHF_INFO_LINK, SHF_GROUP, SHF_TLS = 0x10, 0x20, 0x40, 0x200, 0x400

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_GNU_STACK = 1, 2, 3, 0x6474E551
PF_X, PF_W, PF_R = 0x1, 0x2, 0x4

STT_FUNC, STT_GNU_IFUNC = 2, 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STV_DEFAULT = 0
SHN_UNDEF, SHN_LORESERVE, SHN_XINDEX = 0, 0xFF00, 0xFFFF

DT_NULL, DT_NEEDED, DT_PLTRELSZ, DT_STRTAB, DT_RELA, DT_RELASZ = 0, 1, 2, 5, 7, 8
DT_RELAENT, DT_STRSZ, DT_INIT, DT_FINI, DT_RPATH, DT_REL, DT_PLTREL = 9, 10, 12, 13, 15, 17, 20
DT_TEXTREL, DT_JMPREL, DT_INIT_ARRAY, DT_FINI_ARRAY = 22, 23, 25, 26
DT_INIT_ARRAYSZ, DT_FINI_ARRAYSZ, DT_RUNPATH, DT_FLAGS = 27, 28, 29, 30
DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ, DT_RELR = 32, 33, 36
DT_AUDIT, DT_DEPAUDIT, DT_AUXILIARY, DT_FILTER = 0x6FFFFEFC, 0x6FFFFEFB, 0x7FFFFFFD, 0x7FFFFFFF
DF_TEXTREL = 0x4
R_RELATIVE = {EM_X86_64: 8, EM_AARCH64: 1027}  # R_X86_64_RELATIVE, R_AARCH64_RELATIVE
R_IRELATIVE = {EM_X86_64: 37, EM_AARCH64: 1032}

# Caps far above what gcc emits for one kernel (a few dozen sections, a few hundred
# symbols with -g), far below what would make a check slow.
MAX_FILE_BYTES = 64 << 20
MAX_SECTIONS = 4096
MAX_SEGMENTS = 256
MAX_SYMBOLS = 1 << 16
MAX_RELOCATIONS = 1 << 18
MAX_DYNAMIC = 4096
MAX_NAME_BYTES = 4096

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_PHDR = struct.Struct("<IIQQQQQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
_DYN = struct.Struct("<qQ")


class ElfError(HpcqError, ValueError):
    """The bytes are not a well-formed ELF64 little-endian file this reader understands.

    A ValueError too, as json.JSONDecodeError is: malformed input, not a broken node."""


@dataclass(frozen=True)
class Header:
    type: int
    machine: int
    entry: int
    phoff: int
    shoff: int
    phnum: int
    shnum: int
    shstrndx: int


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    addralign: int
    entsize: int


@dataclass(frozen=True)
class Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    align: int


@dataclass(frozen=True)
class Symbol:
    name: str
    type: int
    bind: int
    visibility: int
    shndx: int
    value: int
    size: int

    @property
    def defined(self) -> bool:
        return self.shndx != SHN_UNDEF


@dataclass(frozen=True)
class Relocation:
    offset: int
    type: int
    sym: int
    addend: int


@dataclass(frozen=True)
class DynamicEntry:
    tag: int
    value: int


def _unpack(fmt: struct.Struct, data: bytes, offset: int) -> tuple[int, ...]:
    if offset < 0 or offset + fmt.size > len(data):
        raise ElfError(f"a {fmt.size}-byte record at offset {offset:#x} is past the end")
    return fmt.unpack_from(data, offset)


def _table(data: bytes, offset: int, count: int, entsize: int, cap: int, what: str) -> None:
    """Check that `count` records of `entsize` bytes at `offset` lie inside the file."""
    if count > cap:
        raise ElfError(f"{count} {what}: more than the {cap} this reader accepts")
    if offset < 0 or offset + count * entsize > len(data):
        raise ElfError(f"the {what} at offset {offset:#x} run past the end of the file")


def _cstring(blob: bytes, offset: int, what: str) -> str:
    if not 0 <= offset < len(blob):
        if offset == 0:
            return ""
        raise ElfError(f"a {what} name offset {offset:#x} is outside its string table")
    end = blob.find(b"\0", offset, offset + MAX_NAME_BYTES)
    if end < 0:
        raise ElfError(f"a {what} name at {offset:#x} is not terminated")
    return blob[offset:end].decode("utf-8", "backslashreplace")


class Elf:
    """One parsed ELF64 little-endian file; the header and both header tables are read
    and checked at construction, symbols, relocations and dynamic entries on demand."""

    def __init__(self, data: bytes) -> None:
        if len(data) > MAX_FILE_BYTES:
            raise ElfError(f"{len(data)} bytes: larger than {MAX_FILE_BYTES}")
        self.data = bytes(data)
        self.header = _read_header(self.data)
        self.sections = _read_sections(self.data, self.header)
        self.segments = _read_segments(self.data, self.header)

    @property
    def machine(self) -> int:
        return self.header.machine

    def section_data(self, section: Section) -> bytes:
        if section.type in (SHT_NOBITS, SHT_NULL):
            return b""
        return self.data[section.offset : section.offset + section.size]

    def section(self, index: int) -> Section:
        if not 0 <= index < len(self.sections):
            raise ElfError(f"section index {index} out of range")
        return self.sections[index]

    def symbols(self, table_type: int = SHT_SYMTAB) -> tuple[Symbol, ...]:
        """Symbols of the file's SHT_SYMTAB (or SHT_DYNSYM) section; () when it has none."""
        tables = [s for s in self.sections if s.type == table_type]
        if not tables:
            return ()
        if len(tables) > 1:
            raise ElfError("more than one symbol table of one type")
        table = tables[0]
        if table.entsize != _SYM.size or table.size % _SYM.size:
            raise ElfError(f"symbol table {table.index} has entries of {table.entsize} bytes")
        strtab = self.section(table.link)
        if strtab.type != SHT_STRTAB:
            raise ElfError(f"symbol table {table.index} does not link to a string table")
        names = self.section_data(strtab)
        count = table.size // _SYM.size
        _table(self.data, table.offset, count, _SYM.size, MAX_SYMBOLS, "symbols")
        return tuple(self._symbol(table.offset + i * _SYM.size, names) for i in range(count))

    def _symbol(self, offset: int, names: bytes) -> Symbol:
        name, info, other, shndx, value, size = _unpack(_SYM, self.data, offset)
        if shndx == SHN_XINDEX or (shndx < SHN_LORESERVE and shndx >= len(self.sections)):
            raise ElfError(f"a symbol names section index {shndx:#x}, which does not exist")
        return Symbol(
            _cstring(names, name, "symbol"), info & 0xF, info >> 4, other & 0x3, shndx, value, size
        )

    def relocations(self, section: Section) -> tuple[Relocation, ...]:
        """The entries of one SHT_RELA section."""
        if section.type != SHT_RELA or section.entsize != _RELA.size:
            raise ElfError(f"section {section.index} is not a RELA table of 24-byte entries")
        return _relocations(self.section_data(section))

    def dynamic(self) -> tuple[DynamicEntry, ...]:
        """The PT_DYNAMIC segment up to DT_NULL, as the loader reads it; () without one."""
        dyn = [p for p in self.segments if p.type == PT_DYNAMIC]
        if not dyn:
            return ()
        if len(dyn) > 1:
            raise ElfError("more than one PT_DYNAMIC segment")
        count = dyn[0].filesz // _DYN.size
        _table(self.data, dyn[0].offset, count, _DYN.size, MAX_DYNAMIC, "dynamic entries")
        out: list[DynamicEntry] = []
        for i in range(count):
            tag, value = _unpack(_DYN, self.data, dyn[0].offset + i * _DYN.size)
            if tag == DT_NULL:
                return tuple(out)
            out.append(DynamicEntry(tag, value))
        raise ElfError("the dynamic segment has no DT_NULL terminator")

    def read(self, vaddr: int, size: int) -> bytes:
        """`size` bytes at virtual address `vaddr` as a PT_LOAD segment maps them."""
        if size < 0 or size > len(self.data) + (1 << 20):
            raise ElfError(f"cannot read {size} bytes at {vaddr:#x}")
        for p in self.segments:
            if p.type == PT_LOAD and p.vaddr <= vaddr and vaddr + size <= p.vaddr + p.memsz:
                start = vaddr - p.vaddr
                in_file = self.data[p.offset + start : p.offset + min(start + size, p.filesz)]
                return in_file + bytes(size - len(in_file))  # past filesz: zero fill
        raise ElfError(f"{size} bytes at {vaddr:#x} are not inside one loaded segment")

    def dynamic_relocations(self, entries: tuple[DynamicEntry, ...]) -> tuple[Relocation, ...]:
        """DT_RELA and DT_JMPREL tables, read through the loaded segments."""
        last = {e.tag: e.value for e in entries}  # the loader keeps the last of each tag
        if DT_RELA in last and last.get(DT_RELAENT, _RELA.size) != _RELA.size:
            raise ElfError("DT_RELAENT is not 24")
        out: list[Relocation] = []
        for table, size in ((DT_RELA, DT_RELASZ), (DT_JMPREL, DT_PLTRELSZ)):
            if table not in last:
                continue
            if table == DT_JMPREL and last.get(DT_PLTREL) != DT_RELA:
                raise ElfError("DT_JMPREL entries are not RELA")
            nbytes = last.get(size, 0)
            if nbytes > MAX_RELOCATIONS * _RELA.size:
                raise ElfError(f"a dynamic relocation table of {nbytes} bytes is too large")
            out.extend(_relocations(self.read(last[table], nbytes)))
        return tuple(out)

    def dynamic_string(self, entries: tuple[DynamicEntry, ...], offset: int) -> str:
        """A name in the DT_STRTAB string table (DT_NEEDED, DT_SONAME)."""
        last = {e.tag: e.value for e in entries}
        if DT_STRTAB not in last or DT_STRSZ not in last:
            raise ElfError("a dynamic string is used without DT_STRTAB/DT_STRSZ")
        if last[DT_STRSZ] > len(self.data):
            raise ElfError("DT_STRSZ is larger than the file")
        return _cstring(self.read(last[DT_STRTAB], last[DT_STRSZ]), offset, "dynamic")


def _relocations(blob: bytes) -> tuple[Relocation, ...]:
    if len(blob) % _RELA.size:
        raise ElfError(f"a relocation table of {len(blob)} bytes is not whole entries")
    if len(blob) // _RELA.size > MAX_RELOCATIONS:
        raise ElfError(f"more than {MAX_RELOCATIONS} relocations in one table")
    return tuple(
        Relocation(offset, info & 0xFFFFFFFF, info >> 32, addend)
        for offset, info, addend in _RELA.iter_unpack(blob)
    )


def _read_header(data: bytes) -> Header:
    if len(data) < _EHDR.size:
        raise ElfError(f"{len(data)} bytes: too short for an ELF header")
    (ident, e_type, machine, version, entry, phoff, shoff, _flags, ehsize, phentsize,
     phnum, shentsize, shnum, shstrndx) = _EHDR.unpack_from(data, 0)  # fmt: skip
    if ident[:4] != b"\x7fELF":
        raise ElfError("not an ELF file (bad magic)")
    if ident[4] != 2 or ident[5] != 1 or ident[6] != 1 or version != 1:
        raise ElfError("not a version-1 ELF64 little-endian file")
    if machine not in (EM_X86_64, EM_AARCH64):
        raise ElfError(f"machine {machine} is neither x86_64 nor aarch64")
    if ehsize < _EHDR.size:
        raise ElfError(f"e_ehsize {ehsize} is too small")
    if (shnum and shentsize != _SHDR.size) or (phnum and phentsize != _PHDR.size):
        raise ElfError("header table entry sizes are not the ELF64 ones")
    if (shnum == 0 and shoff != 0) or shstrndx == SHN_XINDEX or phnum == 0xFFFF:
        raise ElfError("extended section or segment numbering is not supported")
    return Header(e_type, machine, entry, phoff, shoff, phnum, shnum, shstrndx)


def _read_sections(data: bytes, h: Header) -> tuple[Section, ...]:
    _table(data, h.shoff, h.shnum, _SHDR.size, MAX_SECTIONS, "section headers")
    raw = [_SHDR.unpack_from(data, h.shoff + i * _SHDR.size) for i in range(h.shnum)]
    for i, (_, sh_type, _, _, offset, size, *_rest) in enumerate(raw):
        if i and sh_type not in (SHT_NOBITS, SHT_NULL) and offset + size > len(data):
            raise ElfError(f"section {i} ({size} bytes at {offset:#x}) runs past the end")
    names = b""
    if h.shstrndx != SHN_UNDEF:
        if h.shstrndx >= h.shnum or raw[h.shstrndx][1] != SHT_STRTAB:
            raise ElfError(f"e_shstrndx {h.shstrndx} is not a string table")
        offset, size = raw[h.shstrndx][4], raw[h.shstrndx][5]
        names = data[offset : offset + size]
    return tuple(Section(i, _cstring(names, r[0], "section"), *r[1:]) for i, r in enumerate(raw))


def _read_segments(data: bytes, h: Header) -> tuple[Segment, ...]:
    _table(data, h.phoff, h.phnum, _PHDR.size, MAX_SEGMENTS, "program headers")
    out = []
    for i in range(h.phnum):
        p_type, flags, offset, vaddr, _paddr, filesz, memsz, align = _PHDR.unpack_from(
            data, h.phoff + i * _PHDR.size
        )
        if offset + filesz > len(data):
            raise ElfError(f"segment {i} ({filesz} bytes at {offset:#x}) runs past the end")
        if p_type == PT_LOAD and filesz > memsz:
            raise ElfError(f"loaded segment {i} has more file bytes than memory bytes")
        out.append(Segment(p_type, flags, offset, vaddr, filesz, memsz, align))
    return tuple(out)
