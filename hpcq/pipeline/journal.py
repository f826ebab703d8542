"""The consumer's crash journal: which evaluations were running when a consumer died.

RabbitMQ 3.10 counts every return of a delivery toward a quorum queue's delivery limit,
a cut connection included, so the broker alone cannot tell a task that kills its
consumer from a task that was running while the network flapped. Each consumer process
therefore writes down every evaluation when it starts and when it ends. An evaluation
that started and never ended was running when the process died (a crash, kill -9, the
OOM killer, the node going down): the task is charged that crash. hpcq.pipeline.fate parks a task
charged `crash_limit` crashes (hpcq.pipeline.consumer); a cut connection charges nothing.

Files, in one folder per namespace and node class: each consumer process appends to
`<host>.<pid>.<random>.journal` and holds an exclusive flock on the `.lock` file of the
same name for its whole life. The kernel drops the lock when the process dies, however
it dies, so a live consumer's journal is never taken. At start a consumer adopts the
journals of dead processes of its own host (lock free): what they were evaluating gets
one crash each, the crashes they knew carry over, and their files are removed.

A crash is identified by the journal of the process that died, so merging what several
journals know is a set union: a crash is never counted twice, whatever the order.

Lines are JSON arrays, each appended with one write (a process crash leaves them in the
page cache; a node crash may lose the last ones, and then the queue's delivery limit is
the backstop):
    ["start", task_id]            an evaluation begins
    ["end", task_id, completed]   it ended with the process alive; completed (the
                                  evaluator returned a verdict) clears the task's crashes
    ["crash", task_id, crash_id]  a crash known for the task (adopted)
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
from collections import OrderedDict
from pathlib import Path

import structlog

log = structlog.get_logger()


def _read(path: Path, crash_id: str) -> dict[str, set[str]]:
    """The crashes a dead process's journal proves: those it knew, plus one (its own
    death, `crash_id`) for every evaluation it had started and not ended."""
    crashes: dict[str, set[str]] = {}
    running: set[str] = set()
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return crashes
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            kind, task_id = entry[0], str(entry[1])
        except (ValueError, IndexError, TypeError):
            continue  # a torn last line
        if kind == "start":
            running.add(task_id)
        elif kind == "end":
            running.discard(task_id)
            if len(entry) > 2 and entry[2] is True:
                crashes.pop(task_id, None)
        elif kind == "crash" and len(entry) > 2:
            crashes.setdefault(task_id, set()).add(str(entry[2]))
    for task_id in running:
        crashes.setdefault(task_id, set()).add(crash_id)
    return crashes


class CrashJournal:
    """Crashes charged to tasks, kept on disk across consumer restarts.

    `CrashJournal(None)` keeps them in memory only (in-process consumers of tests)."""

    def __init__(self, folder: Path | None, max_tasks: int = 10_000) -> None:
        self.folder = folder
        self.max_tasks = max_tasks
        self.adopted = 0  # evaluations found running in dead consumers' journals
        self._crashes: OrderedDict[str, set[str]] = OrderedDict()
        self._running: set[str] = set()
        self._lines = 0
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._path: Path | None = None
        if folder is not None:
            self._open(folder)

    def _open(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        name = f"{host}.{os.getpid()}.{secrets.token_hex(4)}"
        lock = folder / f"{name}.lock"
        self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # ours: nobody else can have it yet
        self._path = folder / f"{name}.journal"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for other in sorted(folder.glob(f"{host}.*.lock")):
            if other != lock:
                self._adopt(other)

    def _adopt(self, lock: Path) -> None:
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            return  # adopted by a consumer that started at the same time
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # alive
            journal = lock.with_suffix(".journal")
            found = _read(journal, crash_id=lock.stem)
            for task_id, ids in found.items():
                if lock.stem in ids:
                    self.adopted += 1
                for crash_id in ids:
                    self._add_crash(task_id, crash_id)
            # Written to our journal before theirs is removed: a crash right here
            # loses nothing.
            journal.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)

    # --- queries and events -------------------------------------------------------

    def crashes(self, task_id: str) -> int:
        """Consumer deaths this task was being evaluated at."""
        return len(self._crashes.get(task_id, ()))

    def started(self, task_id: str) -> None:
        self._running.add(task_id)
        self._append(["start", task_id])

    def ended(self, task_id: str, completed: bool) -> None:
        """The evaluation ended and this process lives. `completed`: the evaluator
        returned a verdict, which proves the task harmless (its crashes are cleared);
        a cancelled or failed evaluation keeps them."""
        self._running.discard(task_id)
        if completed:
            self._crashes.pop(task_id, None)
        self._append(["end", task_id, completed])
        if self._lines > 4 * (self.max_tasks + len(self._running)) + 64:
            self._compact()

    def close(self) -> None:
        """At a clean exit. Crashes still known stay on disk for the next consumer."""
        if self._fd is None or self._path is None or self._lock_fd is None:
            return
        os.close(self._fd)
        self._fd = None
        lock = self._path.with_suffix(".lock")
        if not self._crashes and not self._running:
            self._path.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
        os.close(self._lock_fd)  # releases the lock: the next consumer adopts the rest
        self._lock_fd = None

    # --- storage -------------------------------------------------------------------

    def _add_crash(self, task_id: str, crash_id: str) -> None:
        ids = self._crashes.setdefault(task_id, set())
        self._crashes.move_to_end(task_id)
        if crash_id not in ids:
            ids.add(crash_id)
            self._append(["crash", task_id, crash_id])
        while len(self._crashes) > self.max_tasks:
            self._crashes.popitem(last=False)

    def _append(self, entry: list[object]) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, (json.dumps(entry) + "\n").encode())
            self._lines += 1
        except OSError as exc:  # disk full: accounting falls back to the broker's limit
            log.warning("crash journal not written", path=str(self._path), error=str(exc))

    def _compact(self) -> None:
        """Rewrite the journal as what it proves now (the lock is another file, so a
        rename keeps it)."""
        assert self._path is not None and self._fd is not None
        tmp = self._path.with_suffix(".compact")
        entries = [["crash", t, c] for t, ids in self._crashes.items() for c in sorted(ids)]
        entries += [["start", t] for t in sorted(self._running)]
        try:
            tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("crash journal not compacted", path=str(self._path), error=str(exc))
            tmp.unlink(missing_ok=True)
            return
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lines = len(entries)
