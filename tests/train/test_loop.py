"""The GRPO loop's bookkeeping with a bandit policy and an instant channel: rewards
rise, violations never travel, left-out members get no gradient, ties are dropped or
resampled, metrics and checkpoints survive a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcq import checkpoint, grpo, metrics
from hpcq.advantages import AdvantageSettings
from hpcq.messages import Task
from hpcq.outcome import EvalResult, Status
from hpcq.problems import load_problem
from hpcq.prompts import FixedStages, fenced
from hpcq.settings import RewardSettings
from hpcq.train_settings import LoopSettings, TrainSettings

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
    tmp_path: Path, policy: BanditPolicy, channel: InstantChannel, **loop: object
) -> grpo.Run:
    settings = TrainSettings(
        loop=LoopSettings(
            **{"steps": 6, "group_size": 6, "prompts_per_step": 2, "checkpoint_every": 2, **loop}
        )
    )  # type: ignore[arg-type]
    return grpo.Run(
        policy=policy,
        channel=channel,
        problems=(load_problem("dgemm-256"),),
        stages=FixedStages(),
        settings=settings,
        rewards=RewardSettings(),
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
    calls = {"n": 0}

    def flaky(task: Task) -> EvalResult | None:
        calls["n"] += 1
        return None if task.member == 0 else judge(task)

    policy = BanditPolicy([FAST, SLOW])
    run = make_run(tmp_path, policy, InstantChannel(flaky), steps=1)
    await grpo.train(run)
    row = metrics.read(tmp_path)[0]
    assert row["status_fractions"]["left_out"] == pytest.approx(2 / 12)
    for batch in policy.updates:
        assert len(batch) <= 10  # members 0 of both groups are out


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


async def test_resample_stops_once_enough_groups_count(tmp_path: Path) -> None:
    policy = BanditPolicy([FAST, SLOW])
    run = make_run(tmp_path, policy, InstantChannel(judge), steps=1, on_tie="resample")
    await grpo.train(run)
    row = metrics.read(tmp_path)[0]
    assert row["groups"] - row["groups_dropped"] >= 2 or row["resample_rounds"] == 3


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


async def test_batch_scaling_and_tolerance_flow_from_settings(tmp_path: Path) -> None:
    policy = BanditPolicy([FAST, SLOW])
    run = make_run(tmp_path, policy, InstantChannel(judge), steps=1)
    run = grpo.Run(
        **{
            **run.__dict__,
            "settings": TrainSettings(
                loop=run.settings.loop, advantage=AdvantageSettings(scale="none")
            ),
        }
    )
    await grpo.train(run)
    for s in policy.updates[0]:
        assert (
            abs(s.advantage) in (0.0, pytest.approx(9.0), pytest.approx(18.0))
            or abs(s.advantage) < 18.0
        )
