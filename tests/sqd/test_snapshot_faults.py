"""A full disk under the SQD controller: it logs a clear error, keeps serving, retries its
snapshot, and `hpcq sqd` says so at exit (code 3) instead of dying with a traceback."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcq.pipeline.broker import BrokerSettings
from hpcq.pipeline.topology import Topology
from hpcq.sqd import service as sqd_service
from hpcq.sqd.service import SqdService, SqdSettings, read_snapshot
from hpcq.sqd.stages import SqdConfig

from .helpers import FAST_URL, random_stream
from .test_service import REPO, expected_state, offset_of, publish, wait_for

pytestmark = pytest.mark.broker


async def test_full_disk_keeps_the_controller_serving(
    topo: Topology,
    fast_config: tuple[Path, SqdConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, config = fast_config
    records = random_stream(seed=17, steps=8, per_step=3)
    state = tmp_path / "state.json"
    disk = {"full": True, "attempts": 0}
    write = sqd_service.write_atomic

    def write_on_a_full_disk(path: Path, data: bytes) -> None:
        disk["attempts"] += 1
        if disk["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(path, data)

    monkeypatch.setattr(sqd_service, "write_atomic", write_on_a_full_disk)
    retry_s = 0.3
    settings = SqdSettings(state_path=state, snapshot_every=1, snapshot_retry_s=retry_s)
    service = SqdService(BrokerSettings(url=FAST_URL), topo, config, settings)
    running = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.wait_ready(), 15)
        started = time.monotonic()
        await publish(topo, records)
        # Every record is processed although no snapshot can be written.
        await wait_for(lambda: service.offset == len(records) - 1, 20, "every record")
        assert service.snapshot_error is not None
        assert "No space left on device" in service.snapshot_error, service.snapshot_error
        assert not state.exists()
        # Retried after snapshot_retry_s, not after every record (snapshot_every = 1).
        elapsed = time.monotonic() - started
        assert disk["attempts"] <= elapsed / retry_s + 2 < len(records) / 4, disk
        disk["full"] = False  # space freed: the next retry writes everything
        await wait_for(lambda: offset_of(state) == len(records) - 1, 10, "the snapshot")
        assert service.snapshot_error is None
    finally:
        service.stop()
        await asyncio.wait_for(running, 15)
    assert not running.exception()
    doc = read_snapshot(state)
    assert doc is not None and doc["state"] == expected_state(config, records)


FULL_DISK = """
import errno, os, sys
from hpcq.sqd import service as sqd_service
from hpcq.cli import main

def full(path, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

sqd_service.write_atomic = full
sys.exit(main(sys.argv[1:]))
"""


async def test_hpcq_sqd_on_a_full_disk_exits_3_with_a_clear_message(
    topo: Topology, fast_config: tuple[Path, SqdConfig], tmp_path: Path
) -> None:
    config_path, _ = fast_config
    records = random_stream(seed=19, steps=3, per_step=2)
    await publish(topo, records)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FULL_DISK, "sqd", "--namespace", topo.namespace,
        "--amqp-url", FAST_URL, "--sqd-config", str(config_path),
        "--state-dir", str(tmp_path), "--snapshot-every", "5", "--idle-exit-s", "1.5",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    text = err.decode()
    assert proc.returncode == 3, text
    assert "Traceback" not in text, text
    assert "cannot write the snapshot; still serving" in text, text
    last = text.splitlines()[-1]
    assert last.startswith("hpcq: node error: sqd stopped without writing its last snapshot:")
    assert "No space left on device" in last and "--state-dir" in last, last
    # It served to the end before stopping: the last log line of the retries names
    # every record as unsaved.
    unsaved = [line for line in text.splitlines() if "unsaved_records=" in line]
    assert f"unsaved_records={len(records)}" in unsaved[-1], unsaved[-1]


def test_a_failed_write_keeps_the_old_snapshot_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ns.json"
    sqd_service.write_atomic(path, b'{"old": 1}')

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sqd_service.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        sqd_service.write_atomic(path, b'{"new": 2}')
    assert path.read_bytes() == b'{"old": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ns.json"]
