"""`hpcq`: the one command surface for people and tools (`main`).

The core's commands are registered here (`kernel`, `pipeline`, `sqd`); commands that need
the ML stack are registered from the ML side through the `hpcq.commands` entry point
(bridges/commands.py), and the telemetry adapters through `hpcq.telemetry`
(hpcq/cli/common.py), so the core never imports `bridges`.
"""

from hpcq.cli.main import main

__all__ = ["main"]
