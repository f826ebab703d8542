"""`hpcq producer` end to end: the bootstrap model, the real broker, a consumer with the
real engine (compile, sandbox, verify, time). Two steps, then a resume to a third."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcq.errors import ConfigError
from hpcq.eval.settings import RewardSettings
from hpcq.train import checkpoint, metrics
from hpcq.train.settings import recorded_reward

from .conftest import BrokerSpace, cli_parser, needs_torch

needs_torch()

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def producer_args(model: Path, space: BrokerSpace, run_dir: Path, steps: int) -> list[str]:
    from pipeline.helpers import NODE_CLASS, fast_url

    name = f"grpo-{run_dir.name}"
    if name not in space.producers:
        space.producers.append(name)
    return [
        "producer",
        "--model", str(model),
        "--steps", str(steps),
        "--group-size", "4",
        "--prompts-per-step", "1",
        "--run-dir", str(run_dir),
        "--namespace", space.name,
        "--amqp-url", fast_url(),
        "--node-class", NODE_CLASS,
        "--max-new-tokens", "160",
        "--threads", "1",
        "--name", name,
    ]  # fmt: skip


async def test_two_steps_then_resume(tiny_model: Path, space: BrokerSpace, tmp_path: Path) -> None:
    await space.start_consumer()
    run_dir = tmp_path / "run"
    train_toml = tmp_path / "train.toml"
    train_toml.write_text("[reward]\ncompile_error = -41\nwrong_result = -11\n")
    argv = [*producer_args(tiny_model, space, run_dir, 2), "--config", str(train_toml)]
    args = cli_parser().parse_args(argv)
    assert await args.func(args) == 0
    rows = metrics.read(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["samples"] == 4 and r["groups"] == 1
        assert sum(r["status_fractions"].values()) == pytest.approx(1.0)
        assert r["time_generate_s"] > 0 and r["time_rewards_s"] > 0
    judged = [r for r in rows if r["status_fractions"]["violation"] < 1.0]
    assert judged, "no completion reached a CPU node"
    assert any(r["eval_busy_s"] > 0 for r in judged)
    assert [p.name for p in checkpoint.checkpoints(run_dir)] == ["step-000002"]
    want = RewardSettings(compile_error=-41.0, wrong_result=-11.0)
    assert recorded_reward(run_dir) == want  # config.json records what the run trains on

    # Resuming with another reward is refused before anything runs.
    args = cli_parser().parse_args(producer_args(tiny_model, space, run_dir, 3))
    with pytest.raises(ConfigError, match="resume with the recorded"):
        await args.func(args)

    # A restarted producer continues from its checkpoint instead of starting over.
    argv = [*producer_args(tiny_model, space, run_dir, 3), "--config", str(train_toml)]
    args = cli_parser().parse_args(argv)
    assert await args.func(args) == 0
    rows = metrics.read(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    # The resumed policy starts at the checkpoint's version; step 3 adds one if it updated.
    updated = rows[2]["groups_dropped"] < rows[2]["groups"]
    assert rows[2]["policy_version"] == rows[1]["policy_version"] + updated


async def test_one_step_under_sqd_stages(
    tiny_model: Path, space: BrokerSpace, tmp_path: Path
) -> None:
    """With --stages sqd the prompts follow the SQD config's first stage (no controller
    has announced anything yet), whose constraints the consumer enforces."""
    await space.start_consumer()
    run_dir = tmp_path / "sqd"
    argv = [*producer_args(tiny_model, space, run_dir, 1), "--stages", "sqd"]
    args = cli_parser().parse_args(argv)
    assert await args.func(args) == 0
    (row,) = metrics.read(run_dir)
    assert row["samples"] == 4 and sum(row["status_fractions"].values()) == pytest.approx(1.0)
