"""The `hpcq` commands of the ML side, registered through the `hpcq.commands` entry point
(pyproject.toml): `producer`, `memory-plan` and `bootstrap-model` (bridges.cli_train) and
`evaluate` (bridges.cli_evaluate). Their handlers import torch only when they run, so
`hpcq --help` stays light; the core (`hpcq.cli`) never imports this package.

On a node without the ML stack the commands are still listed; running one says what to
install instead of printing an ImportError's traceback.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from bridges import cli_evaluate, cli_train
from hpcq.errors import ConfigError

# What the `ml` extra brings (pyproject.toml); a missing one is an install problem.
ML_PACKAGES = frozenset(
    {"torch", "transformers", "trl", "peft", "tokenizers", "accelerate", "datasets"}
)


def missing_ml(exc: ModuleNotFoundError, command: str) -> ConfigError | None:
    """The clear error for `exc` if it is a package of the `ml` extra, else None."""
    if (exc.name or "").split(".")[0] not in ML_PACKAGES:
        return None
    return ConfigError(
        f"`hpcq {command}` needs the ml extra ({exc.name} is missing): install torch first "
        "(pip install torch==2.13.0 takes the CPU build; a bare `torch` pulls CUDA wheels), "
        "then pip install 'hpcq[ml]' (make install-ml in a checkout)"
    )


def needs_ml(
    func: Callable[[argparse.Namespace], Awaitable[Any]], command: str
) -> Callable[[argparse.Namespace], Awaitable[Any]]:
    """`func` (an async command handler, as all of these are) with a missing ML package
    reported as a ConfigError (exit 2) instead of a traceback."""

    @functools.wraps(func)
    async def run(args: argparse.Namespace) -> Any:
        try:
            return await func(args)
        except ModuleNotFoundError as exc:
            error = missing_ml(exc, command)
            if error is None:
                raise  # not the ml extra: a real bug, with its own traceback
            raise error from exc

    return run


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    before = set(subparsers.choices)
    cli_train.register(subparsers)
    cli_evaluate.register(subparsers)
    for name in sorted(set(subparsers.choices) - before):
        parser = subparsers.choices[name]
        parser.set_defaults(func=needs_ml(parser.get_default("func"), name))
