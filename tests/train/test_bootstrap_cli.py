"""`hpcq bootstrap-model` with a tiny budget: it writes a loadable model and judges its
step-0 samples with the real engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcq.errors import ConfigError

from .conftest import cli_parser, needs_torch

needs_torch()

pytestmark = pytest.mark.slow


async def test_bootstrap_model_smoke(tmp_path: Path) -> None:
    out = tmp_path / "m"
    argv = ["--cache-dir", str(tmp_path / "cache"), "bootstrap-model", "--out", str(out)]
    argv += ["--steps", "3", "--samples", "64", "--check", "2", "--threads", "1"]
    args = cli_parser().parse_args(argv)
    assert await args.func(args) == 0
    summary = json.loads((out / "bootstrap.json").read_text())
    assert summary["steps"] == 3 and summary["vocab_size"] > 256
    assert summary["step0"]["samples"] == 2
    assert sum(summary["step0"]["statuses"].values()) == 2
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


def test_tokenizer_pieces_are_whole_lines(tiny_model: Path) -> None:
    from bridges.hf_policy import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    line = "    for (int i = 0; i < M; i++) {" + chr(10)
    assert len(tok(line)["input_ids"]) <= 3
    assert tok.decode(tok(line)["input_ids"]) == line


async def test_bootstrap_model_rejects_a_useless_budget(tmp_path: Path) -> None:
    args = cli_parser().parse_args(
        ["bootstrap-model", "--out", str(tmp_path / "m"), "--steps", "0"]
    )
    with pytest.raises(ConfigError):
        await args.func(args)
