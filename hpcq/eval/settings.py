"""Typed settings that flow top-down from the CLI.

Environment variables are read only in `hpcq.cli`; everything below receives these
objects. A TOML file (`--config FILE`) may override any field, section by section:

    [node]     name, cc, cflags, openmp_flag, peak_gflops_per_core
    [sandbox]  bwrap, uid_base, memory_bytes, ...
    [measure]  warmup_calls, min_calls, min_time_s, ...
    [reward]   violation, compile_error, ..., shaping, baseline_gflops

Unknown keys and wrong types fail fast with a message that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hpcq.errors import ConfigError
from hpcq.outcome import Status
from hpcq.tomlfile import read_toml

Shaping = Literal["gflops", "log_speedup", "fraction_of_peak"]
SHAPINGS: tuple[str, ...] = typing.get_args(Shaping)


def detect_node_class() -> str:
    """A routing name for this CPU: x86_64-avx512, x86_64-avx2, aarch64-sve, ...

    Producer and consumers on one machine agree on it; across machines, name the class
    explicitly (`[node] name` or `--node-class`), since a GPU node's CPU may differ."""
    machine = platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return machine
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            break
    for flag, suffix in (
        ("avx512f", "avx512"),
        ("avx2", "avx2"),
        ("sve", "sve"),
        ("asimd", "neon"),
    ):
        if flag in flags:
            return f"{machine}-{suffix}"
    return machine


@dataclass(frozen=True)
class NodeClass:
    """A class of CPU nodes: tasks are routed by `name`; flags and peak are per class."""

    name: str = field(default_factory=detect_node_class)
    """Routing key and cache-key component, e.g. `x86_64-avx512`, `aarch64-sve`.
    Default: detected from this CPU's flags."""
    cc: str = "gcc"
    """C compiler used for candidates (and for the trusted harness)."""
    cflags: tuple[str, ...] = ("-O3", "-march=native", "-mprefer-vector-width=512")
    """Candidate flags. gcc's -march=native on these Xeons prefers 256-bit vectors unless
    -mprefer-vector-width=512 is given."""
    openmp_flag: str = "-fopenmp"
    """Always passed, so OpenMP use is visible in the object (GOMP_* symbols) and can be
    checked against the stage's constraints."""
    peak_gflops_per_core: float | None = None
    """FP64 peak of one core. None: measured once by `hpcq peak` and cached per node."""


@dataclass(frozen=True)
class SandboxSettings:
    """Limits of the bubblewrap sandbox that compiles and runs candidates."""

    bwrap: str = "bwrap"
    uid_base: int = 61000
    uid_count: int = 256
    """When hpcq runs as root, each running evaluation leases a uid of its own from
    [uid_base, uid_base + uid_count): unprivileged, so RLIMIT_NPROC binds it alone.
    No account needs to exist for these uids."""
    memory_bytes: int = 4 << 30
    """RLIMIT_AS of the candidate process (its sandbox has no writable file system)."""
    file_size_bytes: int = 16 << 20
    """RLIMIT_FSIZE: the largest file (or output) a sandboxed process may write; also
    caps the preprocessed source."""
    open_files: int = 64
    compile_timeout_s: float = 60.0
    """Wall-clock limit of each compiler or binutils step."""
    compile_cpu_s: float = 20.0
    """CPU seconds of each compiler step (RLIMIT_CPU): macro bombs end here."""
    compile_memory_bytes: int = 1 << 30
    """Memory of each compiler step: RLIMIT_AS plus its /tmp (tmp_bytes is carved out)."""
    tmp_bytes: int = 64 << 20
    """Size of the compiler's private /tmp (a tmpfs, i.e. host RAM), inside
    compile_memory_bytes."""
    max_include_depth: int = 32
    """gcc -fmax-include-depth: honest kernels need under 10 (immintrin.h, omp.h)."""
    max_errors: int = 20
    """gcc -fmax-errors: a diagnostic flood stops here."""
    extra_threads: int = 0
    """Threads allowed beyond one per core of the slot (0: OpenMP up to the slot's cores)."""


@dataclass(frozen=True)
class MeasureSettings:
    """How a candidate is timed (evaluation notes, section 6)."""

    warmup_calls: int = 2
    warmup_min_s: float = 0.05
    min_calls: int = 10
    """At least this many timed calls, each with fresh inputs and verified."""
    min_time_s: float = 0.3
    """...and at least this much kernel time, up to `max_calls`."""
    max_calls: int = 200
    peak_margin: float = 1.05
    """A per-call figure above peak_margin x peak x cores is physically impossible here:
    the result is a `violation`."""
    cpu_slack_s: float = 0.05
    """Runner CPU allowed for loading (bwrap, the loader) beyond its calls' share..."""
    cpu_slack_fraction: float = 0.10
    """...plus this fraction of (call time x threads): more CPU than that means work
    outside the timed calls (a helper thread, spinning ahead of the inputs)."""
    gap_cpu_s: float = 0.002
    """Runner CPU allowed between a DONE and the next GO (the judge checks each gap)..."""
    gap_cpu_fraction: float = 0.05
    """...plus this fraction of the call just finished..."""
    gap_cpu_per_extra_thread_s: float = 0.004
    """...plus this per OpenMP worker: the kernel books a running thread's CPU time at
    ticks and context switches, so a worker's last tick (1/HZ: 4 ms at HZ=250) can be
    booked just after DONE. The runner's own thread is booked exactly."""
    full_checks: int = 8
    """Benchmark calls compared in full with the judge's own product, besides the first
    warm-up and the check shapes: chosen at random after each call returned (reservoir
    sampling: every call equally likely, none predictable) and compared after the run,
    so the O(n^3) reference never runs between timed calls (small shapes only)."""


