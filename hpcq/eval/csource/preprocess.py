"""The candidate's own lines of `gcc -E` output, at their original line numbers.

Technique detection reads what the compiler reads: macros expanded, `#if 0` gone, token
pasting done, `_Pragma` turned into `#pragma` lines. The engine runs `gcc -E` (same flags
as the compile, linemarkers kept) on the candidate saved as `cand.c`; `own_lines` keeps
what gcc attributes to the candidate and drops the system headers it includes.

Linemarkers are `# <line> "<file>" <flags>`: flag 1 enters an included file, 2 returns
to the includer, 3 and 4 say "system header" and "extern C". Ownership is decided per
include frame, not per file name: the main file's frame is the candidate's once gcc has
entered it (`# 1 "cand.c"`), whatever `#line` later renames it to, and a file entered
by an include is the candidate's when its base name is the main file's (`#include
__FILE__` or `#include "./cand.c"`: the same text at the same line numbers).

A candidate can forge an include frame by writing a linemarker itself
(`# 1 "/usr/include/stdio.h" 1 3 4` is accepted by gcc in a source file), and gcc -E then
attributes what follows to a system header. Nothing in the output tells a forged marker
from a real one, so the engine must refuse such sources first: `line_control` finds
`#line` and GNU linemarker directives in the raw source (no honest kernel needs one).

Time and memory are linear in the output: text of other files is skipped without being
split into lines, and a line number is capped at MAX_LINE, so `#line 2000000000` cannot
make the result huge.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_right

from hpcq.eval.csource.strip import strip_c

MAX_LINE = 1 << 20
"""Highest line number placed (a 256 KiB source has at most 262,145 lines); content
attributed to a later line is placed on this one."""

# A linemarker: `# 12 "cand.c" 2 3`; gcc writes `\"` and `\\` escaped in the file name.
_MARKER = re.compile(
    r'^#[ \t]*(?:line[ \t]+)?(\d{1,12})[ \t]+"((?:[^"\\\n]|\\.)*)"([ \t\d]*)$', re.M
)
_PRAGMA_LINE = re.compile(r"[ \t]*#[ \t]*pragma\b[ \t]*(.*)")
_SPECIAL = ("<built-in>", "<command-line>")


def own_lines(preprocessed: str, main_file: str = "cand.c") -> str:
    """The lines of `preprocessed` (gcc -E output with linemarkers) that gcc attributes to
    `main_file`, each at its original line number (line N of the result is line N of the
    candidate; other lines are blank). Several output lines from one source line (a macro
    whose expansion holds `_Pragma`) are joined with spaces on that line; a `#pragma`
    among them becomes `_Pragma("...")` so that it ends where it should. Text without
    any linemarker is returned unchanged."""
    base = os.path.basename(main_file)
    buckets: dict[int, list[str]] = {}
    frames = [True]  # per include frame: is it the candidate's own text?
    started = False  # gcc has entered the main file (`# 1 "cand.c"`)
    line, pos = 1, 0
    for m in _MARKER.finditer(preprocessed):
        if frames[-1]:
            _place(buckets, preprocessed[pos : m.start()], line)
        pos = m.end() + 1  # past the marker's newline
        number, name, flags = int(m.group(1)), _unescape(m.group(2)), m.group(3).split()
        if "1" in flags:
            frames.append(os.path.basename(name) == base)
        elif "2" in flags and len(frames) > 1:
            frames.pop()
        elif len(frames) == 1:  # the top frame: a resync or `#line` in the main file
            if name == main_file and number >= 1:
                started = True
            frames[0] = started or (name == main_file and name not in _SPECIAL)
        line = number
    if pos == 0:
        return preprocessed
    if frames[-1]:
        _place(buckets, preprocessed[pos:], line)
    return _render(buckets)


def _place(buckets: dict[int, list[str]], segment: str, first: int) -> None:
    """Put the lines of `segment` into buckets from line `first` on (blank ones skipped)."""
    if not segment.strip():
        return
    for offset, text in enumerate(segment.split("\n")):
        if text.strip():
            buckets.setdefault(min(first + offset, MAX_LINE), []).append(text)


def _render(buckets: dict[int, list[str]]) -> str:
    if not buckets:
        return ""
    lines = [""] * (max(buckets) + 1)
    for number, pieces in buckets.items():
        if len(pieces) == 1:
            lines[number] = pieces[0]
        else:
            lines[number] = " ".join(_inline_pragma(p) for p in pieces)
    return "\n".join(lines[1:]) + "\n"


def _inline_pragma(piece: str) -> str:
    """`#pragma X` -> `_Pragma("X")`, for a pragma sharing its line with other code."""
    m = _PRAGMA_LINE.fullmatch(piece)
    if m is None:
        return piece.strip()
    body = m.group(1).strip().replace("\\", "\\\\").replace('"', '\\"')
    return f'_Pragma("{body}")'


def _unescape(name: str) -> str:
    return re.sub(r"\\(.)", r"\1", name)


# --------------------------------------------------------------------------- line control

# `#line` or a GNU linemarker (`# 12 "f"`), with `%:` for `#` (a digraph) and comments or
# spaces between; applied after backslash-newlines are spliced and comments blanked.
_LINE_CONTROL = re.compile(r"^[ \t]*(?:#|%:)[ \t]*(?:line\b|\d)", re.M)
_SPLICE = re.compile(r"\\[ \t]*\r?\n")


def line_control(source: str) -> str | None:
    """Evidence ("line N: ...") of the first `#line` or linemarker directive in a raw
    candidate source, or None. Such a directive can make `gcc -E` attribute the
    candidate's code to another file, which `own_lines` would then drop."""
    spliced = _SPLICE.sub("", source)
    m = _LINE_CONTROL.search(strip_c(spliced))
    if m is None:
        return None
    # each splice removed one newline: count those before the match to find its line
    starts, removed = [], 0
    for s in _SPLICE.finditer(source):
        starts.append(s.start() - removed)
        removed += s.end() - s.start()
    line_no = spliced.count("\n", 0, m.start()) + bisect_right(starts, m.start()) + 1
    line = " ".join(source.split("\n")[line_no - 1].split())
    return f"line {line_no}: {line[:80]}"
