from __future__ import annotations

import math

import pytest

from hpcq.outcome import Status
from hpcq.reward import reward_for
from hpcq.settings import RewardSettings


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.VIOLATION, -100.0),
        (Status.COMPILE_ERROR, -40.0),
        (Status.TIMEOUT, -30.0),
        (Status.RUNTIME_ERROR, -20.0),
        (Status.WRONG_RESULT, -10.0),
    ],
)
def test_tiers(status: Status, expected: float) -> None:
    assert reward_for(status, None, RewardSettings()) == expected


def test_infra_error_has_no_reward() -> None:
    assert reward_for(Status.INFRA_ERROR, None, RewardSettings()) is None


def test_shapings() -> None:
    assert reward_for(Status.OK, 42.0, RewardSettings()) == 42.0
    s = RewardSettings(shaping="log_speedup", baseline_gflops=2.0)
    assert reward_for(Status.OK, 8.0, s) == pytest.approx(math.log(4.0))
    s = RewardSettings(shaping="fraction_of_peak")
    assert reward_for(Status.OK, 30.0, s, peak_gflops=120.0) == pytest.approx(0.25)


def test_ok_needs_a_figure() -> None:
    with pytest.raises(ValueError):
        reward_for(Status.OK, None, RewardSettings())


def test_every_failure_is_below_any_ok() -> None:
    worst_ok = reward_for(Status.OK, 1e-6, RewardSettings())
    assert worst_ok is not None
    for status in Status:
        if status not in (Status.OK, Status.INFRA_ERROR):
            r = reward_for(status, None, RewardSettings())
            assert r is not None and r < worst_ok
