"""From a model's completion to a candidate C source, or a format violation.

A completion without usable code never reaches a CPU node: it is judged here, as a
`violation`, with a message that says what was missing. Usable means: a fenced code
block (```c, ```C, ```cpp or a bare ```) whose text defines the problem's entry point.
When there are several blocks, the last one that defines the entry point wins (models
often show a naive version first). An unterminated block at the end of a completion
(it hit the length limit) is not usable: the kernel is cut off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_C_TAGS = frozenset({"", "c", "cpp", "c++", "cc", "h"})


@dataclass(frozen=True)
class Extracted:
    source: str | None  # None: a format violation
    message: str = ""


def defines(source: str, entry: str) -> bool:
    """True when `entry` is defined (a body follows its parameter list), not just declared."""
    pattern = rf"\b{re.escape(entry)}\s*\([^;{{}}]*\)\s*\{{"
    return re.search(pattern, source) is not None


def extract_code(completion: str, entry: str) -> Extracted:
    blocks = [m.group(2) for m in _FENCE.finditer(completion) if m.group(1).lower() in _C_TAGS]
    if not blocks:
        if completion.count("```") % 2 == 1:
            return Extracted(None, "format: the code block is not closed (cut off?)")
        return Extracted(None, "format: no ```c code block in the answer")
    for block in reversed(blocks):
        if defines(block, entry):
            return Extracted(block.strip("\n") + "\n")
    return Extracted(None, f"format: no code block defines the function {entry}()")
