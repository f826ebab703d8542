"""TRL's GRPOTrainer in two CPU processes (torchrun, gloo) for two steps: every process
calls the reward on its own slice, so each needs its own results queue, and the run's
metrics must hold every process's groups. A real consumer measures the kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BrokerSpace, needs_torch

needs_torch()
pytest.importorskip("trl", reason="needs trl (the ml extra)")

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def test_two_processes_two_steps(
    tiny_model: Path, space: BrokerSpace, tmp_path: Path
) -> None:
    from pipeline.helpers import NODE_CLASS, REPO, fast_url, free_port, queue_counts

    await space.start_consumer()
    run_dir = tmp_path / "run"
    names = ["trl-mp-r0", "trl-mp-r1"]
    space.producers += names
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launch += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    args = ["-m", "bridges.trl_train", "--namespace", space.name, "--amqp-url", fast_url()]
    args += ["--run-dir", str(run_dir), "--model", str(tiny_model), "--name", "trl-mp"]
    args += ["--node-class", NODE_CLASS, "--steps", "2", "--group-size", "2"]
    args += ["--prompts-per-step", "2", "--max-new-tokens", "100"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # Both processes sharing one results queue would never see their groups complete:
    # the reward would give up after reward_wait_s, so bound it well below the timeout.
    config = tmp_path / "train.toml"
    config.write_text("[loop]\nreward_wait_s = 120.0\n")
    args += ["--config", str(config)]
    done = subprocess.run(
        [*launch, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # written once, by the main process
    for r in rows:
        # One group of 2 per process and step: both processes' members are counted.
        assert (r["groups"], r["samples"]) == (2, 4)
        assert sum(r["status_fractions"].values()) == pytest.approx(1.0)
    for name in names:  # each process had its own results queue
        assert await queue_counts(space.topology.results_queue(name)) is not None
    assert "in 2 steps" in (run_dir / "report.md").read_text()
