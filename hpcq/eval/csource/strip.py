"""Comments and string literals blanked out of C source, offsets kept.

Detection reads code, not prose: a technique named in a comment or a string is not used.
Some strings are code, though, and are kept (see `strip_c`).
"""

from __future__ import annotations

import re
from bisect import bisect_right

_LEXEME = re.compile(r"//|/\*|[\"']|\b(?:__asm__|__asm|asm)\b")
_LEXEME_ASM = re.compile(r"//|/\*|[\"'()]")
ASM_OPEN = re.compile(
    r"(?:__asm__|__asm|asm)\b(?:\s|\b(?:volatile|__volatile__|__volatile|goto|inline"
    r"|__inline__|__inline)\b)*\("
)
_LINE_COMMENT_END = re.compile(r"(?:[^\n\\]|\\[\s\S])*")
_LITERAL_END = {q: re.compile(rf"(?:[^{q}\\\n]|\\[\s\S])*({q}?)") for q in "\"'"}
_PRAGMA_LINE = re.compile(r"^[ \t]*#[ \t]*pragma\b[^\n]*", re.M)
# strings that are code: `_Pragma("...")` and `optimize("O3", "unroll-loops")` (the
# function attribute), looked for just before the string
_PRAGMA_OP = re.compile(r"\b(?:_Pragma|(?:__)?optimize(?:__)?)\s*\($")
_STRINGS_BEFORE = re.compile(r'(?:\s*"[^"\n]{0,100}"\s*,){0,8}\s*')


def strip_c(source: str) -> str:
    """Blank comments and the contents of string and character literals, keeping length
    and newlines (offsets and line numbers stay valid). Strings that are code are kept:
    on `#pragma` lines, the string of `_Pragma(...)`, the strings of an `optimize(...)`
    attribute, and every string inside the parentheses of an `asm`/`__asm__` statement
    or label (instructions, constraints, clobbers, register names). An unterminated
    literal or comment runs to the end of its line (literal) or of the text (comment)."""
    pragmas = [(m.start(), m.end()) for m in _PRAGMA_LINE.finditer(source)]
    pragma_starts = [a for a, _ in pragmas]
    blanks: list[tuple[int, int]] = []
    n, i, asm_depth = len(source), 0, 0
    while (m := (_LEXEME_ASM if asm_depth else _LEXEME).search(source, i)) is not None:
        i, tok = m.start(), m.group()
        if tok == "//":
            j = match_end(_LINE_COMMENT_END, source, i)
            blanks.append((i, j))
        elif tok == "/*":
            end = source.find("*/", i + 2)
            j = n if end < 0 else end + 2
            blanks.append((i, j))
        elif tok in "\"'":
            lit = _LITERAL_END[tok].match(source, i + 1)
            j, closed = (lit.end(), bool(lit.group(1))) if lit else (i + 1, False)
            k = bisect_right(pragma_starts, i) - 1
            keep = tok == '"' and (
                asm_depth > 0 or (k >= 0 and i < pragmas[k][1]) or _code_string(source, i)
            )
            if not keep:
                blanks.append((i + 1, j - 1 if closed else j))
        elif tok in "()":
            asm_depth += 1 if tok == "(" else -1
            j = i + 1
        else:  # the asm keyword
            opening = ASM_OPEN.match(source, i)
            j = opening.end() if opening else m.end()
            asm_depth = 1 if opening else 0
        i = max(j, i + 1)
    return _apply_blanks(source, blanks)


def _code_string(source: str, at: int) -> bool:
    """Whether the string at `at` is an argument of `_Pragma(...)` or `optimize(...)`."""
    paren = source.rfind("(", max(0, at - 300), at)
    return (
        paren >= 0
        and _STRINGS_BEFORE.fullmatch(source, paren + 1, at) is not None
        and _PRAGMA_OP.search(source, max(0, paren - 30), paren + 1) is not None
    )


def match_end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where `pattern` (one that can match empty) stops matching from `pos`."""
    m = pattern.match(text, pos)
    return pos if m is None else m.end()


def _apply_blanks(source: str, blanks: list[tuple[int, int]]) -> str:
    pieces, last = [], 0
    for a, b in blanks:
        if b <= a:
            continue
        pieces.append(source[last:a])
        pieces.append(_NOT_NEWLINE.sub(" ", source[a:b]))
        last = b
    pieces.append(source[last:])
    return "".join(pieces)


_NOT_NEWLINE = re.compile(r"[^\n]")
