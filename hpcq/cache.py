"""The result cache: identical completions, common inside a GRPO group, cost nothing twice.

The key hashes everything that can change a verdict: the source, the compiler and its
version, the flags, the problem and its shape, the node class, the stage constraints,
the number of cores and the harness version. Entries are JSON files written atomically
(temp file, then rename), so concurrent consumers on one node share them safely.
Infrastructure failures are never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hpcq.outcome import EvalResult, Status


def cache_key(**parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


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
            data["cached"] = True
            return EvalResult(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None  # missing or unreadable: evaluate again

    def put(self, key: str, result: EvalResult) -> None:
        if result.status is Status.INFRA_ERROR:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(result.to_dict(), f)
        os.replace(tmp, path)
