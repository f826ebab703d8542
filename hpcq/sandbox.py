"""Command lines of the bubblewrap sandbox that compiles and runs candidates.

Layers, outermost first (evaluation notes, section 4):
- `setpriv`: when hpcq runs as root, the candidate gets an unprivileged uid of its own
  per slot; RLIMIT_NPROC does not bind root, and it must bind the candidate.
- `prlimit`: address space, CPU seconds (hard limit kills), processes/threads, file
  size, open files, no core dumps.
- `bwrap`: new user, pid, net, ipc, uts and mount namespaces (no network at all), only
  /usr read-only plus the files of this evaluation, a private /tmp, no capabilities,
  an empty environment, killed with its parent.
- inside, the trusted runner adds two seccomp layers (kernels/harness/runner.c).
The wall-clock kill is the caller's (procs.run and the judge kill the process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcq.errors import InfraError
from hpcq.settings import SandboxSettings

# bwrap's own processes in the candidate's uid: the outer monitor and pid 1 of the new
# pid namespace. RLIMIT_NPROC counts them too (it counts tasks of the uid).
_BWRAP_TASKS = 2


def _uids_with_processes() -> set[int]:
    """Real uids of every process on the host (zombies included)."""
    uids: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            uids.add(os.stat(entry.path).st_uid)
        except OSError:
            continue  # exited meanwhile
    return uids


@dataclass(frozen=True)
class Sandbox:
    settings: SandboxSettings

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    @contextlib.asynccontextmanager
    async def lease(self, lock_dir: Path) -> AsyncIterator[int | None]:
        """An unprivileged uid used by nobody else while the block runs (None unless root).

        RLIMIT_NPROC counts every task of a uid, so two sandboxes sharing a uid would
        eat into each other's limit. Each uid of the pool has a lock file; `flock` makes
        the lease exclusive across processes and frees it when its holder dies.
        """
        if not self.as_root:
            yield None
            return
        lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        s = self.settings
        for _ in range(600):  # all uids busy: wait, up to a minute, then fail loudly
            busy = _uids_with_processes()
            for uid in range(s.uid_base, s.uid_base + s.uid_count):
                if uid in busy:  # e.g. a zombie nobody reaped: it still counts for NPROC
                    continue
                fd = os.open(lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield uid
                finally:
                    os.close(fd)  # closing the descriptor releases the lock
                return
            await asyncio.sleep(0.1)
        raise InfraError(f"all {s.uid_count} sandbox uids from {s.uid_base} are in use")

    def check_available(self) -> None:
        for tool in (self.settings.bwrap, "prlimit", "setpriv"):
            if shutil.which(tool) is None:
                raise InfraError(
                    f"{tool} not found: install it (Debian: apt-get install bubblewrap "
                    "util-linux) or run `make install-system`"
                )

    def prefix(
        self,
        *,
        uid: int | None,
        threads: int,
        cpu_s: float,
        memory_bytes: int,
        binds_ro: Sequence[tuple[Path, str]] = (),
        binds_rw: Sequence[tuple[Path, str]] = (),
        env: dict[str, str] | None = None,
        chdir: str | None = None,
        as_pid_1: bool = False,
    ) -> list[str]:
        """argv prefix; append the program and its arguments (after the final `--`)."""
        s = self.settings
        argv: list[str] = []
        if uid is not None:
            argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
        limits = [
            f"--as={memory_bytes}",
            f"--cpu={max(1, int(cpu_s + 0.999))}",
            f"--fsize={s.file_size_bytes}",
            f"--nofile={s.open_files}",
            "--core=0",
        ]
        if uid is not None:
            # Only meaningful for a uid of our own: as ourselves it would count all our
            # processes; then seccomp (no fork, no exec) is what bounds the candidate.
            limits.append(f"--nproc={_BWRAP_TASKS + threads + s.extra_threads}")
        argv += ["prlimit", *limits, "--"]
        argv += [
            s.bwrap,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop", "ALL",
            "--clearenv",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin",
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/tmp",
        ]  # fmt: skip
        if as_pid_1:
            # The command is pid 1 of its namespace and the outer bwrap reaps it. Without
            # this, bwrap's own init is orphaned to the host's pid 1, which on some
            # machines never reaps it: a zombie that keeps counting against NPROC.
            # (The judge runs its sandbox without it: it reaps as a subreaper itself.)
            argv.append("--as-pid-1")
        for src, dst in binds_ro:
            argv += ["--ro-bind", str(src), dst]
        for src, dst in binds_rw:
            argv += ["--bind", str(src), dst]
        for key, value in (env or {}).items():
            argv += ["--setenv", key, value]
        argv += ["--setenv", "PATH", "/usr/bin:/bin"]
        if chdir:
            argv += ["--chdir", chdir]
        argv.append("--")
        return argv
