"""`hpcq producer --stages sqd --elites-per-prompt N`: the prompts show the controller's
elites (read from its snapshot) allowed by the problem's current stage; no torch needed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bridges.cli_train import parser_with_training, stage_client
from hpcq.errors import InputError
from hpcq.eval.problems import default_kernels_dir, load_problem
from hpcq.sqd.archive import Archive, Elite
from hpcq.train.prompts import build_prompt


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    argv = ["--cache-dir", str(tmp_path / "cache"), "producer", "--run-dir", str(tmp_path)]
    return parser_with_training().parse_args([*argv, "--namespace", "ns-elites", *extra])


def _snapshot(path: Path, *elites: Elite) -> None:
    archive = Archive()
    for e in elites:
        archive.add(e)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"state": {"archive": archive.to_json()}}))


def _elite(gflops: float, techniques: tuple[str, ...], source: str) -> Elite:
    return Elite(f"t-{gflops}", "dgemm-256", frozenset(techniques), gflops, source, 3, 1, "x")


def test_elites_reach_the_prompt(tmp_path: Path) -> None:
    state_dir = tmp_path / "sqd-state"
    args = _args(tmp_path, "--stages", "sqd", "--elites-per-prompt", "1",
                 "--sqd-state-dir", str(state_dir))  # fmt: skip
    client = stage_client(args, default_kernels_dir())
    assert client is not None and client.elites_per_prompt == 1
    # The first stage of the default schedule forbids every technique: an elite that
    # uses one is never shown; the scalar one is.
    _snapshot(
        state_dir / "ns-elites.json",
        _elite(9.5, (), "void dgemm_scalar_elite(void) {}"),
        _elite(40.0, ("openmp",), "void dgemm_openmp_elite(void) {}"),
    )
    stage = client.stage_for("dgemm-256")
    assert "9.5 GFLOPS" in stage.hint and "dgemm_scalar_elite" in stage.hint
    assert "dgemm_openmp_elite" not in stage.hint
    _, user = build_prompt(load_problem("dgemm-256"), stage)
    assert "dgemm_scalar_elite" in user.content


def test_without_the_flag_no_elites(tmp_path: Path) -> None:
    state_dir = tmp_path / "sqd-state"
    _snapshot(state_dir / "ns-elites.json", _elite(9.5, (), "void scalar_elite(void) {}"))
    args = _args(tmp_path, "--stages", "sqd", "--sqd-state-dir", str(state_dir))
    client = stage_client(args, default_kernels_dir())
    assert client is not None and "scalar_elite" not in client.stage_for("dgemm-256").hint


def test_state_dir_defaults_to_the_cache(tmp_path: Path) -> None:
    args = _args(tmp_path, "--stages", "sqd", "--elites-per-prompt", "2")
    client = stage_client(args, default_kernels_dir())
    assert client is not None and client._elites is not None
    assert client._elites.path == tmp_path / "cache" / "sqd" / "ns-elites.json"


def test_elites_need_sqd_stages(tmp_path: Path) -> None:
    assert stage_client(_args(tmp_path), default_kernels_dir()) is None
    with pytest.raises(InputError, match="needs --stages sqd"):
        stage_client(_args(tmp_path, "--elites-per-prompt", "2"), default_kernels_dir())
    with pytest.raises(InputError, match="0 or more"):
        stage_client(
            _args(tmp_path, "--stages", "sqd", "--elites-per-prompt", "-1"),
            default_kernels_dir(),
        )
