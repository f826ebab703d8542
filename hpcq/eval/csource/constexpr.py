"""Integer constant expressions of C, evaluated without a compiler.

Enough for the sizes and steps a kernel writes: integer literals (decimal, hex, octal,
binary, with u/l suffixes), names resolved through a table of constants (#define, enum,
`const int`), casts to integer types (ignored), `sizeof` and `_Alignof` of basic types,
unary `- + ~ !`, the binary operators of C with C's precedence (integer division
truncating toward zero), comparisons, `&& ||` and `?:`.

`sizeof` assumes the LP64 data model of x86_64 and AArch64 Linux: char 1, short 2, int 4,
long 8, long long 8, pointers 8, size_t 8, float 4, double 8, long double 16, the x86
vector types (__m128* 16, __m256* 32, __m512* 64) and Arm NEON types by their width;
`sizeof(T[N])` multiplies, `sizeof(double *)` is 8, `sizeof 1.0` is 8 and `sizeof 1.0f`
4. `sizeof` of a variable or of an unknown type has no value here.

Bounded: the expression is at most MAX_CHARS characters after names are looked up (at
most 8 levels deep), intermediate values beyond 2**62 have no value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_CHARS = 400
_LIMIT = 1 << 62

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<float>(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?[fFlL]?|\d+[eE][-+]?\d+[fFlL]?)"
    r"|(?P<int>0[xX][0-9a-fA-F]+|0[bB][01]+|\d+)(?P<suffix>[uUlL]*)\b"
    r"|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op><<|>>|<=|>=|==|!=|&&|\|\||[-+*/%()<>!~&|^?:\[\]])"
    r")"
)

_SIZES: dict[str, int] = {
    "char": 1, "_Bool": 1, "bool": 1, "short": 2, "int": 4, "long": 8, "float": 4,
    "double": 8, "size_t": 8, "ssize_t": 8, "ptrdiff_t": 8, "intptr_t": 8, "uintptr_t": 8,
    "int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4,
    "int64_t": 8, "uint64_t": 8, "_Float32": 4, "_Float64": 8, "_Float128": 16,
    "__int128": 16, "__m64": 8,
    "__m128": 16, "__m128d": 16, "__m128i": 16, "__m128h": 16,
    "__m256": 32, "__m256d": 32, "__m256i": 32, "__m256h": 32,
    "__m512": 64, "__m512d": 64, "__m512i": 64, "__m512h": 64,
    "float64x1_t": 8, "float64x2_t": 16, "float32x2_t": 8, "float32x4_t": 16,
}  # fmt: skip
_QUALIFIERS = {"const", "volatile", "restrict", "__restrict", "__restrict__", "signed",
               "unsigned"}  # fmt: skip
_SIZEOF = {"sizeof", "_Alignof", "alignof", "__alignof__", "__alignof"}


class _Fail(Exception):
    """The expression has no integer value here."""


def evaluate(
    expr: str, consts: Mapping[str, str], types: Mapping[str, int] | None = None
) -> int | None:
    """The value of the C integer constant expression `expr`, or None. Names are looked up
    in `consts` (name -> expression text); `types` adds type sizes (typedef names)."""
    try:
        return _Parser(expr, consts, types or {}, 0).parse()
    except (_Fail, RecursionError, ValueError):
        return None


class _Parser:
    def __init__(self, expr: str, consts: Mapping[str, str], types: Mapping[str, int], depth: int):
        if len(expr) > MAX_CHARS or depth > 8:
            raise _Fail
        self.consts, self.types, self.depth = consts, types, depth
        self.tokens: list[tuple[str, str]] = []
        pos, expr = 0, expr.strip()
        while pos < len(expr):
            m = _TOKEN.match(expr, pos)
            if m is None or m.end() == pos:
                raise _Fail
            kind = next(k for k in ("float", "int", "name", "op") if m.group(k) is not None)
            self.tokens.append((kind, m.group().strip()))
            pos = m.end()
        self.at = 0

    def parse(self) -> int:
        value = self._ternary()
        if self.at != len(self.tokens):
            raise _Fail
        return value

    def _peek(self) -> str:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else ""

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self.at >= len(self.tokens) or (expected and self.tokens[self.at][1] != expected):
            raise _Fail
        self.at += 1
        return self.tokens[self.at - 1]

    def _ternary(self) -> int:
        cond = self._binary(0)
        if self._peek() != "?":
            return cond
        self._take("?")
        yes = self._ternary()
        self._take(":")
        no = self._ternary()
        return yes if cond else no

    def _binary(self, level: int) -> int:
        if level == len(_LEVELS):
            return self._unary()
        value = self._binary(level + 1)
        while self._peek() in _LEVELS[level]:
            op = self._take()[1]
            value = _apply(op, value, self._binary(level + 1))
        return value

    def _unary(self) -> int:
        tok = self._peek()
        if tok in ("-", "+", "~", "!"):
            self._take()
            v = self._unary()
            return {"-": -v, "+": v, "~": ~v, "!": int(not v)}[tok]
        if tok in _SIZEOF:
            self._take()
            return self._sizeof()
        if tok == "(" and self._is_type(self.at + 1):
            self._take("(")
            self._type_name()  # a cast to an integer type: the value is kept
            self._take(")")
            return self._unary()
        return self._primary()

    def _primary(self) -> int:
        kind, text = self._take()
        if kind == "int":
            return _check(_int_literal(text))
        if kind == "name" and text in self.consts:
            return _check(
                _Parser(self.consts[text], self.consts, self.types, self.depth + 1).parse()
            )
        if text == "(":
            value = self._ternary()
            self._take(")")
            return value
        raise _Fail

    def _is_type(self, k: int) -> bool:
        return k < len(self.tokens) and (
            self.tokens[k][1] in _SIZES
            or self.tokens[k][1] in self.types
            or self.tokens[k][1] in _QUALIFIERS
        )

    def _sizeof(self) -> int:
        if self._peek() == "(" and self._is_type(self.at + 1):
            self._take("(")
            size = self._type_name()
            self._take(")")
            return size
        kind, text = self._take()
        if kind == "float":
            return 4 if text[-1] in "fF" else 16 if text[-1] in "lL" else 8
        if kind == "int":
            return 8 if text[-1] in "lL" else 4
        raise _Fail  # sizeof of a variable or expression: not known here

    def _type_name(self) -> int:
        """A type name: qualifiers, base type words, then `*` and `[N]` declarators."""
        words = []
        while self._is_type(self.at):
            words.append(self._take()[1])
        base = [w for w in words if w not in _QUALIFIERS]
        if not base:
            base = ["int"]  # `unsigned` alone
        if "double" in base:
            size = 16 if "long" in base else 8
        elif "long" in base or "short" in base or "char" in base:
            size = 8 if "long" in base else 2 if "short" in base else 1
        else:
            size = self.types.get(base[-1], _SIZES.get(base[-1], 0))
        if size == 0:
            raise _Fail
        if self._peek() == "*":
            while self._peek() in ("*", "const", "restrict"):
                self._take()
            size = 8
        while self._peek() == "[":
            self._take("[")
            size = _check(size * self._ternary())
            self._take("]")
        return size


_LEVELS: tuple[tuple[str, ...], ...] = (
    ("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="),
    ("<<", ">>"), ("+", "-"), ("*", "/", "%"),
)  # fmt: skip


def _apply(op: str, a: int, b: int) -> int:
    if op in ("/", "%"):
        if b == 0:
            raise _Fail
        q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)  # C truncates toward 0
        return q if op == "/" else a - q * b
    if op in ("<<", ">>"):
        if not 0 <= b < 63:
            raise _Fail
        return _check(a << b if op == "<<" else a >> b)
    table = {
        "||": lambda: int(bool(a or b)), "&&": lambda: int(bool(a and b)),
        "|": lambda: a | b, "^": lambda: a ^ b, "&": lambda: a & b,
        "==": lambda: int(a == b), "!=": lambda: int(a != b), "<": lambda: int(a < b),
        "<=": lambda: int(a <= b), ">": lambda: int(a > b), ">=": lambda: int(a >= b),
        "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
    }  # fmt: skip
    return _check(table[op]())


def _int_literal(text: str) -> int:
    text = text.rstrip("uUlL")
    if text[:2] in ("0x", "0X", "0b", "0B"):
        return int(text, 0)
    return int(text, 8) if len(text) > 1 and text[0] == "0" else int(text)


def _check(value: int) -> int:
    if abs(value) > _LIMIT:
        raise _Fail
    return value
