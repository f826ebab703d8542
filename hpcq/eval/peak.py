"""The node's measured FP64 peak per core: the physics floor of every reward.

A per-call figure above `peak_margin x peak x cores` cannot be honest and is rejected.
The peak is measured once per node (kernels/harness/peak.c, independent FMA chains,
best of several runs on one pinned core) and cached in `cache_dir/peak.json` keyed by
the CPU model, unless the node class configures it.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import structlog

from hpcq.errors import InfraError
from hpcq.eval import procs
from hpcq.eval.harness import build_peak, compiler_version

log = structlog.get_logger()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


async def measure_peak(cc: str, kernels_dir: Path, work_dir: Path, core: int) -> float:
    binary = await build_peak(cc, await compiler_version(cc), kernels_dir, work_dir)
    done = await procs.run(["taskset", "-c", str(core), str(binary)], timeout_s=120)
    try:
        value = float(json.loads(done.stdout.decode().strip().splitlines()[-1])["gflops_per_core"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InfraError(f"the peak benchmark printed no figure: {done.text(500)}") from exc
    if value <= 0:
        raise InfraError(f"the peak benchmark measured {value} GFLOPS")
    return value


class PeakStore:
    """Per-node cache of the measured peak; a re-measurement only ever raises it, since
    noise (a busy neighbour core) can only make the benchmark slower than the truth."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / "peak.json"

    def get(self, node_class: str) -> float | None:
        try:
            data = json.loads(self.path.read_text())
            entry = data[f"{node_class}|{cpu_model()}"]
            return float(entry)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, node_class: str, gflops: float) -> float:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        key = f"{node_class}|{cpu_model()}"
        best = max(gflops, float(data.get(key, 0.0)))
        data[key] = best
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".peak-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)
        log.info("peak.stored", node_class=node_class, gflops_per_core=round(best, 2))
        return best
