"""`hpcq producer --max-staleness 1` end to end: the bootstrap model, the real broker, a
consumer with the real engine. Groups are sampled a step ahead and trained one version
late; a producer killed with groups in flight resumes from its checkpoint, and the dead
run's late results are never trained on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hpcq.train import checkpoint, metrics

from .conftest import BrokerSpace, cli_parser, needs_torch
from .test_producer_e2e import producer_args

needs_torch()

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def test_async_steps_then_kill_and_resume(
    tiny_model: Path, space: BrokerSpace, tmp_path: Path
) -> None:
    await space.start_consumer()
    run_dir = tmp_path / "run"
    train_toml = tmp_path / "train.toml"
    train_toml.write_text("[loop]\ncheckpoint_every = 1\nmax_staleness = 1\n")

    def argv(steps: int) -> list[str]:
        return [*producer_args(tiny_model, space, run_dir, steps), "--config", str(train_toml)]

    args = cli_parser().parse_args(argv(3))
    assert await args.func(args) == 0
    rows = metrics.read(run_dir)
    assert [r["staleness"] for r in rows] == [{"0": 1}, {"1": 1}, {"1": 1}]
    assert [r["in_flight"] for r in rows] == [1, 1, 0]
    assert all(r["groups_stale"] == 0 and r["samples"] == 4 for r in rows)
    assert [r["policy_version"] for r in rows] == sorted(r["policy_version"] for r in rows)

    # Kill a producer once step 4 is logged: step 5's group is then being measured.
    args = cli_parser().parse_args(argv(8))
    job = asyncio.create_task(args.func(args))
    async with asyncio.timeout(600):
        while len(metrics.read(run_dir)) < 4 and not job.done():
            await asyncio.sleep(0.2)
    assert not job.done(), "the run must still be going"
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    done = max(int(p.name.split("-")[1]) for p in checkpoint.checkpoints(run_dir))
    assert done >= 4

    args = cli_parser().parse_args(argv(done + 2))
    assert await args.func(args) == 0
    rows = metrics.read(run_dir)
    assert [r["step"] for r in rows] == list(range(1, done + 3))
    resumed = rows[done:]
    # The resumed run starts empty: its first step takes a group of its own, sampled at
    # the restored version (staleness 0), never one of the dead run's.
    assert resumed[0]["staleness"] == {"0": 1}
    assert all(r["groups_stale"] == 0 for r in resumed)
