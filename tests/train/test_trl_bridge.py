"""The TRL bridge: the tie rule as TRL sees it, rank-unique producers, prompts that
follow the SQD stage, members judged under what they were asked, and TRL's
GRPOTrainer for two steps of the bootstrap model through `bridges.trl_train`, rewards
measured by a real consumer through the real broker."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from bridges.bootstrap_variants import Variant
from bridges.trl_reward import PipelineReward, tie_masked
from hpcq.errors import ConfigError, InputError
from hpcq.outcome import Constraints
from hpcq.pipeline.broker import BrokerSettings
from hpcq.pipeline.topology import Topology
from hpcq.train.advantages import AdvantageSettings
from hpcq.train.metrics import StepMetrics
from hpcq.train.prompts import PromptStage, fenced

from .conftest import BrokerSpace

OPENMP = Variant("ijk", openmp=True)  # declares exactly one technique: openmp


def needs(*modules: str) -> pytest.MarkDecorator:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs the ml extra ({missing} missing)")


def offline_reward(group_size: int = 2, rank: int = 0) -> PipelineReward:
    """Enough to test what happens before the broker is reached."""
    return PipelineReward(
        BrokerSettings(url="amqp://guest:guest@127.0.0.1:1/"),
        Topology(namespace="t-offline"),
        node_class="x",
        group_size=group_size,
        rank=rank,
    )


def test_tie_masked_hides_groups_our_rule_drops() -> None:
    s = AdvantageSettings(tie_rtol=0.02)
    groups: list[list[float | None]] = [
        [10.0, 10.1],  # 1% apart: timing jitter, a tie
        [1.0, 9.0],  # a real difference
        [None, 3.0],  # one scored member: no baseline
        [-40.0, -40.0],  # two compile errors
        [None, 5.0, 8.0],  # left out member, the rest differ
    ]
    out, reasons = tie_masked(groups, s)
    assert reasons == ["tie", "", "too_few", "tie", ""]
    assert out == [None, None, 1.0, 9.0, None, None, None, None, None, 5.0, 8.0]
    # With no tolerance the 1% spread counts.
    out, reasons = tie_masked(groups[:1], AdvantageSettings(tie_rtol=0.0))
    assert (out, reasons) == ([10.0, 10.1], [""])


def test_each_process_has_its_own_results_queue() -> None:
    names = {offline_reward(rank=r).producer_name for r in range(4)}
    assert names == {"trl-r0", "trl-r1", "trl-r2", "trl-r3"}
    with pytest.raises(ConfigError):
        offline_reward(group_size=1)


async def test_groups_must_be_whole_and_asked_alike() -> None:
    reward = offline_reward(group_size=2)
    with pytest.raises(ConfigError, match="multiple of num_generations"):
        await reward([[]] * 3, ["a", "b", "c"])
    with pytest.raises(InputError, match="one prompt per group"):
        await reward([[]] * 2, ["a", "b"], forbidden=[["openmp"], []], required=[[], []])
    with pytest.raises(InputError, match="one prompt per group"):
        await reward([[]] * 2, ["a", "b"], problem_id=["dgemm-256", "dgemm-512"])
    assert reward.scored == []


class MovingStages:
    """A StageSource whose stage changes when the test says so (as `hpcq sqd` would)."""

    def __init__(self) -> None:
        self.stage = PromptStage()
        self.reads = 0

    def stage_for(self, problem_id: str) -> PromptStage:
        self.reads += 1
        return self.stage


@needs("datasets")
def test_prompts_follow_the_current_stage() -> None:
    from bridges.trl_dataset import staged_prompts
    from hpcq.eval.problems import load_problem

    stages = MovingStages()
    data = staged_prompts([load_problem("dgemm-256"), load_problem("dgemm-512")], stages, rows=4)
    assert len(data) == 4
    first = data.__getitems__([0, 0, 1, 1])  # how the trainer's sampler fetches a batch
    assert [r["problem_id"] for r in first] == ["dgemm-256"] * 2 + ["dgemm-512"] * 2
    assert all(r["forbidden"] == [] and r["stage"] == "default" for r in first)
    assert stages.reads == 2  # once per problem and batch: a group never mixes stages
    stages.stage = PromptStage(
        "no-omp", Constraints(forbidden=frozenset({"openmp"})), "No threads."
    )
    later = data.__getitems__([2, 2])
    assert all(r["forbidden"] == ["openmp"] and r["stage"] == "no-omp" for r in later)
    user = later[0]["prompt"][1]["content"]
    assert "Forbidden techniques: openmp." in user and "No threads." in user
    assert first[0]["prompt"][1]["content"] != user


@needs("datasets")
def test_prompts_read_the_stage_client() -> None:
    from bridges.trl_dataset import staged_prompts
    from hpcq.eval.problems import default_kernels_dir, load_problem
    from hpcq.pipeline.messages import StageUpdate
    from hpcq.sqd.client import StageClient
    from hpcq.sqd.stages import default_config_path, load_config

    config = load_config(default_config_path(default_kernels_dir()))
    client = StageClient(BrokerSettings(), "t-offline", config)  # never started: apply()
    data = staged_prompts([load_problem("dgemm-256")], client, rows=2)
    assert data[0]["stage"] == config.first_stage("dgemm-256").name
    second = config.schedule_for("dgemm-256").listed(1)
    assert second is not None
    client.apply(StageUpdate("r", "dgemm-256", 1, second.name, second.constraints))
    row = data[1]
    assert row["stage"] == second.name
    assert set(row["forbidden"]) == set(second.constraints.forbidden)
    assert set(row["required"]) == set(second.constraints.required)


@pytest.mark.broker
@pytest.mark.slow
async def test_reward_function_alone(space: BrokerSpace) -> None:
    from pipeline.helpers import NODE_CLASS, fast_url

    await space.start_consumer()
    reward = PipelineReward(
        BrokerSettings(url=fast_url()),
        space.topology,
        node_class=NODE_CLASS,
        group_size=2,
        producer_name="trl-alone",
        rank=1,
    )
    space.producers.append(reward.producer_name)
    good, omp = fenced(Variant("ikj").source()), fenced(OPENMP.source())
    completions: list[Any] = [
        [{"role": "assistant", "content": good}],  # group 1: a kernel and a violation
        "no code at all",
        "no code",  # group 2: two violations tie at -100
        "none either",
        omp,  # group 3: asked without threads, answered with them
        omp,
    ]
    try:
        logged: dict[str, float] = {}
        out = await reward(
            [[]] * 6,
            completions,
            forbidden=[[], [], [], [], ["openmp"], ["openmp"]],
            required=[[]] * 6,
            log_metric=logged.__setitem__,
        )
    finally:
        await reward.close()
    assert reward.producer_name == "trl-alone-r1"
    assert out[0] is not None and out[0] > 0  # GFLOPS
    assert out[1] == -100.0  # format violation, judged without a CPU node
    assert out[2:] == [None] * 4  # tied groups: TRL gives them zero advantages
    groups = reward.take_scored()
    assert [g.dropped for g in groups] == ["", "tie", "tie"]
    assert [m.status for m in groups[2].members] == ["violation", "violation"]
    assert "openmp" in groups[2].members[0].message
    assert [m.reward for m in groups[1].members] == [-100.0, -100.0]  # kept for the metrics
    assert logged == {"hpcq/ok_fraction": 1 / 6, "hpcq/groups_dropped": 2.0}
    assert reward.take_scored() == []


@needs("torch", "trl", "datasets")
def test_trl_leaves_none_rewards_out(tiny_model: Path, tmp_path: Path) -> None:
    """What the tie rule relies on, checked on the installed TRL: a group whose rewards
    are all None gets zero advantages; a None member is out of its group's baseline."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from bridges.hf_policy import load_tokenizer

    def reward(completions: list[Any], **_: Any) -> list[float | None]:
        return [None, None, None, None, 1.0, 3.0, None, 8.0][: len(completions)]

    config = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        max_steps=1,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        shuffle_dataset=False,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        reward_funcs=[reward],
        args=config,
        train_dataset=Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}]),
        processing_class=load_tokenizer(str(tiny_model)),
    )
    trainer.train()
    advantages = list(trainer._logs["advantages"])
    assert advantages[:4] == [0.0] * 4
    # Scored 1, 3, 8 (mean 4, sample std 3.6): the None member is not counted as 0.
    assert advantages[4] == pytest.approx(-3 / 3.6056, rel=1e-3)
    assert advantages[6] == 0.0 and advantages[7] == pytest.approx(4 / 3.6056, rel=1e-3)


