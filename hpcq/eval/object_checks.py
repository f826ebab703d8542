"""Static checks of the compiled object and the linked library, read with hpcq.eval.elf.

- the object (`check_object`): every section on a whitelist of names, types and flags
  (code only in .text, nothing the loader runs: no .init/.fini fragments, no constructor
  tables under any name, no writable code, no executable stack); the symbol policy of
  hpcq.eval.static_checks; no IFUNC; no toolchain name redefined; and no byte sequence of a
  system-call instruction anywhere in its code, on or off instruction boundaries;
- the linked library (`check_shared_object`), what the loader will act on: no
  DT_INIT/DT_FINI, no destructors, constructors only the toolchain's own, no IFUNC
  relocations, no text relocations, only libc/libm/libgomp/libgcc_s needed, no
  executable stack or writable code, and again no system-call bytes in anything mapped
  executable.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from hpcq.eval import elf
from hpcq.eval.elf import DynamicEntry, Elf, ElfError, Relocation, Section, Symbol
from hpcq.eval.static_checks import (
    Finding,
    check_symbols,
    may_import,
    printable,
    printable_list,
    word_set,
)
from hpcq.outcome import Constraints

# Sections whose contents the loader runs or calls, by the names the linker places.
_LOADER_CODE = (".init", ".fini")
_LOADER_TABLES = (".init_array", ".fini_array", ".preinit_array", ".ctors", ".dtors")
_TABLE_TYPES = {
    elf.SHT_INIT_ARRAY: "INIT_ARRAY",
    elf.SHT_FINI_ARRAY: "FINI_ARRAY",
    elf.SHT_PREINIT_ARRAY: "PREINIT_ARRAY",
}
# Names the toolchain defines in a linked library (crt files, ld, libgcc's CPU model):
# a candidate's own definition could pass for the toolchain's in cand.so.
_RESERVED = word_set(
    """
    _init _fini _start frame_dummy __do_global_dtors_aux register_tm_clones
    deregister_tm_clones __frame_dummy_init_array_entry completed.0 __dso_handle
    __do_global_dtors_aux_fini_array_entry __TMC_END__ __FRAME_END__ _DYNAMIC
    _GLOBAL_OFFSET_TABLE_ __GNU_EH_FRAME_HDR __bss_start _edata _end __init_array_start
    __init_array_end __fini_array_start __fini_array_end __preinit_array_start
    __preinit_array_end __offload_func_table __offload_funcs_end __offload_var_table
    __offload_vars_end __cpu_indicator_init __cpu_model __cpu_features2 __tls_get_addr
    """
)
# The only constructors a linked kernel may have: libgcc's CPU-model probe (cpuid only),
# pulled in by __builtin_cpu_supports. Found by name in cand.so's .symtab, which is
# trustworthy because check_object refuses any candidate symbol with a reserved name.
_TOOLCHAIN_CONSTRUCTORS = frozenset({"__cpu_indicator_init"})
_NEEDED = word_set(
    """
    libc.so.6 libm.so.6 libgomp.so.1 libgcc_s.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1
    """
)
_FORBIDDEN_TAGS = {
    elf.DT_INIT: "an _init function (DT_INIT)",
    elf.DT_FINI: "an _fini function (DT_FINI)",
    elf.DT_PREINIT_ARRAY: "pre-initialisers (DT_PREINIT_ARRAY)",
    elf.DT_PREINIT_ARRAYSZ: "pre-initialisers (DT_PREINIT_ARRAYSZ)",
    elf.DT_TEXTREL: "relocations in its code (DT_TEXTREL)",
    elf.DT_AUDIT: "an audit library (DT_AUDIT)",
    elf.DT_DEPAUDIT: "an audit library (DT_DEPAUDIT)",
    elf.DT_AUXILIARY: "a filtee library (DT_AUXILIARY)",
    elf.DT_FILTER: "a filtee library (DT_FILTER)",
    elf.DT_RPATH: "a library search path (DT_RPATH)",
    elf.DT_RUNPATH: "a library search path (DT_RUNPATH)",
    elf.DT_REL: "REL relocations, which this check does not read (DT_REL)",
    elf.DT_RELR: "packed relocations, which this check does not read (DT_RELR)",
}
_MAX_CONSTRUCTORS = 64

# System-call instructions as bytes, searched at every offset of executable code: a jump
# into the middle of `mov $0x9090050f, %eax` runs `0f 05` although a disassembly shows
# no syscall. On aarch64 any `svc #imm` enters the kernel (Linux ignores the immediate).
_SYSCALL_BYTES = {
    elf.EM_X86_64: re.compile(rb"\x0f\x05|\x0f\x34|\xcd\x80"),
    elf.EM_AARCH64: re.compile(rb"[\x01\x21\x41\x61\x81\xa1\xc1\xe1].[\x00-\x1f]\xd4", re.S),
}
_SYSCALL_NAMES = {b"\x0f\x05": "syscall", b"\x0f\x34": "sysenter", b"\xcd\x80": "int $0x80"}


@dataclass(frozen=True)
class _Allowed:
    """Sections of one kind that gcc emits for a C kernel; a name ending in `*` is a
    prefix. Every such section has all `required` flags and no flag outside
    `required | optional`."""

    names: tuple[str, ...]
    types: frozenset[int]
    required: int
    optional: int = 0


_W, _A, _X, _G = elf.SHF_WRITE, elf.SHF_ALLOC, elf.SHF_EXECINSTR, elf.SHF_GROUP
_MS, _T = elf.SHF_MERGE | elf.SHF_STRINGS, elf.SHF_TLS
_PROGBITS, _NOBITS = frozenset({elf.SHT_PROGBITS}), frozenset({elf.SHT_NOBITS})
SECTION_WHITELIST = (
    _Allowed(("",), frozenset({elf.SHT_NULL}), 0),
    _Allowed((".text", ".text.*"), _PROGBITS, _A | _X, _G),
    _Allowed((".rodata", ".rodata.*"), _PROGBITS, _A, _MS | _G),
    _Allowed((".data", ".data.*"), _PROGBITS, _W | _A, _G),
    _Allowed((".bss", ".bss.*"), _NOBITS, _W | _A, _G),
    _Allowed((".tdata", ".tdata.*"), _PROGBITS, _W | _A | _T, _G),
    _Allowed((".tbss", ".tbss.*"), _NOBITS, _W | _A | _T, _G),
    _Allowed((".eh_frame",), frozenset({elf.SHT_PROGBITS, elf.SHT_X86_64_UNWIND}), _A),
    _Allowed((".note.gnu.property",), frozenset({elf.SHT_NOTE}), _A),
    _Allowed((".note.GNU-stack",), _PROGBITS, 0),
    _Allowed((".comment",), _PROGBITS, 0, _MS),
    _Allowed((".debug_*",), _PROGBITS, 0, _MS | _G),
    _Allowed((".group",), frozenset({elf.SHT_GROUP}), 0),
    _Allowed((".symtab",), frozenset({elf.SHT_SYMTAB}), 0),
    _Allowed((".strtab", ".shstrtab"), frozenset({elf.SHT_STRTAB}), 0),
)
"""What gcc 12 `-O3 -march=native -mprefer-vector-width=512 -fopenmp -fPIC -c` (with or
without -g/-g3) emits for the honest corpus, the template variants and cpu-dispatch,
TLS, intrinsics, constant-table and cold-path kernels. Relocation sections `.rela<X>`
(RELA, flags I and G allowed) are allowed for every allowed section X."""


# -- the object and the linked library, read with hpcq.eval.elf ------------------------------


def undefined_symbols(data: bytes) -> set[str]:
    """Names an object references without defining them. Raises ElfError when the
    bytes are not an ELF file hpcq.eval.elf can read."""
    return {s.name for s in Elf(data).symbols() if not s.defined and s.name}


def check_object(data: bytes, entry: str, constraints: Constraints) -> Finding | None:
    """Check the compiled, not yet linked cand.o; None when it may be linked."""
    try:
        obj = Elf(data)
        if obj.header.type != elf.ET_REL:
            return Finding("the compiled file is not a relocatable object")
        return (
            _object_sections(obj) or _object_symbols(obj, entry, constraints) or _scan_sections(obj)
        )
    except ElfError as exc:
        return Finding(f"the compiled object cannot be checked ({exc}): gcc never emits this")


def check_shared_object(data: bytes, entry: str) -> Finding | None:
    """Check cand.so as `gcc -shared -nostartfiles -fopenmp cand.o -o cand.so -lm` links
    it (no crt files, so DT_INIT/DT_FINI are refused); None when it may be loaded.

    Reads what the loader acts on (program headers, the dynamic segment, dynamic
    relocations), not the section headers, except the symbol tables."""
    try:
        lib = Elf(data)
        if lib.header.type != elf.ET_DYN:
            return Finding("the linked file is not a shared library")
        dynamic = lib.dynamic()
        relocations = lib.dynamic_relocations(dynamic)
        return (
            _library_segments(lib)
            or _library_dynamic(lib, dynamic)
            or _library_relocations(lib, relocations)
            or _library_constructors(lib, dynamic, relocations)
            or _library_symbols(lib, entry)
            or _scan_segments(lib)
        )
    except ElfError as exc:
        return Finding(f"the linked library cannot be checked ({exc})")


def _named(name: str, bases: tuple[str, ...]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in bases)


def _object_sections(obj: Elf) -> Finding | None:
    for section in obj.sections:
        finding = _section_finding(obj, section)
        if finding is not None:
            return finding
    if not any(s.name == ".note.GNU-stack" for s in obj.sections):
        return Finding(
            "has no .note.GNU-stack section, so the linker would make the stack executable: "
            "executable stacks are not allowed"
        )
    return None


def _section_finding(obj: Elf, s: Section) -> Finding | None:
    name, flags = s.name, s.flags
    if _named(name, _LOADER_CODE):
        return Finding(f"has code in the {printable(name)} section: load-time code is not allowed")
    if _named(name, _LOADER_TABLES):
        return Finding(
            f"has a {printable(name)} section, a table of functions the loader calls: "
            "load-time code (constructors, destructors) is not allowed"
        )
    if s.type in _TABLE_TYPES:
        return Finding(
            f"section {printable(name)} has type {_TABLE_TYPES[s.type]}, so the loader would call "
            "the functions it lists: load-time code is not allowed"
        )
    if name == ".note.GNU-stack" and flags & _X:
        return Finding(
            "asks for an executable stack (its .note.GNU-stack section is executable, as for "
            "a nested function's trampoline): executable stacks are not allowed"
        )
    if flags & _X and flags & _W:
        return Finding(
            f"section {printable(name)} is writable and executable: code that writes code "
            "is not allowed"
        )
    if flags & _X and not _named(name, (".text",)):
        return Finding(
            f"has executable code in section {printable(name)}: code may only be in .text "
            "(no custom sections)"
        )
    if not _whitelisted(obj, s):
        return Finding(
            f"has a section {printable(name)} (type {s.type:#x}, flags {flags:#x}) that gcc does "
            "not emit for a C kernel: keep code and data in ordinary functions and variables"
        )
    return None


def _whitelisted(obj: Elf, s: Section) -> bool:
    if s.type == elf.SHT_RELA:  # `.rela<X>` holds the relocations of an allowed X
        target = obj.section(s.info)
        return (
            target.index != 0
            and s.name == ".rela" + target.name
            and not s.flags & ~(elf.SHF_INFO_LINK | _G)
            and target.type != elf.SHT_RELA
            and _whitelisted(obj, target)
        )
    return any(_matches(s, rule) for rule in SECTION_WHITELIST)


def _matches(s: Section, rule: _Allowed) -> bool:
    named = any(s.name == n or (n.endswith("*") and s.name.startswith(n[:-1])) for n in rule.names)
    return (
        named
        and s.type in rule.types
        and s.flags & rule.required == rule.required
        and not s.flags & ~(rule.required | rule.optional)
    )


def _object_symbols(obj: Elf, entry: str, constraints: Constraints) -> Finding | None:
    symbols = obj.symbols()
    ifuncs = {s.name for s in symbols if s.type == elf.STT_GNU_IFUNC}
    if ifuncs:  # an IFUNC resolver runs while the library is loaded: load-time code
        return Finding(
            f"defines IFUNC symbol(s) {printable_list(ifuncs)}: load-time code is not allowed "
            "(no ifunc or target_clones; dispatch inside the kernel with __builtin_cpu_supports)"
        )
    reserved = {s.name for s in symbols if s.defined and s.name in _RESERVED}
    if reserved:
        return Finding(
            f"defines {printable_list(reserved)}, a name the toolchain reserves for its own "
            "load-time code: rename it"
        )
    defined = {s.name for s in symbols if s.defined and s.bind != elf.STB_LOCAL}
    undefined = {s.name for s in symbols if not s.defined and s.name}
    finding = check_symbols(defined, undefined, entry, constraints)
    if finding is not None:
        return finding
    main = next(s for s in symbols if s.name == entry and s.defined and s.bind != elf.STB_LOCAL)
    in_code = main.shndx < len(obj.sections) and obj.sections[main.shndx].flags & _X
    if main.type != elf.STT_FUNC or not in_code:
        return Finding(f"entry point `{entry}` is not a function in .text")
    if main.visibility != elf.STV_DEFAULT:
        return Finding(f"entry point `{entry}` is hidden: it must have default visibility")
    return None


def _find_syscall(machine: int, code: bytes) -> tuple[int, str] | None:
    """First offset in `code` where a system-call instruction's bytes start, and which."""
    match = _SYSCALL_BYTES[machine].search(code)
    if match is None:
        return None
    raw = match.group(0)
    return match.start(), f"{_SYSCALL_NAMES.get(raw, 'svc')}: {raw.hex(' ')}"


