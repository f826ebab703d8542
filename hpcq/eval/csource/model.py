"""A light model of a C translation unit, for reading kernels without compiling them.

`Source` takes the text with comments and strings blanked (hpcq.eval.csource.strip) and finds its
loops (`for`, `while`, `do ... while`, each with its init, condition, stepped variable
and step), their nesting, matching brackets, `#define`/`enum`/`const` integer constants
(evaluated by hpcq.eval.csource.constexpr) and typedef names and sizes. It reads raw source and the
candidate's own lines of `gcc -E` output alike. hpcq.eval.techniques builds its detectors on
it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache

from hpcq.eval.csource.constexpr import evaluate
from hpcq.eval.csource.strip import match_end, strip_c

# --------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class Loop:
    """A `for`, `while` or `do ... while` loop. For the last two (and a `for` without an
    increment), the increment is the last top-level statement of the body that steps a
    variable of the condition, and the init the last assignment to that variable in the
    400 characters before the loop: `jj = 0; while (jj < N) { ...; jj += BS; }` is the
    loop `for (jj = 0; jj < N; jj += BS)`."""

    start: int  # offset of the `for`, `while` or `do` keyword
    init: str
    cond: str
    incr: str
    body_start: int
    body_end: int  # exclusive
    var: str | None  # the variable its increment steps
    step: str | None  # the step expression, "1" for ++ (the magnitude for -= and --)


_LOOP_KEYWORD = re.compile(r"\b(for|while|do)\b")
BRACKET_OR_SEMI = re.compile(r"[;()\[\]{}]")
WORD = re.compile(r"[A-Za-z_]\w*")
CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
"""A call (or a function-like macro use): group 1 is the name."""
FLOAT_TYPES = {
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
        self.type_sizes = _typedef_sizes(self.text, self.constants)
        self.float_types = FLOAT_TYPES | _typedef_names(self.text)
        self._ends: dict[int, int] = {}
        self._values: dict[str, int | None] = {}
        self._parents: dict[int, int] | None = None
        self.memo: dict[
            str, object
        ] = {}  # analyses computed once per source (hpcq.eval.csource.declarations)
        self.loops = self._find_loops()
        self.children = _children(self.loops)
        self._cover = _merge([(loop.body_start, loop.body_end) for loop in self.loops])
        self._cover_starts = [a for a, _ in self._cover]

    def evidence(self, offset: int) -> str:
        line_no = self.text.count("\n", 0, offset) + 1
        lines = self.raw.split("\n")
        line = " ".join(lines[line_no - 1].split()) if line_no <= len(lines) else ""
        return f"line {line_no}: {line[:80]}"

    def value(self, expr: str) -> int | None:
        """The integer value of a constant expression, through #define/enum/const names."""
        if expr not in self._values:
            self._values[expr] = evaluate(expr, self.constants, self.type_sizes)
        return self._values[expr]

    def _find_loops(self) -> list[Loop]:
        loops, do_whiles = [], set()
        for m in _LOOP_KEYWORD.finditer(self.text):
            if m.group() == "do":
                loop, cond_at = self._do_loop(m.start())
                if cond_at >= 0:
                    do_whiles.add(cond_at)
                if loop is not None:
                    loops.append(loop)
                continue
            if m.start() in do_whiles:
                continue
            open_ = skip_space(self.text, m.end())
            close = self.match.get(open_) if self.text[open_ : open_ + 1] == "(" else None
            if close is None:
                continue
            header = self.text[open_ + 1 : close]
            parts = split_top(header, ";") if m.group() == "for" else ["", header, ""]
            if len(parts) != 3:
                continue
            body_start = skip_space(self.text, close + 1)
            if m.group() == "while" and self.text[body_start : body_start + 1] == ";":
                continue  # the tail of a do-while whose `do` was not understood
            body_end = self.statement_end(body_start)
            if m.group() == "while" and self.value(header) == 0:
                continue  # `while (0)`
            loops.append(self._loop(m.start(), parts, body_start, body_end))
        return sorted(loops, key=lambda loop: loop.start)

    def _do_loop(self, start: int) -> tuple[Loop | None, int]:
        """`do body while (cond);` -> the loop and the offset of its `while`."""
        body_start = skip_space(self.text, start + 2)
        body_end = self.statement_end(body_start)
        at = skip_space(self.text, body_end)
        word = WORD.match(self.text, at)
        if word is None or word.group() != "while":
            return None, -1
        open_ = skip_space(self.text, word.end())
        close = self.match.get(open_)
        if close is None:
            return None, -1
        cond = self.text[open_ + 1 : close]
        if self.value(cond) == 0:
            return None, at  # `do { ... } while (0)`: a statement, not a loop
        return self._loop(start, ["", cond, ""], body_start, body_end), at

    def _loop(self, start: int, parts: list[str], body_start: int, body_end: int) -> Loop:
        init, cond, incr = parts
        var, step = _increment(incr) if incr.strip() and len(incr) <= 200 else (None, None)
        if not incr.strip():  # while, do-while, or `for (...; ...; )`
            incr, var, step = self._body_increment(body_start, body_end, cond)
            if var is not None and not init.strip():
                init = _last_assignment(self.text, var, max(0, start - 400), start)
        return Loop(start, init, cond, incr, body_start, body_end, var, step)

    def _body_increment(
        self, body_start: int, body_end: int, cond: str
    ) -> tuple[str, str | None, str | None]:
        """The last top-level statement of a body that steps a variable of `cond`, with
        that variable and the step."""
        found: tuple[str, str | None, str | None] = ("", None, None)
        for a, b in self._statements(body_start, body_end):
            if b - a > 200:
                continue
            stmt = self.text[a:b].strip().rstrip(";").strip()
            if "=" not in stmt and "++" not in stmt and "--" not in stmt:
                continue
            var, step = _increment(stmt)
            if var is not None and mentions(cond, var):
                found = (stmt, var, step)
        return found

    def _statements(self, body_start: int, body_end: int) -> list[tuple[int, int]]:
        """The top-level statements of a body: those of a `{...}` block, or the body."""
        if self.text[body_start : body_start + 1] != "{":
            return [(body_start, body_end)]
        out, pos, end = [], body_start + 1, body_end - 1
        while (pos := skip_space(self.text, pos)) < end:
            stop = min(self.statement_end(pos), end)
            out.append((pos, stop))
            pos = max(stop, pos + 1)
        return out

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

    def innermost(self) -> list[Loop]:
        return [loop for k, loop in enumerate(self.loops) if not self.children[k]]

    def nested(self, k: int, levels: int) -> list[Loop]:
        """Loops nested in loop number k, at most `levels` deep."""
        out, frontier = [], [k]
        for _ in range(levels):
            frontier = [c for f in frontier for c in self.children[f]]
            out += [self.loops[c] for c in frontier]
        return out

    def enclosing(self, k: int, levels: int) -> int:
        """The offset where the body of loop k's ancestor `levels` up (or the outermost one
        below that) begins."""
        if self._parents is None:
            self._parents = {c: p for p, cs in enumerate(self.children) for c in cs}
        for _ in range(levels):
            if k not in self._parents:
                break
            k = self._parents[k]
        return self.loops[k].body_start

    def body(self, loop: Loop) -> str:
        return self.text[loop.body_start : loop.body_end]

    def in_loop(self, offset: int) -> bool:
        k = bisect_right(self._cover_starts, offset) - 1
        return k >= 0 and offset < self._cover[k][1]


