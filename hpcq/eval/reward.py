"""From a status and a measurement to a scalar reward.

Failures are tiered as in the paper (-100 violation ... -10 wrong result); an `ok`
kernel earns its measured performance, shaped as configured. `infra_error` earns
nothing at all (None): the node failed, not the kernel, and the sample is retried or
left out of its group.

Two callers, two settings. A node's engine scores with its own TOML `[reward]`: the
informational `EvalResult.reward` of `hpcq eval` and `hpcq submit`. A training run
scores every result again, on the producer, with the run's settings
(`training_reward`): consumers with different TOMLs can never change what a run
trains on, and the run records that one definition in its config.
"""

from __future__ import annotations

import math

from hpcq.eval.settings import RewardSettings
from hpcq.outcome import EvalResult, Status


def reward_for(
    status: Status,
    gflops: float | None,
    settings: RewardSettings,
    *,
    peak_gflops: float | None = None,
) -> float | None:
    """`peak_gflops` is the peak of the slot (per-core peak x cores), for fraction_of_peak.

    Raises ValueError when an ok result lacks the figure its shaping needs."""
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
    if peak_gflops is None or peak_gflops <= 0:
        raise ValueError("fraction_of_peak needs the slot's peak (peak_gflops)")
    return gflops / peak_gflops


def training_reward(outcome: EvalResult, settings: RewardSettings) -> float | None:
    """The reward a run trains on: the run's `settings` applied to the raw measurement
    (status, median GFLOPS, and the slot's peak for fraction_of_peak).

    `outcome.reward`, the consumer's figure from its own TOML, is never read. None for
    infra_error; ValueError when an ok result lacks gflops, or lacks peak_gflops under
    fraction_of_peak (a consumer too old to report it)."""
    return reward_for(outcome.status, outcome.gflops, settings, peak_gflops=outcome.peak_gflops)


def describe(settings: RewardSettings) -> str:
    """One sentence for a run's report: what a correct kernel earns, what failures cost."""
    ok = {
        "gflops": "its median GFLOPS",
        "log_speedup": f"ln(GFLOPS / {settings.baseline_gflops} GFLOPS)",
        "fraction_of_peak": "its median GFLOPS / the slot's peak (per-core peak x cores)",
    }.get(settings.shaping, settings.shaping)
    tiers = ", ".join(
        f"{getattr(settings, str(s)):g} {str(s).replace('_', ' ')}"
        for s in Status
        if s not in (Status.OK, Status.INFRA_ERROR)
    )
    return (
        f"The reward of a correct kernel is {ok} (shaping = {settings.shaping!r}); "
        f"failures earn the tier penalties ({tiers}); infra errors are left out."
    )