@pytest.mark.broker
@pytest.mark.slow
@needs("torch", "trl", "datasets")
async def test_trl_train_two_steps(tiny_model: Path, space: BrokerSpace, tmp_path: Path) -> None:
    """`python -m bridges.trl_train` in one process: the run directory gets what
    `hpcq producer`'s gets, in the same format."""
    from pipeline.helpers import NODE_CLASS, fast_url

    from bridges import trl_train

    await space.start_consumer()
    run_dir = tmp_path / "trl-run"
    space.producers.append("trl-t-r0")
    argv = ["--namespace", space.name, "--amqp-url", fast_url(), "--run-dir", str(run_dir)]
    argv += ["--model", str(tiny_model), "--node-class", NODE_CLASS, "--name", "trl-t"]
    argv += ["--steps", "2", "--group-size", "4", "--prompts-per-step", "2"]
    argv += ["--max-new-tokens", "120"]
    assert trl_train.main(argv) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert set(rows[0]) == {f.name for f in dataclasses.fields(StepMetrics)}
    for r in rows:
        assert r["samples"] == 8 and r["groups"] == 2
        assert sum(r["status_fractions"].values()) == pytest.approx(1.0)
        assert r["reward_mean"] is not None and r["loss"] == r["loss"]
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# Run trl-run") and "in 2 steps" in report
    assert "Trained with TRL's GRPOTrainer" in report
    recorded = json.loads((run_dir / "config.json").read_text())
    assert recorded["train"]["loop"]["group_size"] == 4
    assert (run_dir / "trl" / "checkpoint-2" / "trainer_state.json").is_file()
    # A crash after a line of step 3 was written: the rerun resumes from checkpoint 2 and
    # replaces that line instead of counting the step twice.
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({**rows[1], "step": 3, "samples": -1}) + "\n")
    assert trl_train.main([*argv, "--steps", "3"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["samples"]) for r in rows] == [(1, 8), (2, 8), (3, 8)]


def test_settings_trl_does_not_honour_are_named() -> None:
    from bridges.trl_train import unmapped
    from hpcq.train.settings import load_train_settings

    assert unmapped(load_train_settings(None)) == []
    notes = unmapped(
        load_train_settings(None, policy={"logprob_chunk_tokens": 64}, loop={"on_tie": "resample"})
    )
    assert any("logprob_chunk_tokens" in n for n in notes) and any("resample" in n for n in notes)