def _children(loops: list[Loop]) -> list[list[int]]:
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


_PRAGMA_CALL = re.compile(r'_Pragma\s*\(\s*"(?:[^"\\\n]|\\.)*"\s*\)')


_SPACE = re.compile(r"\s*")
_DIRECTIVE_REST = re.compile(r"(?:[^\n\\]|\\[\s\S])*")


def skip_space(text: str, pos: int) -> int:
    """Skip whitespace, whole preprocessor lines (e.g. a #pragma before a loop) and
    `_Pragma("...")` operators."""
    n = len(text)
    while True:
        pos = match_end(_SPACE, text, pos)
        if pos >= n:
            return n
        if text[pos] == "_" and (m := _PRAGMA_CALL.match(text, pos)) is not None:
            pos = m.end()
        elif text[pos] == "#" and text.rfind("\n", 0, pos) + 1 == _line_indent_end(text, pos):
            pos = match_end(_DIRECTIVE_REST, text, pos)
        else:
            return pos


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
    re.compile(r"^(?:(?:\+\+|--)\s*(?P<a>\w+)|(?P<b>\w+)\s*(?:\+\+|--))$"),
    re.compile(r"^(?P<v>\w+)\s*[-+]=\s*(?P<s>.+)$"),
    re.compile(r"^(?P<v>\w+)\s*=\s*(?P=v)\s*[-+]\s*(?P<s>.+)$"),
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


