"""The sandbox the compiler runs in: bounded writable memory, nothing of the host's
environment, a read-only /dev. (What the candidate's own sandbox leaks is probed from
inside by tests/corpus/integrity/leak_probe.c; what it bounds, by the rest of the
corpus.)"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcq.eval import procs
from hpcq.eval.sandbox import Sandbox, minimal_env
from hpcq.eval.settings import SandboxSettings
from tests.conftest import needs_sandbox

pytestmark = needs_sandbox


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hpcq-sandbox-test-"))
    path.chmod(0o777)  # the sandboxed uid writes here, as in an evaluation
    yield path
    for p in sorted(path.rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() else p.rmdir()
    path.rmdir()


async def _sh(settings: SandboxSettings, work: Path, script: str) -> procs.Completed:
    sandbox = Sandbox(settings)
    async with sandbox.lease(work / ".uids") as uid:
        prefix = sandbox.compile_prefix(
            uid=uid, threads=4, cpu_s=10, memory_bytes=settings.compile_memory_bytes, work_dir=work
        )
        return await procs.run([*prefix, "sh", "-c", script], timeout_s=30, env=minimal_env())


async def test_tmp_is_bounded(work: Path) -> None:
    """/tmp is a tmpfs, i.e. host RAM: it holds tmp_bytes and no more."""
    settings = SandboxSettings(tmp_bytes=8 << 20)
    done = await _sh(settings, work, "head -c 64000000 /dev/zero > /tmp/fill; ls -l /tmp/fill")
    size = int(done.stdout.split()[4])
    assert size <= 8 << 20, done.text()
    assert b"No space left" in done.stderr


async def test_dev_is_read_only(work: Path) -> None:
    done = await _sh(SandboxSettings(), work, "echo x > /dev/shm/x || echo x > /dev/x; echo rc=$?")
    assert b"rc=1" in done.stdout or b"rc=2" in done.stdout, done.text()
    assert b"Read-only file system" in done.stderr


async def test_nothing_of_the_callers_environment_gets_in(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPCQ_AMQP_URL", "amqp://user:secret@broker/")
    done = await _sh(SandboxSettings(), work, "env; cat /proc/1/environ | tr '\\0' '\\n'")
    seen = {line.split("=", 1)[0] for line in done.stdout.decode().splitlines() if "=" in line}
    assert seen <= {"PATH", "LANG", "PWD"}, seen
    assert b"secret" not in done.stdout
    assert "HPCQ_AMQP_URL" in os.environ  # it was there to leak
