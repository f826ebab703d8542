"""Packing: a copy of input elements into another buffer, found per function.

The rule (the packing entry of hpcq.eval.techniques' docstring): a store inside a loop whose
value reads elements of exactly one input, whatever arithmetic surrounds them, and not
its own destination, or a `memcpy`-like call from an input anywhere. Stores to dgemm's
output are not copies, including through a helper's parameter that some call passes
the output to. "Reads" is decided on the text of the value:

- a temporary holding elements of inputs (`double b = 2.0 * B[k*N + j];`) reads those;
- a pointer to an input (a parameter, or a variable assigned pointer arithmetic on one)
  is read when the value is more than pointer arithmetic: it holds a subscript, a unary
  `*`, or a call (`B[..]`, `*(const v4d *)(B + j)`, `_mm256_loadu_pd(B + j)`,
  `helper(B + j)`). `rows[i] = B + i * N` stores a pointer and reads nothing.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from hpcq.eval.csource.declarations import ASSIGN, float_arrays
from hpcq.eval.csource.model import CALL, WORD, Source, split_top, words

# an `=` after what can end a store's target: `]`, `)`, `++`, `--` or `*name`
_STORE_EQ = re.compile(r"(?:[\])]|\+\+|--|\*\s*\w+)\s*(=)(?!=)")
_STORE_CALL = re.compile(r"store|stream|scatter|(?:^|[_v])st\d", re.I)
_MEMCPY = re.compile(r"(?:__builtin_(?:__)?)?(?:memcpy|memmove|mempcpy)(?:_chk)?")
_CONST_PTR_PARAM = re.compile(
    r"[(,]\s*(?:const\s+(?:double|float)|(?:double|float)\s+const)\s*\*\s*"
    r"(?:restrict\s+|__restrict\w*\s+)?(\w+)"
)
# a `*` is a dereference when nothing that ends an operand comes before it
_UNARY_STAR = re.compile(r"(?:^|[-+*/%=(,?:\[&|^!~<>{;])\s*\*")
_NOT_DEST = {
    "const", "volatile", "restrict", "__restrict", "__restrict__", "double", "float", "int",
    "long", "short", "char", "unsigned", "signed", "size_t", "void", "struct", "union",
    "else", "return",
}  # fmt: skip
_DECL = (_NOT_DEST | {"static", "register", "extern", "_Alignas"}) - {"else", "return"}
_HEADER_KEYWORD = re.compile(r"\b(?:for|while|if|switch)\s*$")
_LVALUE_CHARS = 300


def first_copy(src: Source) -> int | None:
    """The offset of the first copy of input elements into a buffer, or None."""
    functions = _functions(src)
    scopes = _scopes(src, functions)
    hits = [at for scope in scopes if (at := _packing_in(scope)) is not None]
    return min(hits, default=None)


def _scopes(src: Source, functions: list[tuple[str, str, int, int]]) -> list[_Scope]:
    """A scope per function. A helper's pointer parameter is an output where some call
    passes it dgemm's output (`axpy(a, B + k * N, C + i * N)`), found in two rounds."""
    params = {name: [_last_word(p) for p in text.split(",")] for name, text, _, _ in functions}
    outputs: dict[str, set[str]] = {}
    scopes: list[_Scope] = []
    for _ in range(2):
        before = sum(map(len, outputs.values()))
        scopes = [_Scope(src, *f, outputs.get(f[0], set())) for f in functions]
        for scope in scopes:
            for m in CALL.finditer(src.text, scope.start, scope.end):
                callee = params.get(m.group(1))
                close = src.match.get(m.end() - 1)
                if callee is None or close is None or close - m.end() > VALUE_CHARS:
                    continue
                args = _arguments(src.text, m.end(), close)
                for param, (a, b) in zip(callee, args, strict=False):
                    if words(src.text[a:b]) & scope.outputs:
                        outputs.setdefault(m.group(1), set()).add(param)
        if sum(map(len, outputs.values())) == before:
            break
    return scopes


def _last_word(text: str) -> str:
    m = _LAST_WORD.search(text)
    return m.group(1) if m else ""


_LAST_WORD = re.compile(r"([A-Za-z_]\w*)\W*$")


