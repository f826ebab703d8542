"""Per-evaluation scratch directories that never outlive their owner.

Each evaluation gets `work_dir/evals/<id>/` (chowned to its sandbox uid) and a lock
file `work_dir/evals/<id>.lock` beside it, held with `flock` by the evaluating process
for as long as the directory is in use. The kernel releases the lock when that process
dies, however it dies (kill -9 included), so `sweep` can tell a live evaluation from
debris: a directory whose lock it can take belongs to nobody and is removed. The lock
file sits outside the directory, where the sandboxed uid cannot delete it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import structlog

from hpcq.eval.harness import secure_dir

log = structlog.get_logger()


def evals_root(work_dir: Path) -> Path:
    return secure_dir(secure_dir(work_dir) / "evals")


@contextlib.contextmanager
def scratch_dir(work_dir: Path, uid: int | None) -> Iterator[Path]:
    """A fresh directory, locked while the block runs, removed afterwards."""
    root = evals_root(work_dir)
    name = uuid.uuid4().hex
    fd = os.open(root / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    path = root / name
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path.mkdir(mode=0o700)
        if uid is not None:
            os.chown(path, uid, uid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(root / f"{name}.lock")
        os.close(fd)


def sweep(work_dir: Path) -> int:
    """Remove the scratch directories of evaluations whose process is gone (a consumer
    killed with -9 leaves them behind). Returns how many were removed."""
    root = evals_root(work_dir)
    removed = 0
    for entry in os.scandir(root):
        if entry.name.endswith(".lock") or not entry.is_dir(follow_symlinks=False):
            continue
        lock = root / f"{entry.name}.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            fd = -1  # from before locks existed, or the owner is mid-cleanup: no owner
        try:
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live evaluation holds it
            shutil.rmtree(entry.path, ignore_errors=True)
            with contextlib.suppress(OSError):
                lock.unlink()
            removed += 1
        finally:
            if fd >= 0:
                os.close(fd)
    if removed:
        log.info("scratch.swept", removed=removed, root=str(root))
    return removed
