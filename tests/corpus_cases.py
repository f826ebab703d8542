"""Loads tests/corpus/: C files whose header comment says what the engine must answer.

Header lines (`// key: value`): expect, why, forbid, require, techniques, ladder, cores,
and `sandbox` (the status expected with static checks turned off, when it differs from
`expect`; `ok` there means the hack gains nothing once the static gate is gone).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
_HEADER = re.compile(r"^//\s*(\w+)\s*:\s*(.*?)\s*$")


@dataclass(frozen=True)
class Case:
    path: Path
    expect: str
    why: str = ""
    forbid: frozenset[str] = frozenset()
    require: frozenset[str] = frozenset()
    techniques: frozenset[str] | None = None
    ladder: int | None = None
    cores: int = 1
    sandbox: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def _names(value: str) -> frozenset[str]:
    return frozenset(v.strip() for v in value.split(",") if v.strip())


def load(path: Path) -> Case:
    meta: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _HEADER.match(line)
        if not m:
            if line.strip():
                break
            continue
        meta[m.group(1)] = m.group(2)
    if "expect" not in meta:
        raise ValueError(f"{path}: no `// expect:` header")
    return Case(
        path=path,
        expect=meta.pop("expect"),
        why=meta.pop("why", ""),
        forbid=_names(meta.pop("forbid", "")),
        require=_names(meta.pop("require", "")),
        techniques=_names(meta.pop("techniques")) if "techniques" in meta else None,
        ladder=int(meta.pop("ladder")) if "ladder" in meta else None,
        cores=int(meta.pop("cores", "1")),
        sandbox=meta.pop("sandbox", None),
        extra=meta,
    )


def cases(folder: str) -> list[Case]:
    return [load(p) for p in sorted((CORPUS / folder).glob("*.c"))]
