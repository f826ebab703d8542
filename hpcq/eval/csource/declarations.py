"""Declarations and assignments in a C source: the floating-point accumulators and local
arrays that hpcq.eval.techniques counts (register blocking) or excludes (packing), and the
`name = value` statements both read."""

from __future__ import annotations

import re
from typing import cast

from hpcq.eval.csource.model import BRACKET_OR_SEMI, WORD, Source, skip_space, split_top

_DECL_QUALIFIERS = {"const", "register", "static", "volatile", "restrict", "__restrict", "long"}


def _declarators(src: Source) -> list[tuple[str, str]]:
    """(name, rest) of declarators after a floating-point type word; rest holds any `[N]`
    (computed once per source)."""
    if "declarators" not in src.memo:
        src.memo["declarators"] = _find_declarators(src)
    return cast(list[tuple[str, str]], src.memo["declarators"])


def _find_declarators(src: Source) -> list[tuple[str, str]]:
    text, out = src.text, []
    type_re = "|".join(re.escape(t) for t in sorted(src.float_types, key=len, reverse=True))
    last_end = 0
    for m in re.finditer(rf"(?<![\w.>])(?:{type_re})\b(?!\s*[)*])", text):
        if m.start() < last_end:
            continue  # inside the previous declaration (a parameter list): keeps it linear
        following = WORD.match(text, skip_space(text, m.end()))
        if following and following.group() in src.float_types:
            continue  # `long double double x`: the last type word handles it
        end = last_end = _declaration_end(text, m.end(), src.match, m.end() + 2000)
        for part in split_top(text[m.end() : end], ","):
            words = part.split()
            while words and words[0] in _DECL_QUALIFIERS | src.float_types:
                words.pop(0)
            decl = " ".join(words)
            name = WORD.match(decl)
            if name is None or decl[name.end() :].lstrip().startswith("("):
                continue
            out.append((name.group(), decl[name.end() :].split("=")[0]))
    return out


def _declaration_end(text: str, pos: int, match: dict[int, int], limit: int) -> int:
    """End of a declarator list: `;`, an unmatched `)` (a parameter list) or a `{` that
    does not follow `=` or `,` (a function body); at most `limit`."""
    limit = min(limit, len(text))
    while (m := BRACKET_OR_SEMI.search(text, pos, limit)) is not None:
        pos, ch = m.start(), m.group()
        if ch in ";)]}":
            return pos
        if ch == "{" and text[max(0, pos - 200) : pos].rstrip()[-1:] not in ("=", ","):
            return pos
        close = match.get(pos)
        if close is None:
            return limit
        pos = close + 1
    return limit


def float_scalars(src: Source) -> set[str]:
    return {name for name, rest in _declarators(src) if not rest.strip()}


def float_arrays(src: Source, smallest: int = 4, largest: int = 256) -> dict[str, int]:
    """Floating-point/vector arrays of a constant size in [smallest, largest] (register
    size by default): name -> element count."""
    arrays = {}
    for name, rest in _declarators(src):
        dims = re.findall(r"\[([^\[\]]*)\]", rest)
        if not dims:
            continue
        size = 1
        for dim in dims:
            value = src.value(dim)
            if value is None:
                break
            size *= value
        else:
            if smallest <= size <= largest:
                arrays[name] = size
    return arrays


ASSIGN = re.compile(r"(?<![\w.>])(\w+)\s*=(?!=)")
STATEMENT_CHARS = 4000  # longest right-hand side looked at


def assignments(
    pattern: re.Pattern[str], text: str, start: int = 0, end: int | None = None, stop: str = ";"
) -> list[tuple[re.Match[str], str]]:
    """Matches of `pattern` (ending at an `=`) with the text after it up to `stop`. Finding
    the end with str.find keeps the scan linear on text without semicolons."""
    end = len(text) if end is None else end
    out = []
    for m in pattern.finditer(text, start, end):
        limit = min(end, m.end() + STATEMENT_CHARS)
        ends = [i for i in (text.find(c, m.end(), limit) for c in stop) if i >= 0]
        if ends:
            out.append((m, text[m.end() : min(ends)]))
    return out