def _syscall_finding(what: str, where: str) -> Finding:
    return Finding(
        f"contains the bytes of a system-call instruction ({what}) at {where}: system calls "
        "are not allowed, not even as bytes inside another instruction"
    )


def _scan_sections(obj: Elf) -> Finding | None:
    for s in obj.sections:
        if s.flags & _X and (hit := _find_syscall(obj.machine, obj.section_data(s))):
            return _syscall_finding(hit[1], f"{printable(s.name)}+{hit[0]:#x}")
    return None


def _library_segments(lib: Elf) -> Finding | None:
    types = {p.type for p in lib.segments}
    if elf.PT_INTERP in types:
        return Finding("the linked library names a program interpreter (PT_INTERP)")
    if elf.PT_DYNAMIC not in types:
        return Finding("the linked library has no dynamic segment")
    stacks = [p for p in lib.segments if p.type == elf.PT_GNU_STACK]
    if not stacks or any(p.flags & elf.PF_X for p in stacks):
        return Finding(
            "the linked library asks for an executable stack (PT_GNU_STACK missing or "
            "executable): executable stacks are not allowed"
        )
    if any(
        p.type == elf.PT_LOAD and p.flags & elf.PF_W and p.flags & elf.PF_X for p in lib.segments
    ):
        return Finding(
            "the linked library has a segment that is writable and executable: code that "
            "writes code is not allowed"
        )
    return None


