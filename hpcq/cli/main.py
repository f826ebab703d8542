"""`hpcq`: the one command surface for people and tools.

The global options read HPCQ_CONFIG, HPCQ_CACHE_DIR, HPCQ_KERNELS_DIR and HPCQ_LOG_LEVEL
here; the options every command shares, and the exit codes, are in `hpcq.cli.common`.
The core's commands register themselves below; commands that need the ML stack come
from the `hpcq.commands` entry point (bridges/commands.py), and the telemetry sinks from
the `hpcq.telemetry` entry points (loaded by `hpcq.cli.common`), so the core never
imports `bridges` (import-linter checks it: `make lint`).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from hpcq import __version__
from hpcq.cli import kernel, pipeline, sqd
from hpcq.cli.common import EXIT_INFRA, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_REFUSED
from hpcq.errors import BrokerRefusedError, ConfigError, HpcqError, InfraError, InputError
from hpcq.logs import setup_logging

ENTRY_POINT_GROUP = "hpcq.commands"
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def command_plugins() -> list[Register]:
    """The `register(subparsers)` functions other packages declare under the
    `hpcq.commands` entry point (this distribution's own: `bridges.commands:register`).
    A plugin whose module is missing is left out with a warning: the core commands work."""
    found: list[Register] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except ModuleNotFoundError as exc:
            print(f"hpcq: commands of {ep.value} not loaded: {exc}", file=sys.stderr)
    return found


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="hpcq", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hpcq {__version__}")
    parser.add_argument("--config", default=env("HPCQ_CONFIG"), help="settings TOML file")
    parser.add_argument("--cache-dir", default=env("HPCQ_CACHE_DIR"))
    parser.add_argument("--kernels-dir", default=env("HPCQ_KERNELS_DIR"))
    parser.add_argument("--log-level", default=env("HPCQ_LOG_LEVEL", "warning"))
    parser.add_argument("--log-json", action="store_true", help="JSON log lines on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for module in (kernel, pipeline, sqd):
        module.register(sub)
    for plugin in command_plugins():
        plugin(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the command that `args` names (its `func`); errors become exit codes."""
    setup_logging(args.log_level, json=args.log_json)
    try:
        if inspect.iscoroutinefunction(args.func):
            code: int = asyncio.run(args.func(args))
        else:
            code = args.func(args)
        return code
    except BrokerRefusedError as exc:
        print(f"hpcq: broker refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (InputError, ConfigError) as exc:
        print(f"hpcq: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except InfraError as exc:
        print(f"hpcq: node error: {exc}", file=sys.stderr)
        return EXIT_INFRA
    except HpcqError as exc:
        print(f"hpcq: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
