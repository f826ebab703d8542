"""A light model of a C translation unit, for reading kernels without compiling them.

`strip_c` blanks comments and string literals (keeping `#pragma` text and `_Pragma`
strings, which are code); `Source` then finds `for` loops with their headers, steps and
nesting, matching brackets, `#define`/`enum`/`const` integer constants and typedef names.
hpcq.techniques builds its detectors on it.
"""

from __future__ import annotations

import ast
import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property

# --------------------------------------------------------------------------- stripping


def strip_c(source: str) -> str:
    """Blank comments and the contents of string and character literals, keeping length
    and newlines (offsets and line numbers stay valid). Strings on `#pragma` lines and the
    string of `_Pragma(...)` are kept. An unterminated literal or comment runs to the end
    of its line (literal) or of the text (comment)."""
    out = list(source)
    n = len(source)
    i = 0
    pragma_line = _PRAGMA_LINE.match(source[:200]) is not None
    while i < n:
        ch = source[i]
        if ch == "\n":
            pragma_line = _PRAGMA_LINE.match(source[i + 1 : i + 201]) is not None
            i += 1
        elif source.startswith("//", i):
            j = i
            while j < n and source[j] != "\n":
                if source[j] == "\\" and j + 1 < n and source[j + 1] == "\n":
                    j += 1  # a backslash-newline continues a // comment
                j += 1
            _blank(out, i, j)
            i = j
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            j = n if end < 0 else end + 2
            _blank(out, i, j)
            i = j
        elif ch in "\"'":
            j = i + 1
            while j < n and source[j] != ch and source[j] != "\n":
                j += 2 if source[j] == "\\" else 1
            j = min(j, n)
            keep = ch == '"' and (
                pragma_line or _PRAGMA_OP.search(source, max(0, i - 40), i) is not None
            )
            if not keep:
                _blank(out, i + 1, j)
            i = j + 1
        else:
            i += 1
    return "".join(out)


_PRAGMA_LINE = re.compile(r"[ \t]*#[ \t]*pragma\b")
_PRAGMA_OP = re.compile(r"\b_Pragma\s*\(\s*$")


def _blank(out: list[str], start: int, end: int) -> None:
    for k in range(start, min(end, len(out))):
        if out[k] != "\n":
            out[k] = " "


# --------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class _Loop:
    start: int  # offset of the `for` keyword
    init: str
    cond: str
    incr: str
    body_start: int
    body_end: int  # exclusive
    var: str | None  # the variable its increment steps
    step: str | None  # the step expression, "1" for ++


_FOR = re.compile(r"\bfor\s*\(")
BRACKET_OR_SEMI = re.compile(r"[;()\[\]{}]")
WORD = re.compile(r"[A-Za-z_]\w*")
_INT = re.compile(r"(0[xX][0-9a-fA-F]+|\d+)[uUlL]*")
_FLOAT_TYPES = {
    "double", "float", "__m128d", "__m256d", "__m512d", "__m128", "__m256", "__m512",
    "__m128h", "__m256h", "__m512h", "svfloat64_t", "svfloat32_t", "float64x2_t",
    "float64x1_t", "float32x4_t", "float32x2_t", "vfloat64m1_t", "vfloat64m2_t",
    "vfloat64m4_t", "vfloat64m8_t",
}  # fmt: skip


