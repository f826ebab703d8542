"""TRL's GRPOTrainer with hpcq's reward function: two steps of the bootstrap model,
rewards measured by a real consumer through the real broker."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

import pytest

from hpcq.problems import load_problem
from hpcq.prompts import DEFAULT_STAGE, build_prompt

from .conftest import BrokerSpace, needs_torch

needs_torch()
pytest.importorskip("trl", reason="needs trl (the ml extra)")
pytest.importorskip("datasets", reason="needs datasets (installed with trl)")

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def chat_prompt() -> list[dict[str, str]]:
    return [dataclasses.asdict(m) for m in build_prompt(load_problem("dgemm-256"), DEFAULT_STAGE)]


async def test_reward_function_alone(tiny_model: Path, space: BrokerSpace) -> None:
    from pipeline.helpers import NODE_CLASS, fast_url

    from bridges.trl_reward import PipelineReward
    from hpcq.broker import BrokerSettings

    await space.start_consumer()
    space.producers.append("trl-alone")
    reward = PipelineReward(
        BrokerSettings(url=fast_url()),
        space.topology,
        node_class=NODE_CLASS,
        producer_name="trl-alone",
    )
    from hpcq.prompts import fenced
    from hpcq.variants import Variant

    good = fenced(Variant("ikj").source())
    completions = [[{"role": "assistant", "content": good}], "no code at all"]
    try:
        logged: dict[str, float] = {}
        out = await reward([chat_prompt()] * 2, completions, log_metric=logged.__setitem__)
    finally:
        await reward.close()
    assert out[0] is not None and out[0] > 0  # GFLOPS
    assert out[1] == -100.0  # format violation, judged without a CPU node
    assert logged["hpcq/ok_fraction"] == 0.5


def test_grpo_trainer_two_steps(tiny_model: Path, space: BrokerSpace, tmp_path: Path) -> None:
    from datasets import Dataset
    from pipeline.helpers import NODE_CLASS, fast_url
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from bridges.hf_policy import load_tokenizer
    from bridges.trl_reward import PipelineReward
    from hpcq.broker import BrokerSettings

    asyncio.run(space.start_consumer())
    space.producers.append("trl-test")
    reward = PipelineReward(
        BrokerSettings(url=fast_url()),
        space.topology,
        node_class=NODE_CLASS,
        producer_name="trl-test",
    )
    data = Dataset.from_list([{"prompt": chat_prompt(), "problem_id": "dgemm-256"}] * 8)
    config = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=160,
        learning_rate=1e-3,
        beta=0.0,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        top_k=0,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        reward_funcs=[reward],
        args=config,
        train_dataset=data,
        processing_class=load_tokenizer(str(tiny_model)),
    )
    try:
        trainer.train()
    finally:  # the producer's connection lives on TRL's event loop thread: close it there
        asyncio.run_coroutine_threadsafe(reward.close(), trainer.async_loop).result(30)
    assert trainer.state.global_step == 2
    assert reward.calls == 2
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logged) == 2
    # NaN when no member of a step was scored: each step must have had some.
    assert all(math.isfinite(h["rewards/hpcq_gflops/mean"]) for h in logged)
