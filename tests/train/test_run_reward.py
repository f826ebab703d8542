"""The reward a run trains on is the run's: computed on the producer from the raw
measurement with the run's `[reward]`, whatever the consumer's own TOML put on the
result; carried on the wire as the slot's peak; recorded in the run directory."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import msgpack
import pytest

from bridges.cli_train import check_engine_reward
from hpcq.errors import ConfigError, DecodeError
from hpcq.eval.problems import load_problem
from hpcq.eval.settings import RewardSettings
from hpcq.outcome import Constraints, EvalResult, Status
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings
from hpcq.pipeline.messages import Result, Task
from hpcq.pipeline.topology import Topology
from hpcq.train import loop as grpo
from hpcq.train import metrics
from hpcq.train import report as run_report
from hpcq.train.advantages import AdvantageSettings
from hpcq.train.policy import Sample
from hpcq.train.prompts import FixedStages, fenced
from hpcq.train.rollout import LEFT_OUT, Context, Prompted, score
from hpcq.train.settings import (
    LoopSettings,
    TrainSettings,
    load_train_settings,
    record_run,
    recorded_reward,
)

from .fakes import BanditPolicy, InstantChannel, ok

KERNEL = "void dgemm(int M, int N, int K, const double *A, const double *B, double *C) { /* %s */ }"
FAST, BAD, NO_CODE = fenced(KERNEL % "fast"), fenced(KERNEL % "bad"), "no code here"

# The run's reward: fraction of the slot's peak, tiers of its own.
RUN_REWARD = RewardSettings(shaping="fraction_of_peak", compile_error=-7.0, violation=-55.0)


def consumer_judge(task: Task) -> EvalResult | None:
    """A consumer whose TOML shapes by GFLOPS with the default tiers: its `reward`
    figures (20.0, -40.0) are not what the run above must train on."""
    if "fast" in task.source:
        return ok(20.0, peak_gflops=40.0, reward=20.0)
    return EvalResult(Status.COMPILE_ERROR, -40.0, message="error")


def sample(text: str) -> Sample:
    return Sample((1,), (2,), (-0.1,), text, False, 0)


async def test_grpo_loop_trains_on_the_runs_reward_not_the_consumers(tmp_path: Path) -> None:
    policy = BanditPolicy([FAST, BAD, NO_CODE])
    settings = TrainSettings(
        loop=LoopSettings(steps=1, group_size=6, prompts_per_step=2),
        advantage=AdvantageSettings(scale="none"),
        reward=RUN_REWARD,
    )
    run = grpo.Run(
        policy=policy,
        channel=InstantChannel(consumer_judge),
        problems=(load_problem("dgemm-256"),),
        stages=FixedStages(),
        settings=settings,
        run_dir=tmp_path,
        run_id="t",
        node_class="test",
    )
    await grpo.train(run)
    run_value = {0: 20.0 / 40.0, 1: -7.0, 2: -55.0}  # FAST, BAD, NO_CODE under RUN_REWARD
    (groups,) = policy.generated
    rewards = [[run_value[s.completion_ids[0]] for s in g] for g in groups]
    (row,) = metrics.read(tmp_path)
    assert row["reward_mean"] == pytest.approx(statistics.fmean(r for g in rewards for r in g))
    # scale = "none": each advantage is the run's reward minus its group's mean.
    want = {
        id(s): r - statistics.fmean(rs)
        for g, rs in zip(groups, rewards, strict=True)
        for s, r in zip(g, rs, strict=True)
    }
    (batch,) = policy.updates
    assert batch
    for scored in batch:
        assert scored.advantage == pytest.approx(want[id(scored.sample)], abs=1e-9)


async def test_trl_bridge_returns_the_runs_reward_not_the_consumers() -> None:
    from bridges.trl_reward import PipelineReward

    reward = PipelineReward(
        BrokerSettings(), Topology(namespace="t"), node_class="nc", rewards=RUN_REWARD, group_size=3
    )
    reward._producer = InstantChannel(consumer_judge)  # type: ignore[assignment]
    out = await reward(["p"] * 3, [FAST, BAD, NO_CODE])
    assert out == [pytest.approx(0.5), -7.0, -55.0]


async def test_fraction_of_peak_divides_by_the_results_peak() -> None:
    peaks = {"a": 10.0, "b": 80.0}

    def judge(task: Task) -> EvalResult:
        name = task.source.split("/* ")[1][0]
        return ok(20.0, peak_gflops=peaks.get(name), reward=999.0)

    texts = [fenced(KERNEL % "a"), fenced(KERNEL % "b"), fenced(KERNEL % "c")]
    batch = [Prompted(load_problem("dgemm-256"), Constraints(), tuple(map(sample, texts)))]
    (group,) = await score(InstantChannel(judge), batch, Context("r", 1, RUN_REWARD, "nc"))
    assert [m.reward for m in group] == [pytest.approx(2.0), pytest.approx(0.25), None]
    # A result without the slot's peak (an older consumer) cannot be scored: left out.
    assert group[2].status == LEFT_OUT and "peak" in group[2].message


def result_with(outcome: EvalResult) -> Result:
    return Result("t1", outcome, "host:1", 0, (0, 1), node_class="nc", member=3)


def test_codec_round_trip_with_and_without_the_peak() -> None:
    with_peak = result_with(ok(30.0, peak_gflops=123.5, reward=30.0))
    assert codec.decode_result(codec.encode(with_peak)) == with_peak
    without = result_with(EvalResult(Status.WRONG_RESULT, -10.0))
    assert codec.decode_result(codec.encode(without)).outcome.peak_gflops is None


def wire_result(**outcome_changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = msgpack.unpackb(codec.encode(result_with(ok(30.0, 60.0))))
    body["o"].update(outcome_changes)
    return body


def test_a_message_from_before_the_field_still_decodes() -> None:
    body = wire_result()
    del body["o"]["pk"]  # what a consumer older than peak_gflops sends
    decoded = codec.decode_result(msgpack.packb(body))
    assert decoded.outcome.peak_gflops is None and decoded.outcome.gflops == 30.0


@pytest.mark.parametrize("bad", [-1.0, 0.0, "fast", float("inf")])
def test_a_bad_peak_is_refused(bad: object) -> None:
    with pytest.raises(DecodeError, match=r"invalid: .*pk"):
        codec.decode_result(msgpack.packb(wire_result(pk=bad)))


def test_the_run_dir_records_the_reward(tmp_path: Path) -> None:
    toml = tmp_path / "train.toml"
    toml.write_text('[reward]\nshaping = "log_speedup"\nbaseline_gflops = 2.5\ntimeout = -33\n')
    train = load_train_settings(toml)
    assert train.reward == RewardSettings(shaping="log_speedup", baseline_gflops=2.5, timeout=-33)
    path = record_run(tmp_path, train, ["dgemm-256"], resuming=False)
    assert json.loads(path.read_text())["train"]["reward"]["baseline_gflops"] == 2.5
    assert recorded_reward(tmp_path) == train.reward
    report = run_report.write(tmp_path, "r", [], run_report.Baselines()).read_text()
    assert "ln(GFLOPS / 2.5 GFLOPS)" in report and "-33 timeout" in report
    assert "train.reward" in report


def test_a_resume_with_another_reward_is_refused(tmp_path: Path) -> None:
    record_run(tmp_path, TrainSettings(reward=RUN_REWARD), [], resuming=False)
    with pytest.raises(ConfigError, match="resume with the recorded"):
        record_run(tmp_path, TrainSettings(), [], resuming=True)
    record_run(tmp_path, TrainSettings(reward=RUN_REWARD), [], resuming=True)  # same: fine
    record_run(tmp_path, TrainSettings(), [], resuming=False)  # a fresh start may change it
    assert recorded_reward(tmp_path) == RewardSettings()


def test_report_without_a_recorded_reward_says_so(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"train": {"policy": {}}}')
    assert recorded_reward(tmp_path) is None
    report = run_report.write(tmp_path, "r", [], run_report.Baselines()).read_text()
    assert "reward settings are not recorded" in report


def test_train_reward_settings_fail_fast(tmp_path: Path) -> None:
    toml = tmp_path / "train.toml"
    toml.write_text('[reward]\nshaping = "log_speedup"\n')
    with pytest.raises(ConfigError, match=r"needs reward\.baseline_gflops"):
        load_train_settings(toml)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[reward\]: shape"):
        load_train_settings(None, reward={"shape": "gflops"})


def test_an_engine_reward_that_differs_from_the_runs_is_refused() -> None:
    check_engine_reward(RewardSettings(), TrainSettings(reward=RUN_REWARD))  # untouched: fine
    check_engine_reward(RUN_REWARD, TrainSettings(reward=RUN_REWARD))  # the same: fine
    with pytest.raises(ConfigError, match="move the section there"):
        check_engine_reward(RUN_REWARD, TrainSettings())
