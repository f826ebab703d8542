"""Checkpoints of a run: `RUN_DIR/checkpoints/step-NNNNNN/{policy/, state.json}`.

The policy saves its own part (weights, optimizer, version, torch RNG); this module adds
the loop's state (last completed step, Python RNG) and makes the whole atomic: a
checkpoint is written under a temporary name and renamed when complete, so a crash while
saving leaves the previous checkpoint as the latest. Only the newest `keep` are kept.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcq.train.policy import Policy

_PREFIX = "step-"


@dataclass(frozen=True)
class LoopState:
    step: int  # last completed step
    run_id: str
    rng: Any  # random.getstate() of the loop's generator, as JSON-able lists

    def to_json(self) -> str:
        return json.dumps({"step": self.step, "run_id": self.run_id, "rng": _jsonable(self.rng)})

    @staticmethod
    def from_json(text: str) -> LoopState:
        d = json.loads(text)
        return LoopState(int(d["step"]), str(d["run_id"]), _state(d["rng"]))


def _jsonable(state: Any) -> Any:
    return [state[0], list(state[1]), state[2]]


def _state(data: Any) -> Any:
    return (data[0], tuple(data[1]), data[2])


def checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob(f"{_PREFIX}*") if (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(_PREFIX) :]))


def save(
    run_dir: Path, policy: Policy, step: int, run_id: str, rng: random.Random, keep: int
) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{step:06d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    policy.save(tmp / "policy")
    (tmp / "state.json").write_text(LoopState(step, run_id, rng.getstate()).to_json())
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resume(run_dir: Path, policy: Policy, rng: random.Random) -> LoopState | None:
    """Load the newest complete checkpoint into `policy` and `rng`; None when there is none."""
    found = checkpoints(run_dir)
    if not found:
        return None
    latest = found[-1]
    state = LoopState.from_json((latest / "state.json").read_text())
    policy.load(latest / "policy")
    rng.setstate(state.rng)
    return state
