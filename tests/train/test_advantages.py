"""GRPO advantages: the three scalings, ties, left-out members, lone survivors."""

from __future__ import annotations

import math
import statistics

import pytest

from hpcq.errors import ConfigError
from hpcq.train.advantages import AdvantageSettings, drop_reason, group_advantages


def test_group_scaling_is_sample_std() -> None:
    r = [1.0, 2.0, 3.0, 6.0]
    (g,) = group_advantages([r], AdvantageSettings(scale="group"))
    mean, std = statistics.fmean(r), statistics.stdev(r)
    assert g.kept and g.mean == pytest.approx(mean)
    assert g.advantages == pytest.approx([(x - mean) / (std + 1e-4) for x in r])
    assert sum(a for a in g.advantages if a is not None) == pytest.approx(0.0, abs=1e-9)


def test_none_scaling_is_centred_raw_reward() -> None:
    (g,) = group_advantages([[10.0, -40.0, 12.0]], AdvantageSettings(scale="none"))
    mean = (10.0 - 40.0 + 12.0) / 3
    assert g.advantages == pytest.approx([10.0 - mean, -40.0 - mean, 12.0 - mean])


def test_batch_scaling_uses_std_over_kept_groups_only() -> None:
    groups = [[1.0, 3.0], [10.0, 20.0], [5.0, 5.0]]  # the last is a tie: not in the std
    out = group_advantages(groups, AdvantageSettings(scale="batch"))
    std = statistics.stdev([1.0, 3.0, 10.0, 20.0])
    assert out[0].advantages == pytest.approx([(1 - 2) / (std + 1e-4), (3 - 2) / (std + 1e-4)])
    assert out[1].advantages == pytest.approx([-5 / (std + 1e-4), 5 / (std + 1e-4)])
    assert out[2].dropped == "tie" and out[2].advantages == (None, None)


def test_left_out_members_are_not_in_the_statistics() -> None:
    (g,) = group_advantages([[4.0, None, 8.0, None]], AdvantageSettings(scale="none"))
    assert g.advantages == (-2.0, None, 2.0, None)
    assert g.mean == 6.0


def test_a_lone_survivor_drops_the_group() -> None:
    (g,) = group_advantages([[None, 7.0, None]], AdvantageSettings())
    assert g.dropped == "too_few" and g.advantages == (None, None, None)
    (g,) = group_advantages([[None, None]], AdvantageSettings())
    assert g.dropped == "too_few" and math.isnan(g.mean)


@pytest.mark.parametrize(
    ("rewards", "why"),
    [
        ([10.0, 10.1, 9.95, 10.05], "tie"),  # GFLOPS jitter within 2%
        ([-40.0, -40.0, -40.0], "tie"),  # every member failed the same way
        ([0.0, 0.0], "tie"),  # the absolute tolerance covers zero
        ([10.0, 10.5, 9.9], ""),  # 6% apart: a real difference
        ([-100.0, 3.0], ""),
    ],
)
def test_near_ties_use_a_relative_tolerance(rewards: list[float], why: str) -> None:
    assert drop_reason(rewards, AdvantageSettings(tie_rtol=0.02)) == why


def test_tie_tolerance_zero_keeps_any_difference() -> None:
    assert drop_reason([10.0, 10.0001], AdvantageSettings(tie_rtol=0.0)) == ""


def test_settings_fail_fast() -> None:
    with pytest.raises(ConfigError):
        AdvantageSettings(min_members=1)
    with pytest.raises(ConfigError):
        AdvantageSettings(scale="batchy")  # type: ignore[arg-type]
