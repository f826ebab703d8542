"""Scoring through a channel: members keep their order, violations stay local, left-out
members carry no reward; the TRL reward function maps them to GFLOPS, tiers and None."""

from __future__ import annotations

from typing import Any

from hpcq.eval.problems import load_problem
from hpcq.eval.settings import RewardSettings
from hpcq.outcome import Constraints, EvalResult, Status
from hpcq.pipeline.broker import BrokerSettings
from hpcq.pipeline.messages import Task
from hpcq.pipeline.topology import Topology
from hpcq.train.policy import Sample
from hpcq.train.prompts import fenced
from hpcq.train.rollout import LEFT_OUT, Context, Prompted, score

from .fakes import InstantChannel, ok

KERNEL = "void dgemm(int M, int N, int K, const double *A, const double *B, double *C) { /* %s */ }"


def judge(task: Task) -> EvalResult | None:
    if "lost" in task.source:
        return None
    if "wrong" in task.source:
        return EvalResult(Status.WRONG_RESULT, -10.0)
    return ok(3.5)


def sample(text: str) -> Sample:
    return Sample((1,), (2,), (-0.1,), text, False, 7)


async def test_members_in_order_with_local_violations_and_left_out() -> None:
    texts = [fenced(KERNEL % "fast"), "no code", fenced(KERNEL % "lost"), fenced(KERNEL % "wrong")]
    channel = InstantChannel(judge)
    batch = [Prompted(load_problem("dgemm-256"), Constraints(), tuple(map(sample, texts)))]
    ctx = Context("run", 3, RewardSettings(), "nc")
    (group,) = await score(channel, batch, ctx)
    assert [m.status for m in group] == ["ok", "violation", LEFT_OUT, "wrong_result"]
    assert [m.reward for m in group] == [3.5, -100.0, None, -10.0]
    assert group[1].message.startswith("format:")
    assert len(channel.submitted) == 3  # the violation never travelled
    t = channel.submitted[0]
    assert (t.run_id, t.step, t.member, t.policy_version, t.node_class) == ("run", 3, 0, 7, "nc")
    assert len({t.group_id for t in channel.submitted}) == 1


async def test_a_group_of_only_violations_sends_nothing() -> None:
    channel = InstantChannel(judge)
    batch = [Prompted(load_problem("dgemm-256"), Constraints(), (sample("x"), sample("y")))]
    (group,) = await score(channel, batch, Context("run", 1, RewardSettings(), "nc"))
    assert [m.reward for m in group] == [-100.0, -100.0] and channel.submitted == []


async def test_trl_reward_function_maps_statuses() -> None:
    from bridges.trl_reward import PipelineReward

    reward = PipelineReward(
        BrokerSettings(), Topology(namespace="t"), node_class="nc", group_size=3
    )
    reward._producer = InstantChannel(judge)  # type: ignore[assignment]
    completions: list[Any] = [
        [{"role": "assistant", "content": fenced(KERNEL % "fast")}],
        fenced(KERNEL % "lost"),
        "nothing",
        fenced(KERNEL % "wrong"),
        fenced(KERNEL % "fast"),
        fenced(KERNEL % "fast"),
    ]
    logged: dict[str, float] = {}
    out = await reward(
        ["p"] * 6, completions, problem_id=["dgemm-256"] * 3 + ["dgemm-512"] * 3,
        log_metric=logged.__setitem__,
    )  # fmt: skip
    assert out == [3.5, None, -100.0, -10.0, 3.5, 3.5]
    assert logged["hpcq/ok_fraction"] == 3 / 6
    problems = {t.problem_id for t in reward._producer.submitted}  # type: ignore[attr-defined]
    assert problems == {"dgemm-256", "dgemm-512"}
