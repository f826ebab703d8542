"""`hpcq consumer` with the scripted evaluator (tests/support/scripted.py) in place of the
engine, for the pipeline's tests and benchmark. Run from the repository root with the
arguments of `python -m hpcq`:

    python -m tests.support.scripted_consumer [global options] consumer [options]

The core has no flag for this: a stand-in evaluator publishes made-up verdicts, which
must never reach a real namespace. Its slots may share cores, since it times nothing.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

from hpcq.cli.main import build_parser, run
from hpcq.cli.pipeline import cmd_consumer
from tests.support.scripted import ScriptedEvaluator


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "consumer":
        parser.error(f"{args.command}: only `consumer` runs with the scripted evaluator")
    args.func = functools.partial(cmd_consumer, make_evaluator=ScriptedEvaluator, share_cores=True)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