@dataclass(frozen=True)
class RewardSettings:
    """Reward tiers (the paper's, by default) and the shaping of `ok` results."""

    violation: float = -100.0
    compile_error: float = -40.0
    timeout: float = -30.0
    runtime_error: float = -20.0
    wrong_result: float = -10.0
    shaping: Shaping = "gflops"
    """gflops: the median GFLOPS; log_speedup: ln(gflops / baseline_gflops);
    fraction_of_peak: gflops / (peak per core x cores)."""
    baseline_gflops: float | None = None
    """Needed by log_speedup (for example the naive kernel's or OpenBLAS's figure)."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "hpcq"


def default_work_dir() -> Path:
    # Not under $HOME: the sandboxed uid must be able to reach the trusted runner and its
    # own evaluation directory, and /root is mode 0700.
    return Path(tempfile.gettempdir()) / f"hpcq-{os.geteuid()}"


@dataclass(frozen=True)
class EngineSettings:
    node: NodeClass = field(default_factory=NodeClass)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    cache_dir: Path = field(default_factory=default_cache_dir)
    """The measured peak and the result cache live here."""
    work_dir: Path = field(default_factory=default_work_dir)
    """Trusted harness builds (mode 0755) and per-evaluation scratch directories."""
    kernels_dir: Path | None = None
    """None: the kernels shipped with hpcq."""
    use_cache: bool = True
    static_checks: bool = True
    """Only tests turn this off, to prove the sandbox holds on its own."""

    def __post_init__(self) -> None:
        validate(self)


def check_reward_settings(settings: RewardSettings, section: str = "reward") -> None:
    """Fail fast on reward settings `hpcq.eval.reward.reward_for` cannot apply; the message
    names the fix. The engine's `[reward]` and a training run's go through it alike."""
    if settings.shaping not in SHAPINGS:
        raise ConfigError(
            f"{section}.shaping = {settings.shaping!r}: choose one of {', '.join(SHAPINGS)}"
        )
    if settings.shaping == "log_speedup" and not (
        settings.baseline_gflops and settings.baseline_gflops > 0
    ):
        raise ConfigError(f"{section}.shaping = 'log_speedup' needs {section}.baseline_gflops > 0")
    tiers = [getattr(settings, str(s)) for s in Status if s not in (Status.OK, Status.INFRA_ERROR)]
    if not all(math.isfinite(t) for t in tiers):
        raise ConfigError(f"[{section}]: every failure tier must be a finite number")


def validate(s: EngineSettings) -> None:
    check_reward_settings(s.reward)
    m = s.measure
    if m.min_calls < 1 or m.max_calls < m.min_calls:
        raise ConfigError("measure: need 1 <= min_calls <= max_calls")
    if m.warmup_calls < 0 or m.min_time_s < 0 or m.peak_margin < 1.0:
        raise ConfigError("measure: warmup_calls and min_time_s >= 0, peak_margin >= 1")
    if not 0 <= m.full_checks <= 64 or min(m.gap_cpu_s, m.gap_cpu_fraction) < 0:
        raise ConfigError("measure: full_checks in [0, 64], gap_cpu_* >= 0")
    sb = s.sandbox
    if not 0 < sb.tmp_bytes < sb.compile_memory_bytes:
        raise ConfigError("sandbox: need 0 < tmp_bytes < compile_memory_bytes")
    if s.node.peak_gflops_per_core is not None and s.node.peak_gflops_per_core <= 0:
        raise ConfigError("node.peak_gflops_per_core must be > 0 (or left out to measure it)")
    if not s.node.name or "/" in s.node.name or " " in s.node.name:
        raise ConfigError(f"node.name = {s.node.name!r}: use letters, digits, '-', '_' or '.'")


_SECTIONS: dict[str, type[Any]] = {
    "node": NodeClass,
    "sandbox": SandboxSettings,
    "measure": MeasureSettings,
    "reward": RewardSettings,
}


def _coerce(section: str, key: str, hint: Any, value: Any) -> Any:
    """Check one TOML value against its field's type hint; return it in the field's type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    where = f"[{section}] {key} = {value!r}"
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(section, key, inner[0], value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return tuple(value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(str, args))}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return value
    raise ConfigError(f"{where}: unsupported setting type {hint!r}")


def load_section(name: str, cls: type[Any], table: dict[str, Any], base: Any) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in [{name}]: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = {k: _coerce(name, k, hints[k], v) for k, v in table.items()}
    return dataclasses.replace(base, **values)


def load_settings(path: Path | None = None, **overrides: Any) -> EngineSettings:
    """Defaults, then the TOML file's sections, then keyword overrides (from the CLI)."""
    base = EngineSettings(**overrides) if overrides else EngineSettings()
    if path is None:
        return base
    data = read_toml(path)
    unknown = sorted(set(data) - set(_SECTIONS) - {"engine"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_SECTIONS))}, engine"
        )
    parts = {
        name: load_section(name, cls, data.get(name, {}), getattr(base, name))
        for name, cls in _SECTIONS.items()
    }
    engine = data.get("engine", {})
    for key in ("cache_dir", "kernels_dir", "work_dir"):
        if key in engine:
            parts[key] = Path(os.path.expanduser(str(engine.pop(key))))
    for key in ("use_cache", "static_checks"):
        if key in engine:
            parts[key] = _coerce("engine", key, bool, engine.pop(key))
    if engine:
        raise ConfigError(f"unknown key(s) in [engine]: {', '.join(sorted(engine))}")
    return dataclasses.replace(base, **parts)