def _functions(src: Source) -> list[tuple[str, str, int, int]]:
    """(name, parameter text, body start, body end) of each function definition; the whole
    text as one scope named dgemm when there is none (a fragment)."""
    text, found = src.text, []
    pos = 0
    while (brace := text.find("{", pos)) >= 0:
        close = src.match.get(brace, len(text) - 1)
        head_end = brace - 1
        while head_end >= 0 and text[head_end].isspace():
            head_end -= 1
        opening = src.opener.get(head_end) if head_end >= 0 and text[head_end] == ")" else None
        if opening is not None:
            name = re.search(r"(\w+)\s*$", text[max(0, opening - 200) : opening])
            params = text[opening + 1 : head_end]
            found.append((name.group(1) if name else "", params, brace, close))
        pos = close + 1
    return found or [("dgemm", "", 0, len(text))]


class _Scope:
    """One function's inputs (pointer name -> the input it points into), outputs and
    temporaries (name -> the inputs whose elements it holds)."""

    def __init__(
        self, src: Source, name: str, params: str, start: int, end: int, outputs: set[str]
    ) -> None:
        self.src, self.start, self.end = src, start, end
        names = [_last_word(p) for p in params.split(",")]
        inputs, self.outputs = ({"A", "B"}, {"C"}) if not params else (set(), set(outputs))
        if name == "dgemm" and len(names) >= 6:
            inputs, self.outputs = set(names[3:5]), {names[5]}
        inputs |= {m.group(1) for m in _CONST_PTR_PARAM.finditer("(" + params)}
        self.roots = {n: n for n in inputs if n}
        self.temps: dict[str, set[str]] = {}
        # Only assignments whose value mentions an input, output or temporary matter: find
        # those from the mentions (the nearest assignment before each), not by reading all.
        assigned = [(m.group(1), m.end()) for m in ASSIGN.finditer(src.text, start, end)]
        value_starts = [at for _, at in assigned]
        mentioned = [(m.start(), m.group()) for m in WORD.finditer(src.text, start, end)]
        new, seen = set(self.roots) | self.outputs, set()
        for _ in range(2):  # then those that mention a pointer or temporary just found
            todo = {bisect_right(value_starts, at) - 1 for at, w in mentioned if w in new}
            seen |= new
            for k in sorted(todo - {-1}):
                self._assigned(*assigned[k])
            new = (set(self.roots) | set(self.temps) | self.outputs) - seen

    def _assigned(self, target: str, at: int) -> None:
        if target in self.roots or target in self.outputs:
            return
        end = _expression_end(self.src, at, self.end)
        if end is None:
            return
        value = self.src.text[at:end]
        names = WORD.findall(value)
        if not any(n in self.roots or n in self.temps or n in self.outputs for n in names):
            return
        if "alloc" in value:
            return
        if self.outputs.intersection(names):
            self.outputs.add(target)
        elif _pointer_arithmetic(value):
            pointed = [self.roots[w] for w in names if w in self.roots]
            if pointed:
                self.roots[target] = pointed[0]
        else:
            read = self.reads(at, end)
            if read:
                self.temps.setdefault(target, set()).update(read)

    def reads(self, a: int, b: int) -> set[str]:
        """The inputs whose elements text[a:b] (an expression) reads."""
        value = self.src.text[a:b]
        found: set[str] = set()
        arithmetic = _pointer_arithmetic(value)
        for w in WORD.findall(value):
            if w in self.temps:
                found |= self.temps[w]
            elif w in self.roots and not arithmetic:
                found.add(self.roots[w])
        return found


def _pointer_arithmetic(value: str) -> bool:
    """No subscript, no dereference, no call: at most pointer arithmetic."""
    return "[" not in value and not _UNARY_STAR.search(value) and not CALL.search(value)


def _packing_in(scope: _Scope) -> int | None:
    src, start, end = scope.src, scope.start, scope.end
    if not scope.roots:
        return None
    small = set(float_arrays(src, 1, 16))
    excluded = set(scope.roots) | scope.outputs | small
    hits = []
    for m in _STORE_EQ.finditer(src.text, start, end):
        if not src.in_loop(m.start(1)):
            continue
        dest = _store_destination(src, m.start(1), start)
        if dest is None or dest in excluded:
            continue
        value_end = _expression_end(src, m.end(), end)
        if value_end is None or dest in words(src.text[m.end() : value_end]):
            continue  # `t[j] = t[j] + a * x[j]` updates its buffer: not a copy
        if len(scope.reads(m.end(), value_end)) == 1:
            hits.append(m.start(1))
    for m in CALL.finditer(src.text, start, end):
        if _copy_call(scope, m, excluded):
            hits.append(m.start())
    return min(hits, default=None)