def _library_dynamic(lib: Elf, dynamic: tuple[DynamicEntry, ...]) -> Finding | None:
    tags = Counter(e.tag for e in dynamic if e.tag != elf.DT_NEEDED)
    if tags and max(tags.values()) > 1:
        return Finding("the linked library repeats dynamic entries: the linker never does")
    for e in dynamic:
        what = _FORBIDDEN_TAGS.get(e.tag)
        if what is None and e.tag == elf.DT_FLAGS and e.value & elf.DF_TEXTREL:
            what = _FORBIDDEN_TAGS[elf.DT_TEXTREL]
        if what is not None:
            return Finding(f"the linked library has {what}: load-time code is not allowed")
        if e.tag == elf.DT_NEEDED and (name := lib.dynamic_string(dynamic, e.value)) not in _NEEDED:
            return Finding(
                f"the linked library needs {printable(name)}: only libc, libm, libgomp and "
                "libgcc_s may be linked"
            )
    last = {e.tag: e.value for e in dynamic}
    if elf.DT_FINI_ARRAY in last and last.get(elf.DT_FINI_ARRAYSZ, 1):
        return Finding(
            "the linked library has destructors (DT_FINI_ARRAY): code run when it is "
            "unloaded is not allowed"
        )
    return None


def _library_relocations(lib: Elf, relocations: tuple[Relocation, ...]) -> Finding | None:
    ifuncs = {
        s.name
        for table in (elf.SHT_SYMTAB, elf.SHT_DYNSYM)
        for s in lib.symbols(table)
        if s.type == elf.STT_GNU_IFUNC
    }
    if ifuncs:
        return Finding(
            f"the linked library defines IFUNC symbol(s) {printable_list(ifuncs)}: "
            "load-time code is not allowed"
        )
    data = [
        (p.vaddr, p.vaddr + p.memsz)
        for p in lib.segments
        if p.type == elf.PT_LOAD and p.flags & elf.PF_W
    ]
    dyn = [(p.vaddr, p.vaddr + p.memsz) for p in lib.segments if p.type == elf.PT_DYNAMIC]
    for r in relocations:
        if r.type == elf.R_IRELATIVE[lib.machine]:
            return Finding(
                f"the linked library has an IFUNC resolver (IRELATIVE relocation at "
                f"{r.offset:#x}): load-time code is not allowed"
            )
        end = r.offset + 8
        inside = any(lo <= r.offset and end <= hi for lo, hi in data)
        if not inside or any(r.offset < hi and lo < end for lo, hi in dyn):
            return Finding(
                f"the linked library has a load-time relocation at {r.offset:#x} outside its "
                "writable data: only data may be relocated"
            )
    return None


