"""kernels/harness/selftest.sh: the C judge and runner on their own, without Python (forged
DONE messages, mprotect on the inputs, abort, spinning constructors, OpenMP with two
threads, the CPU time of the runner accounted): CI runs it here."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO, needs_sandbox

pytestmark = [needs_sandbox, pytest.mark.slow]


def test_harness_selftest_passes() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "kernels" / "harness" / "selftest.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    failures = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert done.returncode == 0 and not failures, "\n".join(failures) or done.stdout[-3000:]
    assert "selftest: 0 failure(s)" in done.stdout
