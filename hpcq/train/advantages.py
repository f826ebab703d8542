"""Group-relative advantages, as plain math.

For a prompt's group of G completions with rewards r_1..r_G, of which the members
left out by the pipeline (infra_error, deadline) are removed first, leaving S:

    A_i = (r_i - mean(r_S)) / (std + eps)      scale = "group": std = std(r_S)   (GRPO)
                                               scale = "batch": std over every kept
                                                 member of every kept group  (LitePPO)
    A_i =  r_i - mean(r_S)                     scale = "none"                (Dr. GRPO)

std is the sample (Bessel-corrected) standard deviation. A group is dropped, not
trained on, when
- fewer than `min_members` members survive: one survivor has no baseline to be
  relative to (verl would hand it its raw reward as the advantage);
- its rewards are all equal within a relative tolerance: GFLOPS are noisy, and
  dividing timing jitter by its own std would turn it into +-1 advantages:
      max(r_S) - min(r_S) <= tie_rtol * max|r_S| + tie_atol.
Whether a dropped group is replaced by sampling more (DAPO's dynamic sampling) is the
loop's choice (hpcq.train.loop); this module only says which groups count.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hpcq.errors import ConfigError

Scale = Literal["group", "batch", "none"]


@dataclass(frozen=True)
class AdvantageSettings:
    scale: Scale = "group"
    tie_rtol: float = 0.02
    """Relative spread under which a group counts as tied: 2% covers the median-of-runs
    jitter of one kernel measured twice on a quiet core."""
    tie_atol: float = 1e-6
    min_members: int = 2
    eps: float = 1e-4
    """Added to the std; rewards are GFLOPS or tier penalties, so this only guards 0."""

    def __post_init__(self) -> None:
        if self.scale not in ("group", "batch", "none"):
            raise ConfigError(f"advantage scale {self.scale!r}: choose group, batch or none")
        if self.min_members < 2:
            raise ConfigError("min_members must be >= 2: a lone member has no baseline")
        if self.tie_rtol < 0 or self.tie_atol < 0 or self.eps <= 0:
            raise ConfigError("tie_rtol, tie_atol >= 0 and eps > 0")


@dataclass(frozen=True)
class GroupAdvantages:
    advantages: tuple[float | None, ...]  # per member; None: no gradient from it
    dropped: str  # "" when kept, else "too_few" or "tie"
    mean: float  # of the survivors' rewards (nan when none survived)

    @property
    def kept(self) -> bool:
        return not self.dropped


def survivors(rewards: Sequence[float | None]) -> list[float]:
    return [r for r in rewards if r is not None]


def drop_reason(rewards: Sequence[float | None], s: AdvantageSettings) -> str:
    """Why a group would be dropped ("" if it counts)."""
    r = survivors(rewards)
    if len(r) < s.min_members:
        return "too_few"
    if max(r) - min(r) <= s.tie_rtol * max(abs(x) for x in r) + s.tie_atol:
        return "tie"
    return ""


def group_advantages(
    groups: Sequence[Sequence[float | None]], s: AdvantageSettings
) -> list[GroupAdvantages]:
    """Advantages for every member of every group of one step (a batch)."""
    reasons = [drop_reason(g, s) for g in groups]
    kept_rewards = [
        x for g, why in zip(groups, reasons, strict=True) if not why for x in survivors(g)
    ]
    batch_std = statistics.stdev(kept_rewards) if len(kept_rewards) >= 2 else 0.0
    out = []
    for g, why in zip(groups, reasons, strict=True):
        r = survivors(g)
        mean = statistics.fmean(r) if r else math.nan
        if why:
            out.append(GroupAdvantages(tuple(None for _ in g), why, mean))
            continue
        if s.scale == "group":
            divisor = statistics.stdev(r) + s.eps
        elif s.scale == "batch":
            divisor = batch_std + s.eps
        else:
            divisor = 1.0
        adv = tuple(None if x is None else (x - mean) / divisor for x in g)
        out.append(GroupAdvantages(adv, "", mean))
    return out