def _library_constructors(
    lib: Elf, dynamic: tuple[DynamicEntry, ...], relocations: tuple[Relocation, ...]
) -> Finding | None:
    last = {e.tag: e.value for e in dynamic}
    if elf.DT_INIT_ARRAY not in last:
        return None
    start, size = last[elf.DT_INIT_ARRAY], last.get(elf.DT_INIT_ARRAYSZ, 0)
    if size % 8 or size // 8 > _MAX_CONSTRUCTORS:
        return Finding(f"the linked library has a constructor table of {size} bytes")
    slots = lib.read(start, size)
    near = [r for r in relocations if start - 8 < r.offset < start + size]
    allowed = _toolchain_constructors(lib)
    for i in range(size // 8):
        target = _slot_target(lib, start + 8 * i, slots[8 * i : 8 * i + 8], near)
        if target is None or target not in allowed:
            return Finding(
                f"the linked library has a load-time constructor (.init_array entry {i}: "
                f"{_describe(lib, target)}): load-time code is not allowed"
            )
    return None


def _slot_target(lib: Elf, addr: int, raw: bytes, relocations: list[Relocation]) -> int | None:
    """Where the loader jumps for one .init_array slot; None when no plain R_*_RELATIVE
    relocation (or the raw value, without one) decides it."""
    touching = [r for r in relocations if addr - 8 < r.offset < addr + 8]
    if not touching:
        return int.from_bytes(raw, "little")
    only = touching[0]
    if len(touching) == 1 and only.offset == addr and only.type == elf.R_RELATIVE[lib.machine]:
        return only.addend
    return None


def _toolchain_constructors(lib: Elf) -> dict[int, str]:
    """Addresses of the allowed constructors, each defined once as a function."""
    found: dict[str, list[Symbol]] = {}
    for s in lib.symbols():
        if s.name in _TOOLCHAIN_CONSTRUCTORS:
            found.setdefault(s.name, []).append(s)
    return {
        syms[0].value: name
        for name, syms in found.items()
        if len(syms) == 1 and syms[0].type == elf.STT_FUNC and syms[0].defined
    }


def _describe(lib: Elf, target: int | None) -> str:
    if target is None:
        return "set by a relocation that is not a plain relative one"
    names = [s.name for s in lib.symbols() if s.value == target and s.type == elf.STT_FUNC]
    return f"function {printable(names[0])} at {target:#x}" if names else f"address {target:#x}"


def _library_symbols(lib: Elf, entry: str) -> Finding | None:
    dynsym = lib.symbols(elf.SHT_DYNSYM)
    exported = {s.name: s for s in dynsym if s.defined and s.bind != elf.STB_LOCAL}
    main = exported.get(entry)
    if main is None or main.type != elf.STT_FUNC or main.visibility != elf.STV_DEFAULT:
        return Finding(f"the linked library does not export `{entry}` as a function")
    if len(exported) > 1:
        return Finding(
            f"the linked library exports {printable_list(set(exported) - {entry})} "
            f"besides `{entry}`"
        )
    imports = {s.name for s in dynsym if not s.defined and s.name}
    other = {n for n in imports if not may_import(n)}
    if other:
        return Finding(f"the linked library calls {printable_list(other)}, not allowed in a kernel")
    return None


def _scan_segments(lib: Elf) -> Finding | None:
    """Every byte mapped executable: the loader maps whole pages (up to 64 KiB ones on
    aarch64), so the scan covers each executable segment rounded out to its pages."""
    for p in lib.segments:
        if p.type != elf.PT_LOAD or not p.flags & elf.PF_X:
            continue
        page = 4096 if lib.machine == elf.EM_X86_64 else min(max(p.align, 4096), 1 << 16)
        lo = p.offset - p.offset % page
        hi = min(len(lib.data), -(-(p.offset + p.filesz) // page) * page)
        hit = _find_syscall(lib.machine, lib.data[lo:hi])
        if hit is not None:
            return _syscall_finding(hit[1], _where(lib, lo + hit[0]))
    return None


def _where(lib: Elf, offset: int) -> str:
    for s in lib.sections:
        if s.flags & _A and s.type != elf.SHT_NOBITS and s.offset <= offset < s.offset + s.size:
            return f"{printable(s.name)}+{offset - s.offset:#x} of the linked library"
    return f"file offset {offset:#x} of the linked library"
