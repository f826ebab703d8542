"""The GRPO loop's bookkeeping with a bandit policy and an instant channel: rewards
rise, violations never travel, left-out members get no gradient, ties are dropped or
resampled, metrics and checkpoints survive a crash."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpcq.eval.problems import load_problem
from hpcq.outcome import EvalResult, Status
from hpcq.pipeline.messages import Task
from hpcq.train import checkpoint, metrics
from hpcq.train import loop as grpo
from hpcq.train.advantages import AdvantageSettings
from hpcq.train.prompts import FixedStages, fenced
from hpcq.train.settings import LoopSettings, TrainSettings

from .fakes import BanditPolicy, InstantChannel, ok

FAST = fenced(
    "void dgemm(int M, int N, int K, const double *A, const double *B, double *C) { /* fast */ }"
)
SLOW = fenced(
    "void dgemm(int M, int N, int K, const double *A, const double *B, double *C) { /* slow */ }"
)
BAD = fenced(
    "void dgemm(int M, int N, int K, const double *A, const double *B, double *C) { /* bad */ }"
)
NO_CODE = "I cannot write that."


def judge(task: Task) -> EvalResult | None:
    if "fast" in task.source:
        return ok(20.0)
    if "slow" in task.source:
        return ok(2.0)
    return EvalResult(Status.COMPILE_ERROR, -40.0, message="error")


def make_run(
    tmp_path: Path, policy: BanditPolicy, channel: InstantChannel, **loop: Any
) -> grpo.Run:
    base = {"steps": 6, "group_size": 6, "prompts_per_step": 2, "checkpoint_every": 2}
    settings = TrainSettings(loop=LoopSettings(**{**base, **loop}))
    return grpo.Run(
        policy=policy,
        channel=channel,
        problems=(load_problem("dgemm-256"),),
        stages=FixedStages(),
        settings=settings,
        run_dir=tmp_path,
        run_id="t",
        node_class="test",
    )


async def test_mean_reward_rises_and_violations_are_not_sent(tmp_path: Path) -> None:
    policy = BanditPolicy([FAST, SLOW, BAD, NO_CODE], lr=2.0)
    channel = InstantChannel(judge)
    run = make_run(tmp_path, policy, channel, steps=12)
    assert await grpo.train(run) == 12
    rows = metrics.read(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 13))
    first = sum(r["reward_mean"] for r in rows[:3]) / 3
    last = sum(r["reward_mean"] for r in rows[-3:]) / 3
    assert last > first
    assert all(t.source.strip() != NO_CODE for t in channel.submitted)
    assert all("cannot" not in t.source for t in channel.submitted)
    r = rows[0]
    assert set(r["status_fractions"]) >= {"ok", "violation", "compile_error", "left_out"}
    assert sum(r["status_fractions"].values()) == pytest.approx(1.0)
    assert r["samples"] == 12 and r["groups"] == 2 and r["policy_version"] == 1
    # Once the policy always writes the fast kernel, its groups are ties: no update.
    assert policy.version == sum(1 for r in rows if r["groups_dropped"] < r["groups"])


async def test_left_out_members_get_no_gradient(tmp_path: Path) -> None:
    def flaky(task: Task) -> EvalResult | None:
        return None if task.member == 0 else judge(task)

    policy = BanditPolicy([FAST, SLOW])
    run = make_run(tmp_path, policy, InstantChannel(flaky), steps=1)
    await grpo.train(run)
    row = metrics.read(tmp_path)[0]
    assert row["status_fractions"]["left_out"] == pytest.approx(2 / 12)
    kept = row["groups"] - row["groups_dropped"]
    assert kept >= 1, "seed 0 must give at least one group that is not a tie"
    (batch,) = policy.updates
    assert len(batch) == 5 * kept  # every survivor of a kept group, and nothing else
    (groups,) = policy.generated
    left_out = {id(g[0]) for g in groups}  # member 0 of each group, the same objects
    assert not any(id(s.sample) in left_out for s in batch)
    for i in range(0, len(batch), 5):  # advantages centre on the survivors' mean
        assert sum(s.advantage for s in batch[i : i + 5]) == pytest.approx(0.0, abs=1e-9)


async def test_ties_are_dropped_or_resampled(tmp_path: Path) -> None:
    policy = BanditPolicy([SLOW])  # every group is a tie
    channel = InstantChannel(judge)
    run = make_run(tmp_path / "drop", policy, channel, steps=1)
    (tmp_path / "drop").mkdir()
    await grpo.train(run)
    row = metrics.read(tmp_path / "drop")[0]
    assert row["groups_dropped"] == 2 and row["drop_reasons"] == {"tie": 2}
    assert policy.updates == []  # nothing to learn from

    policy = BanditPolicy([SLOW])
    (tmp_path / "re").mkdir()
    run = make_run(
        tmp_path / "re",
        policy,
        InstantChannel(judge),
        steps=1,
        on_tie="resample",
        max_resample_rounds=2,
    )
    await grpo.train(run)
    row = metrics.read(tmp_path / "re")[0]
    assert row["resample_rounds"] == 2 and row["groups"] == 6 and row["frac_groups_dropped"] == 1.0


def tie_for(ordinals: set[int]) -> Callable[[Task], EvalResult | None]:
    """Groups, numbered in the order they are sent, whose members all get 2 GFLOPS (a
    tie); in the others member 0 gets 20 GFLOPS, so they are kept."""
    seen: dict[str, int] = {}

    def verdict(task: Task) -> EvalResult:
        n = seen.setdefault(task.group_id, len(seen))
        return ok(2.0) if n in ordinals or task.member else ok(20.0)

    return verdict


@pytest.mark.parametrize(
    ("ties", "groups", "dropped"),
    [
        ({0, 1}, 4, 2),  # both first groups tie: round 2 samples two new ones
        ({0}, 3, 1),  # one ties: round 2 samples only the one missing group
    ],
)
async def test_resample_stops_once_enough_groups_count(
    tmp_path: Path, ties: set[int], groups: int, dropped: int
) -> None:
    policy = BanditPolicy([FAST])
    channel = InstantChannel(tie_for(ties))
    run = make_run(tmp_path, policy, channel, steps=1, on_tie="resample")
    await grpo.train(run)
    row = metrics.read(tmp_path)[0]
    # Stopped after one resample round, well before max_resample_rounds (3).
    assert row["resample_rounds"] == 1 and run.settings.loop.max_resample_rounds == 3
    assert row["groups"] == groups and row["groups_dropped"] == dropped
    assert row["drop_reasons"] == {"tie": dropped}
    assert len({t.group_id for t in channel.submitted}) == groups
    (batch,) = policy.updates
    assert len(batch) == 2 * 6  # prompts_per_step kept groups of G = 6


async def test_resume_after_crash_continues_the_curve(tmp_path: Path) -> None:
    policy = BanditPolicy([FAST, SLOW, BAD], seed=1)
    run = make_run(tmp_path, policy, InstantChannel(judge), steps=4)
    await grpo.train(run)
    # A crash after step 5 was logged but before its checkpoint (every 2 steps):
    with (tmp_path / metrics.METRICS_FILE).open("a") as f:
        f.write(json.dumps({"step": 5, "reward_mean": 0.0}) + "\n" + '{"step": 6, "rew')
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ["step-000002", "step-000004"]
    fresh = BanditPolicy([FAST, SLOW, BAD], seed=99)
    run = make_run(tmp_path, fresh, InstantChannel(judge), steps=6)
    assert await grpo.train(run) == 6
    assert fresh.version == 6  # 4 restored + 2 new
    assert [r["step"] for r in metrics.read(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ["step-000004", "step-000006"]


def with_advantage(run: grpo.Run, advantage: AdvantageSettings) -> grpo.Run:
    settings = dataclasses.replace(run.settings, advantage=advantage)
    return dataclasses.replace(run, settings=settings)


async def test_batch_scaling_and_tolerance_flow_from_settings(tmp_path: Path) -> None:
    """scale = "none" gives A = r - mean(group) exactly: with k fast kernels (20 GFLOPS)
    in a group of G = 6 whose others are slow (2 GFLOPS), mean = 2 + 3k, so a fast
    member's advantage is 18 - 3k and a slow one's -3k. A tie tolerance of 100% makes
    every group a tie."""
    policy = BanditPolicy([FAST, SLOW])
    run = make_run(tmp_path, policy, InstantChannel(judge), steps=1)
    await grpo.train(with_advantage(run, AdvantageSettings(scale="none")))
    (batch,) = policy.updates
    assert batch and len(batch) % 6 == 0  # whole groups: nobody is left out
    for i in range(0, len(batch), 6):
        group = batch[i : i + 6]
        fast = [s.sample.completion_ids[0] == 0 for s in group]  # answer 0 is FAST
        k = sum(fast)
        assert 1 <= k <= 5  # a kept group is not a tie
        want = [18.0 - 3 * k if f else -3.0 * k for f in fast]
        assert [s.advantage for s in group] == pytest.approx(want, abs=1e-9)

    policy = BanditPolicy([FAST, SLOW])
    (tmp_path / "tol").mkdir()
    run = make_run(tmp_path / "tol", policy, InstantChannel(judge), steps=1)
    loose = AdvantageSettings(scale="none", tie_rtol=1.0)  # 20 - 2 <= 1.0 x 20: a tie
    await grpo.train(with_advantage(run, loose))
    row = metrics.read(tmp_path / "tol")[0]
    assert row["drop_reasons"] == {"tie": 2} and policy.updates == []
