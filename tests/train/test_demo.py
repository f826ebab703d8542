"""`make demo`'s program with two steps: it writes the report and the plot, and leaves
no process running behind it."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import needs_torch

needs_torch()

pytestmark = [pytest.mark.broker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_demo_two_steps_reports_and_cleans_up(tiny_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "bridges.demo", "--steps", "2", "--model", str(tiny_model)]
    cmd += ["--runs-dir", str(tmp_path), "--group-size", "4", "--prompts-per-step", "1"]
    cmd += ["--max-new-tokens", "160"]
    out = subprocess.run(
        cmd,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    last = json.loads(out.stdout.strip().splitlines()[-1])
    run_dir = Path(last["run_dir"])
    assert last["steps"] == 2 and last["pids"]
    assert not any(alive(pid) for pid in last["pids"])
    report = (run_dir / "report.md").read_text()
    assert "over the first 1 step(s)" in report and "in 2 steps" in report
    assert "naive ijk kernel" in report and "numpy" in report
    assert "its median GFLOPS (shaping = 'gflops')" in report  # the reward it trained on
    assert (run_dir / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert "step    2/2" in out.stdout


def test_demo_ctrl_c_stops_what_it_started(tiny_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "bridges.demo", "--steps", "50", "--model", str(tiny_model)]
    cmd += ["--runs-dir", str(tmp_path), "--group-size", "4", "--prompts-per-step", "1"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("step    1/"):
                break
    else:
        proc.kill()
        raise AssertionError(f"no step within 300 s: {lines}")
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130
    last = json.loads(rest.strip().splitlines()[-1])
    assert last["pids"] and not any(alive(pid) for pid in last["pids"])
    report = (Path(last["run_dir"]) / "report.md").read_text()
    assert "Interrupted before the last step." in report
