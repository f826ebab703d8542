"""`hpcq evaluate` end to end: the small model, a one-step training run's checkpoint, the
real broker and a consumer with the real engine, on the held-out suite with tiny K."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from train.conftest import BrokerSpace, cli_parser, needs_torch

from hpcq.train import checkpoint

needs_torch()

pytestmark = [pytest.mark.broker, pytest.mark.slow]

K = 2


def broker_args(space: BrokerSpace, name: str) -> list[str]:
    from pipeline.helpers import NODE_CLASS, fast_url

    space.producers.append(name)
    return ["--namespace", space.name, "--amqp-url", fast_url(), "--node-class", NODE_CLASS]


async def train_one_step(model: Path, space: BrokerSpace, run_dir: Path) -> None:
    argv = ["producer", "--model", str(model), "--steps", "1", "--group-size", "4"]
    argv += ["--prompts-per-step", "1", "--run-dir", str(run_dir), "--max-new-tokens", "160"]
    argv += ["--threads", "1", "--name", f"grpo-{space.name}"]
    args = cli_parser().parse_args([*argv, *broker_args(space, f"grpo-{space.name}")])
    assert await args.func(args) == 0
    assert checkpoint.checkpoints(run_dir)


async def test_evaluate_models_on_the_held_out_suite(
    tiny_model: Path, space: BrokerSpace, tmp_path: Path
) -> None:
    from pipeline.helpers import NODE_CLASS

    await space.start_consumer()
    run_dir = tmp_path / "run"
    await train_one_step(tiny_model, space, run_dir)
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", f"base={tiny_model}", "--model", f"same={tiny_model}"]
    argv += ["--model", f"trained={run_dir}", "--suite", "held-out", "-k", str(K)]
    argv += ["--out", str(out), "--max-new-tokens", "160", "--threads", "1", "--json"]
    argv += ["--name", f"eval-{space.name}", "--wait-s", "600"]
    args = cli_parser().parse_args([*argv, *broker_args(space, f"eval-{space.name}")])
    assert await args.func(args) == 0

    data: dict[str, Any] = json.loads((out / "evaluation.json").read_text())
    problems = ["dgemm-255", "dgemm-1000x300x700", "dgemm-257x1031x96"]
    assert data["models"] == ["base", "same", "trained"] and data["problems"] == problems
    assert data["meta"]["node_classes"] == [NODE_CLASS] and data["meta"]["compiler"]
    samples = data["samples"]
    assert len(samples) == 3 * len(problems) * K
    by = {(s["model"], s["problem_id"], s["index"]): s for s in samples}
    judged_by_cluster = [s for s in samples if s["extracted"]]
    assert judged_by_cluster, "no completion reached a consumer"
    for s in samples:
        if s["status"] == "ok":
            assert s["gflops"] > 0 and s["cv"] is not None and s["peak_gflops"] > 0
            assert s["node_class"] == NODE_CLASS
    # The same weights, prompts and seed give the same completions and the same verdicts.
    for p in problems:
        for i in range(K):
            a, b = by["base", p, i], by["same", p, i]
            assert (a["source"], a["status"]) == (b["source"], b["status"])
    same = next(c for c in data["comparisons"] if c["b"] == "same")
    for metric in ("compiles", "pass@1", "pass@k"):
        d = same["differences"][metric]
        assert d["mean"] == 0.0 and all(x == 0.0 for x in d["diffs"])
    # Every figure follows from the samples: recount pass@1 of each model and problem.
    for m in data["models"]:
        for p in problems:
            st = data["per_problem"][m][p]
            mine = [s for s in samples if s["model"] == m and s["problem_id"] == p]
            n = sum(1 for s in mine if s["status"] != "left_out")
            ok = sum(1 for s in mine if s["status"] == "ok")
            assert (st["n"], st["correct"]) == (n, ok)
            assert st["pass1"] == (pytest.approx(ok / n) if n else None)
    for p in problems:
        naive = data["references"][p]["naive"]
        assert naive["gflops"] > 0 and naive["node_class"] == NODE_CLASS
        lib = data["references"][p]["library"]
        assert lib["gflops"] is None or lib["gflops"] > naive["gflops"]
        assert lib["gflops"] is not None or lib["note"].startswith("not measured")
    report = (out / "report.md").read_text()
    assert "# Evaluation on suite `held-out` (held-out)" in report
    assert f"`trained` (checkpoint `{run_dir / 'checkpoints'}" in report
    assert "| metric | `base` | `same` | `trained` |" in report
    assert "dgemm-1000x300x700 (1000 x 300 x 700)" in report