def _last_assignment(text: str, var: str, start: int, end: int) -> str:
    """`var = expr` of the last statement assigning `var` in text[start:end], or ""."""
    found = ""
    for m in _assignment_of(var).finditer(text, start, end):
        found = f"{var} = {m.group(1).strip()}"
    return found


@lru_cache(maxsize=4096)
def _assignment_of(var: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.>]){re.escape(var)}\s*=(?!=)([^;{{}}]{{0,200}});")


_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+([^\n]+)$", re.M)
_CONST = re.compile(
    r"\bconst\s+(?:unsigned\s+|signed\s+)?(?:(?:int|long|size_t|short|ptrdiff_t)\s+)+"
    r"(\w+\s*=[^;{}]{1,400});"
)
_ENUM = re.compile(r"\benum\b[^{;]{0,200}\{([^}]{0,4000})\}")


def _constants(text: str) -> dict[str, str]:
    consts: dict[str, str] = {}
    for m in _DEFINE.finditer(text):
        consts[m.group(1)] = m.group(2).strip()
    for m in _CONST.finditer(text):  # `const int mr = 4, nr = 2 * mr;`
        for item in split_top(m.group(1), ","):
            name, _, value = item.partition("=")
            if value.strip() and WORD.fullmatch(name.strip()):
                consts.setdefault(name.strip(), value.strip())
    for m in _ENUM.finditer(text):
        for item in m.group(1).split(","):
            name, _, value = item.partition("=")
            if value.strip() and WORD.fullmatch(name.strip()):
                consts.setdefault(name.strip(), value.strip())
    return consts


_TYPEDEF = re.compile(r"\btypedef\b([^;{}]{0,500});")
_ATTRIBUTE = re.compile(r"__attribute__\s*\(\(.*?\)\)\s*|\bconst\b|\bvolatile\b")


_VECTOR_ATTRIBUTE = re.compile(
    r"\b(?:__)?(?:vector_size|ext_vector_type)(?:__)?\s*\(([^()]{1,200})\)"
    r"|\b(?:__)?mode(?:__)?\s*\(\s*(?:__)?V\d+[A-Z]+(?:__)?\s*\)"
)


def _typedefs(text: str) -> list[tuple[str, str]]:
    """(name, declaration) of each typedef, attributes included in the declaration."""
    out = []
    for m in _TYPEDEF.finditer(text):
        words = WORD.findall(_ATTRIBUTE.sub(" ", m.group(1)))
        if words:
            out.append((words[-1], m.group(1)))
    return out


def _typedef_names(text: str) -> set[str]:
    """Typedef names of floating-point or vector types."""
    return {
        name
        for name, decl in _typedefs(text)
        if words(decl) & FLOAT_TYPES or _VECTOR_ATTRIBUTE.search(decl)
    }


def _typedef_sizes(text: str, consts: dict[str, str]) -> dict[str, int]:
    """Sizes in bytes of typedef names, for `sizeof`: a vector type by its vector_size, a
    basic type by the LP64 data model (`typedef double real;` is 8)."""
    sizes: dict[str, int] = {}
    for name, decl in _typedefs(text):
        vector = _VECTOR_ATTRIBUTE.search(decl)
        if vector is not None and vector.group(1):
            size = evaluate(vector.group(1), consts)
        else:
            base = " ".join(w for w in WORD.findall(_ATTRIBUTE.sub(" ", decl))[:-1])
            size = evaluate(f"sizeof({base})", consts, sizes) if base else None
        if size is not None:
            sizes[name] = size
    return sizes


def words(text: str) -> set[str]:
    return set(WORD.findall(text))


def mentions(text: str, name: str) -> bool:
    return _mention(name).search(text) is not None


@lru_cache(maxsize=4096)
def _mention(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.]){re.escape(name)}\b")