def _store_destination(src: Source, eq: int, lo: int) -> str | None:
    """The buffer an assignment ending at offset `eq` stores into (`Bp` of `Bp[i] = ...`,
    `*dst++ = ...`, `*(v4d *)(Bp + j) = ...`), or None when it is not a store to memory
    (an assignment to a variable, or a declaration)."""
    text = src.text
    pos, limit = eq - 1, max(lo, eq - _LVALUE_CHARS)
    while pos >= limit and text[pos] in " \t\n":
        pos -= 1
    if pos >= limit and (text[pos].isalnum() or text[pos] == "_"):
        # `name = ...` assigns a variable unless it is `*name = ...`
        k = pos
        while k >= limit and (text[k].isalnum() or text[k] == "_"):
            k -= 1
        if not text[limit : k + 1].rstrip().endswith("*"):
            return None
    while pos >= limit:
        ch = text[pos]
        if ch in ")]":
            opening = src.opener.get(pos)
            if opening is None:
                return None
            if ch == ")" and _HEADER_KEYWORD.search(text, max(0, opening - 10), opening):
                break  # the header of the loop or `if` the store is the body of
            pos = opening - 1
        elif ch in ";{},=?:(":
            break
        else:
            pos -= 1
    if pos < limit:
        return None
    lines = [ln for ln in text[pos + 1 : eq].split("\n") if not ln.lstrip().startswith("#")]
    lvalue = " ".join(lines).strip()
    if not (lvalue.startswith("*") or "[" in lvalue):
        return None
    names = WORD.findall(lvalue)
    if not lvalue.startswith(("*", "(")) and names and names[0] in src.float_types | _DECL:
        return None  # a declaration: `double buf[64] = {0}`, `static double t[8] = ...`
    k = 0
    while k < len(names) and (names[k] in _NOT_DEST or names[k] in src.float_types):
        k += 2 if names[k] in ("struct", "union") else 1
    return names[k] if k < len(names) else None


def _expression_end(src: Source, pos: int, end: int) -> int | None:
    """The end of the value starting at `pos`: a `;`, `,` or `=` outside brackets, or a
    closing bracket that was not opened in it; None when that is more than VALUE_CHARS
    on (no copy is that long, and the bound keeps the work linear)."""
    text, limit = src.text, min(end, pos + VALUE_CHARS)
    m = _EXPRESSION_STOP.search(text, pos, limit)
    if m is not None and m.group() not in "([{":
        return m.start()  # the common case: no brackets
    while pos < limit:
        m = _EXPRESSION_STOP.search(text, pos, limit)
        if m is None:
            break
        if m.group() in "([{":
            close = src.match.get(m.start())
            if close is None or close >= limit:
                return None
            pos = close + 1
        else:
            return m.start()
    return limit if limit == end else None


_EXPRESSION_STOP = re.compile(r"[;,()\[\]{}]|(?<![=!<>+\-*/%&|^])=(?!=)")
VALUE_CHARS = 1000


def _copy_call(scope: _Scope, m: re.Match[str], excluded: set[str]) -> bool:
    """Whether the call at `m` copies input elements into a buffer: a store call whose
    value reads exactly one input, or a memcpy-like call from an input."""
    src, call = scope.src, m.group(1)
    is_memcpy = _MEMCPY.fullmatch(call) is not None or call == "bcopy"
    if not (is_memcpy or _STORE_CALL.search(call)):
        return False
    close = src.match.get(m.end() - 1)
    if close is None or close - m.end() > VALUE_CHARS:
        return False
    args = _arguments(src.text, m.end(), close)
    if len(args) < 2:
        return False
    if call == "bcopy":
        args = [args[1], args[0], *args[2:]]
    elif call.startswith("sv") and len(args) >= 3:
        args = args[1:]  # SVE stores take the predicate first
    dest_text = src.text[args[0][0] : args[0][1]]
    dest = (WORD.findall(dest_text) or [""])[0]
    if dest in excluded or re.fullmatch(r"\s*&\s*\w+\s*", dest_text):
        return False  # `memcpy(&v, b + j, 32)` is an unaligned load into one variable
    if is_memcpy:
        return bool(words(src.text[args[1][0] : args[1][1]]) & set(scope.roots))
    read: set[str] = set()
    for a, b in args[1:]:
        if dest in words(src.text[a:b]):
            return False  # stores an update of its own destination
        read |= scope.reads(a, b)
    return len(read) == 1


def _arguments(text: str, start: int, close: int) -> list[tuple[int, int]]:
    """(start, end) offsets of the top-level arguments in text[start:close]."""
    spans, pos = [], start
    for part in split_top(text[start:close], ","):
        at = text.find(part, pos, close) if part else pos
        at = pos if at < 0 else at
        spans.append((at, at + len(part)))
        pos = at + len(part)
    return spans
