"""The result cache: identical completions, common inside a GRPO group, cost nothing twice.

The key hashes everything that can change a verdict (the engine builds it): the source,
the compiler and its version, the node class with its flags and peak, the problem and
its shape, the measure, sandbox and reward settings, the stage constraints, the number
of cores, the harness version and the version of the static checks and technique
detector (`detector_digest`). Entries are JSON files written atomically (temp file, then
rename), so concurrent consumers on one node share them safely. Infrastructure failures
are never cached. A write that fails (disk full, read-only cache) is logged and leaves
no temp file behind: the measurement it would have stored is still returned.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import structlog

from hpcq.outcome import EvalResult, Status

log = structlog.get_logger()

# The module whose code decides a verdict before the judge does; it and every hpcq
# module it imports, transitively, make up the detector's version (the judge and runner
# have their own digest).
_DETECTOR_ROOT = "hpcq.eval.build"
_HPCQ_IMPORT = re.compile(
    r"^\s*(?:from (hpcq(?:\.[\w.]+)?) import ([\w, ()]+)|import (hpcq\.[\w.]+))", re.M
)
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the installed hpcq package


def _module_file(name: str) -> Path | None:
    """The file of hpcq module `name` ("hpcq.eval.build"), or None if it is not one."""
    rel = Path(*name.split(".")[1:])
    for path in (_PACKAGE_ROOT / rel.with_suffix(".py"), _PACKAGE_ROOT / rel / "__init__.py"):
        if name != "hpcq" and path.is_file():
            return path
    return None


def cache_key(**parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def detector_modules() -> tuple[str, ...]:
    """hpcq.eval.build and the hpcq modules it imports, transitively (by reading the source)."""
    seen: set[str] = set()
    todo = [_DETECTOR_ROOT]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        for m in _HPCQ_IMPORT.finditer(path.read_text()):
            if m.group(3):
                todo.append(m.group(3))
                continue
            # from hpcq.x import a, b as c: each name may be a module of hpcq.x, or not
            todo.append(m.group(1))
            names = [w.split()[0] for w in m.group(2).strip("()").split(",") if w.strip()]
            todo += [f"{m.group(1)}.{n}" for n in names]
    return tuple(sorted(seen))


@functools.cache
def detector_digest() -> str:
    """Hash of the source of the static checks, the technique detector and the build
    steps, as installed: any change re-evaluates every candidate."""
    h = hashlib.sha256()
    for name in detector_modules():
        path = _module_file(name)
        assert path is not None  # detector_modules() keeps only modules with a file
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


class ResultCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> EvalResult | None:
        try:
            data = json.loads(self._path(key).read_text())
            data["status"] = Status(data["status"])
            data["techniques"] = tuple(data["techniques"])
            data["flags"] = tuple(data.get("flags", ()))
            data["cached"] = True
            return EvalResult(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None  # missing or unreadable: evaluate again

    def put(self, key: str, result: EvalResult) -> bool:
        """Store `result`; False (and a log line) when the disk refuses. Never raises for
        that: losing a cache entry costs a re-measurement, losing the result costs more."""
        if result.status is Status.INFRA_ERROR:
            return False
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "w") as f:
                json.dump(result.to_dict(), f)
            os.replace(tmp, path)
            return True
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            log.warning("cache.write_failed", key=key[:16], error=str(exc))
            return False
