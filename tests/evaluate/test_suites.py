"""The suites under kernels/suites/: a training set, a held-out set of odd and non-square
shapes, and the checks that keep the two apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcq.errors import ConfigError, InputError
from hpcq.eval.problems import default_kernels_dir
from hpcq.train.evaluate.suites import known_suites, load_suite

KERNELS = default_kernels_dir()


def test_train_and_held_out_are_disjoint_and_held_out_is_not_square() -> None:
    assert {"train", "held-out"} <= set(known_suites(KERNELS))
    train, held = load_suite("train", KERNELS), load_suite("held-out", KERNELS)
    assert train.split == "train" and held.split == "held-out"
    assert {p.id for p in train.problems}.isdisjoint({p.id for p in held.problems})
    assert all(p.held_out for p in held.problems)
    assert not any(p.held_out for p in train.problems)
    assert any(len(set(p.dims)) == 3 for p in held.problems), "no non-square M x N x K"
    assert any(d % 2 for p in held.problems for d in p.dims), "no odd size"
    shapes = {p.id: p.dims for p in held.problems}
    assert shapes["dgemm-1000x300x700"] == (1000, 300, 700)  # [M, N, K] as the id reads


def test_unknown_suite_names_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown suite 'nope'; known suites: .*held-out.*train"):
        load_suite("nope", KERNELS)


def test_a_suite_cannot_mix_the_splits(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.toml"
    leaky.write_text('split = "held-out"\nproblems = ["dgemm-255", "dgemm-256"]\n')
    with pytest.raises(ConfigError, match="dgemm-256, which must be held_out = true"):
        load_suite(str(leaky), KERNELS)
    leaky.write_text('split = "train"\nproblems = ["dgemm-255"]\n')
    with pytest.raises(ConfigError, match="dgemm-255, which must be not held out"):
        load_suite(str(leaky), KERNELS)
    leaky.write_text('split = "train"\nproblems = ["dgemm-9"]\n')
    with pytest.raises(InputError, match="unknown problem id 'dgemm-9'"):
        load_suite(str(leaky), KERNELS)
    leaky.write_text('split = "test"\nproblems = ["dgemm-256"]\n')
    with pytest.raises(ConfigError, match="split must be one of train, held-out"):
        load_suite(str(leaky), KERNELS)


def test_held_out_problems_never_reach_the_bootstrap_corpus() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from bridges.bootstrap import corpus

    held = {p.id for p in load_suite("held-out", KERNELS).problems}
    seen = {m.content.split("problem ")[1].split(" ")[0] for ms, _ in corpus(400, 0) for m in ms
            if m.role == "user"}  # fmt: skip
    assert seen and seen.isdisjoint(held)
    assert seen == {p.id for p in load_suite("train", KERNELS).problems}


def test_training_on_a_held_out_problem_takes_a_flag() -> None:
    from bridges.cli_train import check_trainable
    from hpcq.eval.problems import load_problem

    held, train = load_problem("dgemm-255"), load_problem("dgemm-256")
    with pytest.raises(InputError, match="dgemm-255 held out for evaluation"):
        check_trainable([train, held], allow_held_out=False)
    check_trainable([train, held], allow_held_out=True)
    check_trainable([train], allow_held_out=False)
