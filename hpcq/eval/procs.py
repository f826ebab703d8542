"""Awaiting subprocesses without ever blocking the event loop.

Every child gets its own session (process group), so a timeout or a cancellation kills
the whole tree: a requeued task must never leave an orphan benchmark running beside its
retry. Output is read with a cap; what is past the cap is drained and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcq.errors import InfraError

OUTPUT_CAP_BYTES = 256 * 1024


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int | None  # None when killed for the timeout
    stdout: bytes
    stderr: bytes
    wall_s: float
    timed_out: bool

    def text(self, limit: int = 2000) -> str:
        """stderr then stdout, decoded and truncated for messages."""
        raw = (self.stderr + self.stdout).decode("utf-8", "replace").strip()
        return raw if len(raw) <= limit else raw[:limit] + f"... [{len(raw) - limit} more chars]"


async def _read_capped(stream: asyncio.StreamReader | None, cap: int) -> bytes:
    if stream is None:
        return b""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < cap:
            kept += chunk[: cap - len(kept)]
    return bytes(kept)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _stop(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM the group, then SIGKILL it. The grace lets a trusted child (the judge)
    take down what it started in groups of its own (its sandbox)."""
    if proc.returncode is None:
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace_s)
    _signal_group(proc.pid, signal.SIGKILL)  # stragglers of the group, even after exit
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def run(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    output_cap: int = OUTPUT_CAP_BYTES,
) -> Completed:
    """Run argv to completion or until timeout_s, then kill its whole process group.

    Raises InfraError only when the program cannot be started at all (missing binary).
    """
    start = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise InfraError(f"cannot start {argv[0]}: {exc}") from exc
    readers = asyncio.gather(
        _read_capped(proc.stdout, output_cap), _read_capped(proc.stderr, output_cap)
    )
    timed_out = False
    try:
        if stdin is not None and proc.stdin is not None:
            proc.stdin.write(stdin)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await proc.stdin.drain()
            proc.stdin.close()
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
    finally:
        # Also on cancellation: never leave the tree behind.
        await asyncio.shield(_stop(proc, grace_s=1.0))
    out, err = await readers
    return Completed(
        argv=tuple(argv),
        returncode=None if timed_out else proc.returncode,
        stdout=out,
        stderr=err,
        wall_s=time.monotonic() - start,
        timed_out=timed_out,
    )
