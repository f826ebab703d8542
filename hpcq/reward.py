"""From a status and a measurement to a scalar reward.

Failures are tiered as in the paper (-100 violation ... -10 wrong result); an `ok`
kernel earns its measured performance, shaped as configured. `infra_error` earns
nothing at all (None): the node failed, not the kernel, and the sample is retried or
left out of its group.
"""

from __future__ import annotations

import math

from hpcq.outcome import Status
from hpcq.settings import RewardSettings


def reward_for(
    status: Status,
    gflops: float | None,
    settings: RewardSettings,
    *,
    peak_gflops: float | None = None,
) -> float | None:
    """`peak_gflops` is the peak of the slot (per-core peak x cores), for fraction_of_peak."""
    if status is Status.INFRA_ERROR:
        return None
    if status is not Status.OK:
        return float(getattr(settings, str(status)))
    if gflops is None or gflops <= 0:
        raise ValueError("an ok result needs a positive gflops figure")
    if settings.shaping == "gflops":
        return gflops
    if settings.shaping == "log_speedup":
        assert settings.baseline_gflops  # validated with the settings
        return math.log(gflops / settings.baseline_gflops)
    if not peak_gflops:
        raise ValueError("fraction_of_peak needs the node's peak")
    return gflops / peak_gflops
