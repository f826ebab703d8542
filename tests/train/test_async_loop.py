"""Asynchronous rollouts with a bandit policy and channels whose groups complete late
or out of order: the admission rule, the staleness bound (stale groups dropped,
counted, never trained on), stage changes while groups are in flight, and resume."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hpcq.outcome import Constraints, EvalResult, Status
from hpcq.pipeline.messages import Task
from hpcq.pipeline.producer import CompletedGroup
from hpcq.train import checkpoint, metrics
from hpcq.train import loop as grpo
from hpcq.train.policy import Sample, Scored, UpdateStats
from hpcq.train.prompts import PromptStage
from hpcq.train.settings import LoopSettings

from .fakes import BanditPolicy, InstantChannel
from .test_loop import BAD, FAST, SLOW, judge, make_run


class LateChannel(InstantChannel):
    """Judges at submit time, but hands groups back in submission order except those in
    `hold`: group ordinal n (in submission order) comes back only after `hold[n]` other
    groups did (a kernel stuck on a slow node), or when nothing else is left."""

    def __init__(self, verdict: Any, hold: dict[int, int] | None = None) -> None:
        super().__init__(verdict)
        self.hold = dict(hold or {})
        self.queue: list[tuple[int, CompletedGroup]] = []
        self.delivered: list[str] = []  # group ids, in the order handed back
        self.on_deliver: list[Any] = []  # callbacks(group ordinal)
        self._ordinals: dict[str, int] = {}

    async def submit_group(self, tasks: Sequence[Task]) -> None:
        self._ordinals[tasks[0].group_id] = len(self._ordinals)
        await super().submit_group(tasks)
        done = self._ready.get_nowait()
        self.queue.append((self._ordinals[done.group_id], done))

    async def next_group(self, timeout_s: float | None = None) -> CompletedGroup:
        await asyncio.sleep(0)
        if not self.queue:
            raise TimeoutError
        free = [x for x in self.queue if self.hold.get(x[0], 0) <= 0] or self.queue[:1]
        ordinal, done = free[0]
        self.queue.remove((ordinal, done))
        for n in self.hold:
            self.hold[n] -= 1
        self.delivered.append(done.group_id)
        for callback in self.on_deliver:
            callback(ordinal)
        return done


def trained_versions(policy: BanditPolicy) -> list[list[int]]:
    """For each update (made at version i), the versions that sampled its batch."""
    return [[s.sample.policy_version for s in batch] for batch in policy.updates]


# --- the admission rule, by hand ---------------------------------------------------------


@pytest.mark.parametrize(
    ("staleness", "in_flight", "ahead", "short", "steps_left", "want"),
    [
        (0, 0, 0, 2, 5, 2),  # synchronous: the step's own round
        (0, 0, 1, 1, 5, 0),  # ... and nothing while a round is out
        (1, 0, 0, 2, 5, 4),  # one step ahead: B + B
        (1, 0, 2, 2, 5, 2),  # two already ahead (next step's): two more
        (1, 0, 2, 0, 5, 0),  # before the update: the window of one step is full
        (1, 0, 0, 0, 5, 2),  # ... unless nothing is ahead: the next step's B
        (2, 0, 0, 2, 5, 6),  # two steps ahead
        (2, 3, 0, 2, 5, 3),  # max_in_flight caps it
        (2, 3, 3, 2, 5, 0),
        (1, 0, 0, 2, 0, 2),  # the last step samples nothing for steps that never come
        (3, 0, 1, 1, 1, 2),  # near the end: 1 short + 1 step of 2, minus 1 ahead
    ],
)
def test_admit_by_hand(
    staleness: int, in_flight: int, ahead: int, short: int, steps_left: int, want: int
) -> None:
    loop_s = LoopSettings(prompts_per_step=2, max_staleness=staleness, max_in_flight=in_flight)
    assert grpo.admit(loop_s, ahead, short, steps_left) == want


def test_in_flight_limit_defaults_to_the_staleness_window() -> None:
    assert LoopSettings(prompts_per_step=3).in_flight_limit == 3
    assert LoopSettings(prompts_per_step=3, max_staleness=2).in_flight_limit == 9
    assert LoopSettings(prompts_per_step=3, max_staleness=2, max_in_flight=4).in_flight_limit == 4


# --- the loop ------------------------------------------------------------------------------


async def test_synchronous_default_trains_on_policy(tmp_path: Path) -> None:
    policy = BanditPolicy([FAST, SLOW, BAD], seed=3)
    run = make_run(tmp_path, policy, LateChannel(judge), steps=4)
    await grpo.train(run)
    rows = metrics.read(tmp_path)
    assert all(r["staleness"] == {"0": 2} and r["in_flight"] == 0 for r in rows)
    for i, versions in enumerate(trained_versions(policy)):
        assert set(versions) == {i}  # every update learns from its own version's samples
    # one generate call per step (each step samples its own round)
    assert len(policy.generated) == 4


async def test_async_samples_ahead_within_the_bound(tmp_path: Path) -> None:
    """max_staleness 1, B = 2, so 4 groups admitted: step 1 samples 4 at version 0 and
    takes 2; step s >= 2 samples 2 at version s-1 and takes the 2 of version s-2."""
    policy = BanditPolicy([FAST, SLOW, BAD], seed=3)
    channel = LateChannel(judge)
    run = make_run(tmp_path, policy, channel, steps=5, max_staleness=1)
    assert await grpo.train(run) == 5
    rows = metrics.read(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["staleness"] == {"0": 2}
    assert all(r["staleness"] == {"1": 2} for r in rows[1:])
    assert [r["in_flight"] for r in rows] == [2, 2, 2, 2, 0]  # nothing left for no step
    assert all(r["groups_stale"] == 0 for r in rows)
    assert len({t.group_id for t in channel.submitted}) == 10  # none sampled in vain
    # one group per generate call: 4 at step 1, then 2 per step up to step 4
    assert [len(g) for g in policy.generated] == [1] * 10
    for i, versions in enumerate(trained_versions(policy)):
        assert all(0 <= i - v <= 1 for v in versions)
    assert rows[0]["policy_version"] == 1 and rows[-1]["policy_version"] == 5


async def test_a_group_older_than_the_bound_is_dropped_and_counted(tmp_path: Path) -> None:
    """Group 0 (version 0) is stuck until 5 others came back: by then the policy is at
    version 2, two versions ahead of it with max_staleness 1."""
    policy = BanditPolicy([FAST, SLOW, BAD], seed=3)
    channel = LateChannel(judge, hold={0: 5})
    run = make_run(tmp_path, policy, channel, steps=4, max_staleness=1)
    await grpo.train(run)
    rows = metrics.read(tmp_path)
    assert sum(r["groups_stale"] for r in rows) == 1
    (stale_row,) = [r for r in rows if r["groups_stale"]]
    assert stale_row["step"] == 3  # taken at version 2: 2 behind
    stuck = {id(s) for s in policy.generated[0][0]}  # group 0's samples
    assert not any(id(s.sample) in stuck for batch in policy.updates for s in batch)
    # the stale group is not among the step's judged groups, and the step still took B
    assert all(r["groups"] == 2 for r in rows)
    assert channel.delivered[5] == channel.submitted[0].group_id
    for i, versions in enumerate(trained_versions(policy)):
        assert all(i - v <= 1 for v in versions)


async def test_without_the_bound_the_late_group_would_be_trained(tmp_path: Path) -> None:
    """The same schedule with max_staleness 2 keeps the late group: the drop above is
    the bound's doing, not the channel's."""
    policy = BanditPolicy([FAST, SLOW, BAD], seed=3)
    run = make_run(tmp_path, policy, LateChannel(judge, hold={0: 5}), steps=4, max_staleness=2)
    await grpo.train(run)
    rows = metrics.read(tmp_path)
    assert sum(r["groups_stale"] for r in rows) == 0
    assert any("2" in r["staleness"] for r in rows)
    stuck = {id(s) for s in policy.generated[0][0]}
    assert any(id(s.sample) in stuck for batch in policy.updates for s in batch)


async def test_async_resample_replaces_ties_within_the_rounds(tmp_path: Path) -> None:
    policy = BanditPolicy([SLOW])  # every group a tie
    run = make_run(
        tmp_path, policy, LateChannel(judge), steps=2, max_staleness=1, on_tie="resample",
        max_resample_rounds=2,
    )  # fmt: skip
    await grpo.train(run)
    rows = metrics.read(tmp_path)
    assert policy.updates == []
    for r in rows:  # B x (1 + rounds) groups judged at most, every one a tie
        assert r["groups"] <= 6 and r["drop_reasons"] == {"tie": r["groups"]}
        assert r["resample_rounds"] <= 2


class SwitchingStages:
    """Stage A until `switch()` is called, stage B after."""

    def __init__(self) -> None:
        self.a = PromptStage("a", Constraints())
        self.b = PromptStage("b", Constraints(forbidden=frozenset({"openmp"})))
        self.current = self.a

    def stage_for(self, problem_id: str) -> PromptStage:
        return self.current


async def test_a_stage_change_in_flight_keeps_the_old_constraints(tmp_path: Path) -> None:
    """The stage changes as the first group comes back, while three groups of stage A
    are still in flight: they are judged under A's constraints (what they were sampled
    under) and trained on; groups sampled afterwards carry B's."""
    stages = SwitchingStages()
    seen_by_judge: list[Constraints] = []

    def recording_judge(task: Task) -> EvalResult | None:
        seen_by_judge.append(task.constraints)
        return judge(task)

    channel = LateChannel(recording_judge)
    channel.on_deliver.append(lambda ordinal: setattr(stages, "current", stages.b))
    policy = BanditPolicy([FAST, SLOW, BAD], seed=3)
    run = make_run(tmp_path, policy, channel, steps=3, max_staleness=1)
    run = dataclasses.replace(run, stages=stages)
    await grpo.train(run)
    by_group: dict[str, set[Constraints]] = {}
    for t in channel.submitted:
        by_group.setdefault(t.group_id, set()).add(t.constraints)
    order = list(dict.fromkeys(t.group_id for t in channel.submitted))
    assert [by_group[g] for g in order[:4]] == [{stages.a.constraints}] * 4
    assert all(by_group[g] == {stages.b.constraints} for g in order[4:])
    assert seen_by_judge.count(stages.a.constraints) == sum(
        1 for t in channel.submitted if t.group_id in order[:4]
    )
    # groups 3 and 4 (stage A, in flight across the change) are taken and trained at step 2
    rows = metrics.read(tmp_path)
    assert rows[1]["staleness"] == {"1": 2} and rows[1]["groups_stale"] == 0
    assert rows[1]["groups_dropped"] == 0, "seed 3 gives no tie at step 2"
    stage_a_late = {id(s) for call in policy.generated[2:4] for g in call for s in g}
    assert {id(s.sample) for s in policy.updates[1]} == stage_a_late