class Source:
    """The stripped text with its bracket structure, loops, constants and type names."""

    def __init__(self, source: str) -> None:
        self.raw = source
        self.text = strip_c(source)
        self.match = _match_brackets(self.text)
        self.opener = {close: open_ for open_, close in self.match.items()}
        self.constants = _constants(self.text)
        self.float_types = _FLOAT_TYPES | _typedef_names(self.text)
        self._ends: dict[int, int] = {}
        self._values: dict[str, int | None] = {}
        self.loops = self._find_loops()
        self.children = _children(self.loops)
        self._cover = _merge([(loop.body_start, loop.body_end) for loop in self.loops])
        self._cover_starts = [a for a, _ in self._cover]

    def evidence(self, offset: int) -> str:
        line_no = self.text.count("\n", 0, offset) + 1
        lines = self.raw.split("\n")
        line = " ".join(lines[line_no - 1].split()) if line_no <= len(lines) else ""
        return f"line {line_no}: {line[:80]}"

    @cached_property
    def float_arrays(self) -> dict[str, int]:
        return _float_arrays(self)

    @cached_property
    def float_scalars(self) -> set[str]:
        return _float_scalars(self)

    def value(self, expr: str) -> int | None:
        """The integer value of a constant expression, through #define/enum/const names."""
        if expr not in self._values:
            self._values[expr] = _evaluate(expr, self.constants)
        return self._values[expr]

    def _find_loops(self) -> list[_Loop]:
        loops = []
        for m in _FOR.finditer(self.text):
            open_ = m.end() - 1
            close = self.match.get(open_)
            if close is None:
                continue
            parts = split_top(self.text[open_ + 1 : close], ";")
            if len(parts) != 3:
                continue
            body_start = skip_space(self.text, close + 1)
            body_end = self.statement_end(body_start)
            init, cond, incr = parts
            var, step = _increment(incr) if len(incr) <= 200 else (None, None)
            loops.append(_Loop(m.start(), init, cond, incr, body_start, body_end, var, step))
        return loops

    def statement_end(self, pos: int, depth: int = 0) -> int:
        """The offset just past the C statement starting at `pos`."""
        if pos not in self._ends:
            self._ends[pos] = self._statement_end(pos, depth)
        return self._ends[pos]

    def _statement_end(self, pos: int, depth: int) -> int:
        text, n = self.text, len(self.text)
        pos = skip_space(text, pos)
        if pos >= n or depth > 200:
            return n
        if text[pos] == "{":
            close = self.match.get(pos)
            return n if close is None else close + 1
        word = WORD.match(text, pos)
        kw = word.group() if word else ""
        if kw in ("for", "while", "switch", "if"):
            paren = skip_space(text, word.end()) if word else pos
            close = self.match.get(paren) if paren < n and text[paren] == "(" else None
            if close is None:
                return n
            end = self.statement_end(close + 1, depth + 1)
            if kw == "if":
                after = skip_space(text, end)
                if re.match(r"else\b", text[after : after + 5]):
                    end = self.statement_end(after + 4, depth + 1)
            return end
        if kw == "do":
            end = self.statement_end(pos + 2, depth + 1)
            semi = text.find(";", end)
            return n if semi < 0 else semi + 1
        return _statement_semicolon(text, pos, self.match)

    def innermost(self) -> list[_Loop]:
        return [loop for k, loop in enumerate(self.loops) if not self.children[k]]

    def nested(self, k: int, levels: int) -> list[_Loop]:
        """Loops nested in loop number k, at most `levels` deep."""
        out, frontier = [], [k]
        for _ in range(levels):
            frontier = [c for f in frontier for c in self.children[f]]
            out += [self.loops[c] for c in frontier]
        return out

    def body(self, loop: _Loop) -> str:
        return self.text[loop.body_start : loop.body_end]

    def in_loop(self, offset: int) -> bool:
        k = bisect_right(self._cover_starts, offset) - 1
        return k >= 0 and offset < self._cover[k][1]


def _children(loops: list[_Loop]) -> list[list[int]]:
    """For each loop (sorted by start), the indices of the loops directly nested in it."""
    children: list[list[int]] = [[] for _ in loops]
    stack: list[int] = []
    for k, loop in enumerate(loops):
        while stack and loops[stack[-1]].body_end <= loop.start:
            stack.pop()
        if stack and loops[stack[-1]].body_start <= loop.start:
            children[stack[-1]].append(k)
        stack.append(k)
    return children


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _match_brackets(text: str) -> dict[int, int]:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[tuple[str, int]] = []
    match: dict[int, int] = {}
    for i, ch in enumerate(text):
        if ch in "([{":
            stack.append((ch, i))
        elif ch in pairs:
            if stack and stack[-1][0] == pairs[ch]:
                _, j = stack.pop()
                match[j] = i
            else:
                stack.clear()  # unbalanced: give up on the enclosing structure
    return match


def skip_space(text: str, pos: int) -> int:
    """Skip whitespace and whole preprocessor lines (e.g. a #pragma before a loop)."""
    n = len(text)
    while pos < n:
        if text[pos].isspace():
            pos += 1
        elif text[pos] == "#" and text.rfind("\n", 0, pos) + 1 == _line_indent_end(text, pos):
            while pos < n and text[pos] != "\n":
                pos += 2 if text[pos] == "\\" else 1
        else:
            break
    return min(pos, n)


def _line_indent_end(text: str, pos: int) -> int:
    start = text.rfind("\n", 0, pos) + 1
    while start < pos and text[start] in " \t":
        start += 1
    return start if start == pos else -1


def _statement_semicolon(text: str, pos: int, match: dict[int, int]) -> int:
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch == ";":
            return pos + 1
        if ch in "([{":
            close = match.get(pos)
            if close is None:
                return n
            pos = close + 1
        elif ch in ")]}":
            return pos  # the statement's block ended without a `;`
        else:
            pos += 1
    return n


