"""Evaluation suites: data under kernels/suites/*.toml, one file per suite.

A suite is a named list of problem ids with a split: `train` (what models are trained
on) or `held-out` (problems no training data contains, marked `held_out = true` in their
family file). The split is checked against the problems, so a held-out suite cannot
quietly list a training problem, nor a training suite a held-out one.

    description = "DGEMM at odd and non-square shapes never trained on"
    split = "held-out"
    problems = ["dgemm-255", "dgemm-1000x300x700"]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hpcq.errors import ConfigError, InputError
from hpcq.eval.problems import Problem, load_problem
from hpcq.tomlfile import read_toml

Split = Literal["train", "held-out"]
SPLITS: tuple[Split, ...] = ("train", "held-out")


@dataclass(frozen=True)
class Suite:
    name: str
    split: Split
    description: str
    problems: tuple[Problem, ...]
    path: Path


def suites_dir(kernels_dir: Path) -> Path:
    return kernels_dir / "suites"


def known_suites(kernels_dir: Path) -> list[str]:
    return sorted(p.stem for p in suites_dir(kernels_dir).glob("*.toml"))


def load_suite(name_or_path: str, kernels_dir: Path) -> Suite:
    """A suite by name (kernels/suites/NAME.toml) or by the path of a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = suites_dir(kernels_dir) / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(known_suites(kernels_dir)) or "(none)"
        raise InputError(
            f"unknown suite {name_or_path!r}; known suites: {known} "
            f"(files under {suites_dir(kernels_dir)}), or give the path of a suite TOML"
        )
    data = read_toml(path, "suite")
    split = data.get("split")
    if split not in SPLITS:
        raise ConfigError(f"{path}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    ids = data.get("problems")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ConfigError(f"{path}: problems must be a non-empty list of problem ids")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: a problem is listed twice")
    problems = tuple(load_problem(i, kernels_dir) for i in ids)
    wrong = [p.id for p in problems if p.held_out != (split == "held-out")]
    if wrong:
        want = "held_out = true" if split == "held-out" else "not held out"
        raise ConfigError(
            f"{path}: a {split} suite lists {', '.join(wrong)}, which must be {want} "
            "in its family file (kernels/problems/)"
        )
    return Suite(path.stem, split, str(data.get("description", "")), problems, path)
