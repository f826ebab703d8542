from __future__ import annotations

import math

import pytest

from hpcq.errors import ConfigError
from hpcq.eval.reward import describe, reward_for, training_reward
from hpcq.eval.settings import RewardSettings, check_reward_settings
from hpcq.outcome import EvalResult, Status


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


def test_training_reward_ignores_the_consumers_figure() -> None:
    consumer = EvalResult(Status.OK, reward=30.0, gflops=30.0, peak_gflops=120.0)
    run = RewardSettings(shaping="fraction_of_peak")
    assert training_reward(consumer, run) == pytest.approx(0.25)
    failed = EvalResult(Status.TIMEOUT, reward=-30.0)
    assert training_reward(failed, RewardSettings(timeout=-5.0)) == -5.0
    assert training_reward(EvalResult(Status.INFRA_ERROR, None), run) is None


def test_fraction_of_peak_needs_the_results_peak() -> None:
    run = RewardSettings(shaping="fraction_of_peak")
    with pytest.raises(ValueError, match="peak_gflops"):
        training_reward(EvalResult(Status.OK, reward=0.5, gflops=30.0), run)
    with pytest.raises(ValueError, match="peak_gflops"):
        reward_for(Status.OK, 30.0, run, peak_gflops=-1.0)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        (RewardSettings(shaping="linear"), "choose one of gflops"),  # type: ignore[arg-type]
        (RewardSettings(shaping="log_speedup"), "needs reward.baseline_gflops"),
        (RewardSettings(shaping="log_speedup", baseline_gflops=-1.0), "baseline_gflops > 0"),
        (RewardSettings(timeout=math.nan), "finite"),
    ],
)
def test_bad_reward_settings_name_the_fix(settings: RewardSettings, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        check_reward_settings(settings)
    assert fragment in str(info.value)


def test_description_names_shaping_and_tiers() -> None:
    text = describe(RewardSettings(compile_error=-41.0))
    assert "median GFLOPS" in text and "'gflops'" in text
    assert "-100 violation, -41 compile error, -30 timeout" in text