def split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` outside brackets."""
    if not any(c in text for c in "([{"):
        return [p.strip() for p in text.split(sep)]
    parts, depth, last = [], 0, 0
    for m in re.finditer(r"[()\[\]{}" + re.escape(sep) + "]", text):
        ch = m.group()
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            parts.append(text[last : m.start()])
            last = m.end()
    parts.append(text[last:])
    return [p.strip() for p in parts]


_STEP = (
    re.compile(r"^(?:\+\+\s*(?P<a>\w+)|(?P<b>\w+)\s*\+\+)$"),
    re.compile(r"^(?P<v>\w+)\s*\+=\s*(?P<s>.+)$"),
    re.compile(r"^(?P<v>\w+)\s*=\s*(?P=v)\s*\+\s*(?P<s>.+)$"),
    re.compile(r"^(?P<v>\w+)\s*=\s*(?P<s>.+?)\s*\+\s*(?P=v)$"),
)


def _increment(incr: str) -> tuple[str | None, str | None]:
    for part in split_top(incr, ","):
        m = _STEP[0].match(part)
        if m:
            return (m.group("a") or m.group("b")), "1"
        for pattern in _STEP[1:]:
            m = pattern.match(part)
            if m:
                return m.group("v"), m.group("s").strip()
    return None, None


_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+([^\n]+)$", re.M)
_CONST = re.compile(
    r"\bconst\s+(?:unsigned\s+|signed\s+)?(?:int|long|size_t|short|ptrdiff_t)\s+(\w+)\s*=\s*"
    r"([^;,]{1,200})[;,]"
)
_ENUM = re.compile(r"\benum\b[^{;]{0,200}\{([^}]{0,4000})\}")


def _constants(text: str) -> dict[str, str]:
    consts: dict[str, str] = {}
    for m in _DEFINE.finditer(text):
        consts[m.group(1)] = m.group(2).strip()
    for m in _CONST.finditer(text):
        consts.setdefault(m.group(1), m.group(2).strip())
    for m in _ENUM.finditer(text):
        for item in m.group(1).split(","):
            name, _, value = item.partition("=")
            if value.strip() and WORD.fullmatch(name.strip()):
                consts.setdefault(name.strip(), value.strip())
    return consts


def _evaluate(expr: str, consts: dict[str, str], depth: int = 0) -> int | None:
    if depth > 8:
        return None
    expr = _INT.sub(lambda m: str(int(m.group(1), 0)), expr.strip())

    def name_value(m: re.Match[str]) -> str:
        value = None
        if m.group() in consts:
            value = _evaluate(consts[m.group()], consts, depth + 1)
        return "None" if value is None else str(value)

    expr = WORD.sub(name_value, expr)
    if "None" in expr or len(expr) > 100:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None
    return _arith(tree.body)


def _arith(node: ast.expr) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _arith(node.operand)
        return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
    if isinstance(node, ast.BinOp):
        a, b = _arith(node.left), _arith(node.right)
        if a is None or b is None or abs(a) > 1 << 40 or abs(b) > 1 << 40:
            return None
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if isinstance(node.op, ast.Div | ast.FloorDiv) and b != 0:
            return int(a / b)
        if isinstance(node.op, ast.LShift) and 0 <= b < 32:
            return a << b
    return None


_TYPEDEF = re.compile(r"\btypedef\b([^;{}]{0,500});")
_ATTRIBUTE = re.compile(r"__attribute__\s*\(\(.*?\)\)\s*|\bconst\b|\bvolatile\b")


def _typedef_names(text: str) -> set[str]:
    names = set()
    for m in _TYPEDEF.finditer(text):
        decl = m.group(1)
        if not (set(WORD.findall(decl)) & (_FLOAT_TYPES | {"vector_size", "ext_vector_type"})):
            continue
        words = WORD.findall(_ATTRIBUTE.sub(" ", decl))
        if words:
            names.add(words[-1])
    return names


def words(text: str) -> set[str]:
    return set(WORD.findall(text))


def mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}\b", text) is not None


_DECL_QUALIFIERS = {"const", "register", "static", "volatile", "restrict", "__restrict", "long"}


def _declarators(src: Source) -> list[tuple[str, str]]:
    """(name, rest) of declarators after a floating-point type word; rest holds any `[N]`."""
    text, out = src.text, []
    type_re = "|".join(re.escape(t) for t in sorted(src.float_types, key=len, reverse=True))
    for m in re.finditer(rf"(?<![\w.>])(?:{type_re})\b(?!\s*[)*])", text):
        following = WORD.match(text, skip_space(text, m.end()))
        if following and following.group() in src.float_types:
            continue  # `long double double x`: the last type word handles it
        end = _declaration_end(text, m.end(), src.match, m.end() + 2000)
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


def _float_scalars(src: Source) -> set[str]:
    return {name for name, rest in _declarators(src) if not rest.strip()}


def _float_arrays(src: Source) -> dict[str, int]:
    """Local floating-point/vector arrays of register size: name -> element count."""
    arrays = {}
    for name, rest in _declarators(src):
        dims = re.findall(r"\[([^\]]*)\]", rest)
        if not dims:
            continue
        size = 1
        for dim in dims:
            value = src.value(dim)
            if value is None:
                break
            size *= value
        else:
            if 4 <= size <= 256:
                arrays[name] = size
    return arrays