async def test_resume_ignores_the_dead_runs_groups_in_flight(tmp_path: Path) -> None:
    """A run dies at step 3 (after the checkpoint of step 2) with groups in flight whose
    results still arrive; the resumed run samples anew and never trains on them."""
    channel = LateChannel(judge)
    policy = BanditPolicy([FAST, SLOW, BAD], seed=1)
    run = make_run(tmp_path, policy, channel, steps=6, max_staleness=1)

    def crash(m: Any) -> None:
        if m.step == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        await grpo.train(run, on_step=crash)
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ["step-000002"]
    dead = {t.group_id for t in channel.submitted}
    assert len(channel.queue) > 0  # the dead run's groups, still to come back
    before = len(channel.delivered)

    fresh = BanditPolicy([FAST, SLOW, BAD], seed=99)
    run = make_run(tmp_path, fresh, channel, steps=6, max_staleness=1)
    assert await grpo.train(run) == 6
    assert [r["step"] for r in metrics.read(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert fresh.version == 6  # 2 restored + 4 new
    own: set[int] = {id(s) for call in fresh.generated for g in call for s in g}
    assert all(id(s.sample) in own for batch in fresh.updates for s in batch)
    # the old groups did come back to the new incarnation, and were passed over
    assert any(g in dead for g in channel.delivered[before:])


def _sample(version: int) -> Sample:
    return Sample((1,), (0,), (-0.1,), FAST, False, version)


async def test_group_version_is_the_behaviour_policys(tmp_path: Path) -> None:
    """Rollouts hands back the version that sampled a group, whatever step takes it."""
    from hpcq.eval.problems import load_problem
    from hpcq.eval.settings import RewardSettings
    from hpcq.train.rollout import Context, Prompted, Rollouts

    flight = Rollouts(InstantChannel(judge))
    p = Prompted(load_problem("dgemm-256"), Constraints(), (_sample(3), _sample(3)))
    gid = await flight.submit(p, Context("r", 7, RewardSettings(), "nc"))
    assert flight.ahead == 1
    g = await flight.next(1.0)
    assert (g.group_id, g.version, g.step, flight.ahead) == (gid, 3, 7, 0)
    assert [m.status for m in g.members] == [str(Status.OK)] * 2


class ReportingPolicy(BanditPolicy):
    """Reports fixed importance-weight figures, as a torch policy would."""

    def update(self, batch: Sequence[Scored]) -> UpdateStats:
        stats = super().update(batch)
        return dataclasses.replace(stats, is_clip_frac=0.25, is_weight_mean=0.875)


async def test_importance_weight_figures_reach_the_metrics(tmp_path: Path) -> None:
    policy = ReportingPolicy([FAST, SLOW, BAD], seed=3)
    run = make_run(tmp_path, policy, LateChannel(judge), steps=2, max_staleness=1)
    await grpo.train(run)
    rows = metrics.read(tmp_path)
    trained = [r for r in rows if r["groups_dropped"] < r["groups"]]
    assert trained and all(
        (r["is_clip_frac"], r["is_weight_mean"]) == (0.25, 0.875) for r in trained
    )
    assert all(0.0 <= r["idle_fraction"] <= 1.0 for r in rows)
