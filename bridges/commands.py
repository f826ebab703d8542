"""The `hpcq` commands of the ML side, registered through the `hpcq.commands` entry point
(pyproject.toml): `producer`, `memory-plan` and `bootstrap-model` (bridges.cli_train) and
`evaluate` (bridges.cli_evaluate). Their handlers import torch only when they run, so
`hpcq --help` stays light; the core (`hpcq.cli`) never imports this package.
"""

from __future__ import annotations

import argparse

from bridges import cli_evaluate, cli_train


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cli_train.register(subparsers)
    cli_evaluate.register(subparsers)
