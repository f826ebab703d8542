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

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcq.errors import InfraError
from hpcq.settings import SandboxSettings

# bwrap's own processes in the candidate's uid: the outer monitor and pid 1 of the new
# pid namespace. RLIMIT_NPROC counts them too (it counts tasks of the uid).
_BWRAP_TASKS = 2


@dataclass(frozen=True)
class Sandbox:
    settings: SandboxSettings

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def uid_for(self, cores: Sequence[int]) -> int | None:
        """The slot's own unprivileged uid when we are root, else None (run as ourselves)."""
        return self.settings.uid_base + min(cores) if self.as_root else None

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
        cores: Sequence[int],
        threads: int,
        cpu_s: float,
        memory_bytes: int,
        binds_ro: Sequence[tuple[Path, str]] = (),
        binds_rw: Sequence[tuple[Path, str]] = (),
        env: dict[str, str] | None = None,
        chdir: str | None = None,
    ) -> list[str]:
        """argv prefix; append the program and its arguments (after the final `--`)."""
        s = self.settings
        uid = self.uid_for(cores)
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
