"""Every pipeline entry point, run as people run it (`python -m hpcq ...`), tiny budget."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcq.eval.settings import EngineSettings
from hpcq.outcome import EvalRequest, Status

from .conftest import Namespace
from .helpers import NODE_CLASS, REPO, fast_url, queue_counts, source, wait_consumers

pytestmark = pytest.mark.broker
CORPUS = REPO / "tests" / "corpus" / "honest"


async def hpcq(ns: Namespace, *args: str, timeout_s: float = 60) -> tuple[int, str, str]:
    """Run `python -m hpcq COMMAND --namespace NS ...`; returns (code, stdout, stderr)."""
    command, *rest = args
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hpcq",
        command,
        "--namespace",
        ns.name,
        "--amqp-url",
        fast_url(),
        *rest,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def kernels(tmp: Path, *gflops: float) -> list[str]:
    paths = []
    for i, g in enumerate(gflops):
        path = tmp / f"k{i}.c"
        path.write_text(source(f"gflops={g}"))
        paths.append(str(path))
    return paths


async def test_submit_status_replay(ns: Namespace, consumers_log: None) -> None:
    ns.consumer().start()
    await wait_consumers(ns.task_queue(), 1)
    files = kernels(ns.tmp, 1.5, 2.5, 3.5)
    code, out, err = await hpcq(ns, "submit", *files, "--json", "--forbid", "openmp")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["file"] for x in lines] == files
    assert [x["gflops"] for x in lines] == [1.5, 2.5, 3.5]
    for line in lines:
        assert line["status"] == "ok" and line["reward"] == line["gflops"]
        assert line["task_id"] and "/slot0[" in line["consumer"]

    code, out, err = await hpcq(ns, "status", "--json", "--listen-s", "1.5")
    assert code == 0, err
    status = json.loads(out)
    [queue] = status["task_queues"]
    assert queue["consumers"] == 1 and queue["ready"] == 0
    assert status["results_in_window"] == 3 and status["tasks_in_window"] == 3
    assert [c["node_class"] for c in status["consumers"]] == [NODE_CLASS]

    dump = ns.tmp / "replay.jsonl"
    code, out, err = await hpcq(ns, "replay", "--from", "first", "--to", str(dump), "--idle-s", "1")
    assert code == 0, err
    assert json.loads(out)["tasks"] == 3 and json.loads(out)["results"] == 3
    records = [json.loads(line) for line in dump.read_text().splitlines()]
    assert sorted(r["kind"] for r in records) == ["result"] * 3 + ["task"] * 3
    assert {r["source"] for r in records if r["kind"] == "task"} == {
        Path(f).read_text() for f in files
    }

    # re-benchmark the same kernels on another node class: they wait in its queue
    other = "aarch64-sve"
    ns.node_classes.add(other)
    code, out, err = await hpcq(ns, "replay", "--republish", "--node-class", other, "--idle-s", "1")
    assert code == 0, err
    assert json.loads(out)["republished"] == 3
    code, out, err = await hpcq(ns, "status", "--json", "--node-class", other)
    assert json.loads(out)["task_queues"][0]["ready"] == 3


async def test_submit_reports_left_out(ns: Namespace, consumers_log: None) -> None:
    ns.consumer().start()
    await wait_consumers(ns.task_queue(), 1)
    bad = ns.tmp / "broken_node.c"
    bad.write_text(source("raise"))
    code, out, _ = await hpcq(ns, "submit", str(bad), "--json", "--attempts", "2")
    assert code == 3
    line = json.loads(out)
    assert line["status"] == "left_out" and "infra_error" in line["message"]


async def test_submit_rejects_bad_input(ns: Namespace) -> None:
    code, _, err = await hpcq(ns, "submit", str(ns.tmp / "missing.c"))
    assert code == 2 and "no such file" in err


async def test_submit_checks_the_problem_before_publishing(ns: Namespace) -> None:
    files = kernels(ns.tmp, 1.0)
    code, out, err = await hpcq(ns, "submit", *files, "--problem", "dgemm-7")
    assert code == 2 and out == ""
    [line] = err.splitlines()  # one line, no traceback
    assert line.startswith("hpcq: error: unknown problem id 'dgemm-7'; known problems:"), err
    assert "dgemm-256" in line
    # nothing reached the broker: not even the queues were declared
    assert await queue_counts(ns.task_queue()) is None
    assert await queue_counts(ns.topology.log_stream) is None


@pytest.mark.slow
async def test_real_engine_through_the_queue(
    ns: Namespace, consumers_log: None, engine_settings: EngineSettings
) -> None:
    """The real engine behind the queue: the same verdicts as evaluating directly. An
    engine that cannot be imported, or a sandbox that answers infra_error, fails here."""
    from hpcq.eval.engine import Engine

    files = sorted(CORPUS.glob("*.c"))[:3]
    assert files, f"no kernels under {CORPUS}"
    direct = [
        await Engine(engine_settings).evaluate(EvalRequest("dgemm-256", f.read_text(), cores=(0,)))
        for f in files
    ]
    assert [r.status for r in direct] == [Status.OK] * len(files), [r.message for r in direct]
    cache = ns.tmp / "consumer-cache"  # no cached verdicts: measured afresh
    cache.mkdir()
    shutil.copy(engine_settings.cache_dir / "peak.json", cache / "peak.json")
    ns.consumer(scripted=False, env={"HPCQ_CACHE_DIR": str(cache)}).start()
    await wait_consumers(ns.task_queue(), 1, timeout_s=30)
    code, out, err = await hpcq(ns, "submit", *map(str, files), "--json", timeout_s=300)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["status"] for x in lines] == ["ok"] * len(files), lines
    assert all(x["gflops"] > 0 and not x["cached"] for x in lines), lines
    assert [x["techniques"] for x in lines] == [list(r.techniques) for r in direct]
