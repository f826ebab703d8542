"""Bad input to `hpcq evaluate` fails at once with exit 2 and a message naming the fix,
before any model is loaded or the broker is contacted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridges.cli_evaluate import resolve_model
from hpcq.cli import main

# An unreachable broker: any test that got as far as connecting would fail differently.
NO_BROKER = ["--amqp-url", "amqp://guest:guest@127.0.0.1:1/"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["evaluate", *NO_BROKER, *argv])
    return code, capsys.readouterr().err


def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def test_unknown_suite(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "--model", str(model_dir(tmp_path)), "--suite", "nope")
    assert code == 2
    assert "unknown suite 'nope'; known suites: held-out, train" in err
    assert "Traceback" not in err


def test_missing_model_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "--model", str(tmp_path / "nowhere"), "--suite", "held-out")
    assert code == 2
    assert f"--model {tmp_path / 'nowhere'}: no such directory" in err
    assert "`hpcq bootstrap-model --out DIR`" in err and "run directory" in err


def test_directory_without_a_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "--model", str(tmp_path), "--suite", "held-out")
    assert code == 2 and "holds no model (config.json)" in err
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    code, err = run(capsys, "--model", str(run_dir), "--suite", "held-out")
    assert code == 2 and "a run directory without a complete checkpoint" in err


def test_same_label_twice_and_bad_k(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    m = str(model_dir(tmp_path))
    code, err = run(capsys, "--model", m, "--model", m, "--suite", "held-out")
    assert code == 2 and "name them LABEL=..." in err
    code, err = run(capsys, "--model", m, "--suite", "held-out", "-k", "0")
    assert code == 2 and "-k" in err


def test_what_a_model_argument_names(tmp_path: Path) -> None:
    m = model_dir(tmp_path)
    r = resolve_model(f"before={m}", tmp_path)
    assert (r.spec.label, r.spec.model, r.spec.checkpoint) == ("before", str(m), None)
    hub = resolve_model("Qwen/Qwen2.5-Coder-14B-Instruct", tmp_path)
    assert hub.spec.model == "Qwen/Qwen2.5-Coder-14B-Instruct"
    boot = resolve_model("bootstrap", tmp_path)
    assert boot.build and boot.spec.model == str(tmp_path / "bootstrap-model")
    # A run directory: its newest complete checkpoint over the model the run started from.
    run_dir = tmp_path / "run"
    for step in (1, 2):
        ckpt = run_dir / "checkpoints" / f"step-{step:06d}"
        (ckpt / "policy").mkdir(parents=True)
        (ckpt / "state.json").write_text("{}")
    (run_dir / "checkpoints" / "step-000003").mkdir()  # incomplete: no state.json
    record = {"train": {"policy": {"model": str(m), "lora_r": 0}}, "problems": ["dgemm-255"]}
    (run_dir / "config.json").write_text(json.dumps(record))
    r = resolve_model(str(run_dir), tmp_path)
    assert r.spec.checkpoint == run_dir / "checkpoints" / "step-000002"
    assert r.spec.model == str(m) and r.spec.label == "run@step-000002"
    assert r.trained_on == ("dgemm-255",)
    one = resolve_model(f"x={run_dir / 'checkpoints' / 'step-000001'}", tmp_path)
    assert one.spec.checkpoint == run_dir / "checkpoints" / "step-000001"
