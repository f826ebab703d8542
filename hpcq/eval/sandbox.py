"""Command lines of the bubblewrap sandbox that compiles and runs candidates.

Layers, outermost first (evaluation notes, section 4):
- `setpriv`: when hpcq runs as root, the candidate gets an unprivileged uid of its own
  per slot; RLIMIT_NPROC does not bind root, and it must bind the candidate.
- `prlimit`: address space, CPU seconds (hard limit kills), processes/threads, file
  size, open files, no core dumps.
- `bwrap`: new user, pid, net, ipc, uts and mount namespaces (no network at all), no
  capabilities, an empty environment, killed with its parent, the command as pid 1.
  The compiler sees /usr read-only, its own directory and a size-bounded /tmp; the
  runner sees only its own shared libraries and the candidate's .so, read-only.
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
from hpcq.eval.settings import SandboxSettings

# bwrap's own processes in the candidate's uid: the outer monitor only (the command runs
# as pid 1 of the new namespace, --as-pid-1). RLIMIT_NPROC counts it too (it counts tasks
# of the uid), so a runner with T threads allowed can start no thread beyond them.
_BWRAP_TASKS = 1


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

    def compile_prefix(
        self,
        *,
        uid: int | None,
        threads: int,
        cpu_s: float,
        memory_bytes: int,
        work_dir: Path,
    ) -> list[str]:
        """argv prefix for the compiler and binutils on untrusted input: read-only /usr,
        the evaluation's directory read-write at /w (the cwd), a bounded private /tmp, a
        read-only /dev, /proc of its own pid namespace only. Append the command."""
        s = self.settings
        argv = self._outer(uid, threads, cpu_s, memory_bytes - s.tmp_bytes)
        argv += [
            "--ro-bind", "/usr", "/usr",
            *self._root_links(),
            "--proc", "/proc",
            "--dev", "/dev",
            "--remount-ro", "/dev",  # bwrap's /dev is a tmpfs: no writable, unbounded /dev/shm
            "--size", str(s.tmp_bytes),
            "--tmpfs", "/tmp",
            "--bind", str(work_dir), "/w",
            "--chdir", "/w",
            "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "LANG", "C",
            "--",
        ]  # fmt: skip
        return argv

    def run_prefix(
        self,
        *,
        uid: int | None,
        threads: int,
        cpu_s: float,
        memory_bytes: int,
        files: Sequence[Path],
        binds_ro: Sequence[tuple[Path, str]],
        env: dict[str, str],
    ) -> list[str]:
        """argv prefix for the trusted runner and the candidate it loads. The file system
        holds only `files` (the runner's shared libraries, at their own paths) and
        `binds_ro`: no /usr, /proc, /dev or /tmp, so nothing else of the host (no BLAS
        library, no configuration) exists to be read, and nothing is writable. The runner
        is pid 1 of its namespace: no bwrap init beside it to inspect or signal."""
        argv = self._outer(uid, threads, cpu_s, memory_bytes)
        argv += self._root_links()
        for path in sorted(set(files)):
            argv += ["--ro-bind", str(path.resolve()), str(_link_path(path))]
        for src, dst in binds_ro:
            argv += ["--ro-bind", str(src), dst]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv.append("--")
        return argv

    def _outer(self, uid: int | None, threads: int, cpu_s: float, memory_bytes: int) -> list[str]:
        """setpriv (a leased uid), prlimit, and bwrap's namespaces and hygiene flags."""
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
            # The command is pid 1 of its namespace and the outer bwrap reaps it: no
            # bwrap init (same uid, dumpable, unfiltered) shares the namespace with it.
            "--as-pid-1",
        ]  # fmt: skip
        return argv

    @staticmethod
    def _root_links() -> list[str]:
        """The host's top-level links into /usr (merged-/usr distributions), mirrored."""
        argv: list[str] = []
        for top in ("/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
        return argv


def minimal_env() -> dict[str, str]:
    """The environment of every process hpcq starts on the candidate's behalf (judge,
    setpriv, prlimit, bwrap, compiler): nothing of the evaluator's own (credentials,
    broker URLs, tokens) reaches a process the candidate could inspect."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C"}


def _link_path(path: Path) -> Path:
    """`path` with its directories resolved but its last component kept: where the
    dynamic loader looks for a library (libgomp.so.1 is itself a link to the real file)."""
    return Path(os.path.realpath(path.parent)) / path.name
