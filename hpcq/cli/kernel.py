"""The kernel commands of `hpcq`: eval (one candidate on this node), peak, problems."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from hpcq.cli.common import EXIT_INFRA, EXIT_OK, settings_from
from hpcq.errors import InputError
from hpcq.eval.static_checks import MAX_SOURCE_BYTES
from hpcq.outcome import Constraints, EvalRequest, EvalResult, Status


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("eval", help="compile, sandbox, verify and time one kernel")
    p.add_argument("file", help="C source of the candidate")
    p.add_argument("--problem", default="dgemm-256", help="problem id (see `hpcq problems`)")
    p.add_argument("--cores", type=int, default=1, help="number of cores of the slot")
    p.add_argument("--forbid", default="", help="comma-separated techniques the stage forbids")
    p.add_argument("--require", default="", help="comma-separated techniques the stage requires")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-cache", action="store_true", help="always evaluate afresh")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("peak", help="measure and store this node's FP64 peak per core")
    p.add_argument("--core", type=int, default=0)
    p.set_defaults(func=cmd_peak)

    p = subparsers.add_parser("problems", help="list the problem ids")
    p.set_defaults(func=cmd_problems)


def read_source(path: Path) -> str:
    """A candidate file from a user: clear errors for everything that is not C text."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a C source file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    if not raw.strip():
        raise InputError(f"{path}: file is empty")
    if len(raw) > MAX_SOURCE_BYTES:
        raise InputError(
            f"{path}: {len(raw)} bytes; a kernel source may have at most {MAX_SOURCE_BYTES}"
        )
    if b"\x00" in raw:
        raise InputError(f"{path}: contains NUL bytes: binary data, not C source")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text (byte {exc.start}): binary data, not C source"
        ) from None


def parse_techniques(text: str) -> frozenset[str]:
    from hpcq.eval.techniques import CATALOGUE, unknown_names

    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = unknown_names(names)
    if bad:
        raise InputError(f"unknown technique(s) {', '.join(bad)}; known: {', '.join(CATALOGUE)}")
    return frozenset(names)


def pick_cores(count: int) -> tuple[int, ...]:
    allowed = sorted(os.sched_getaffinity(0))
    if count < 1 or count > len(allowed):
        raise InputError(f"--cores {count}: this process may use {len(allowed)} core(s): {allowed}")
    return tuple(allowed[:count])


def human_line(path: str, r: EvalResult) -> str:
    techniques = ",".join(r.techniques) or "-"
    reward = "none" if r.reward is None else f"{r.reward:.4g}"
    head = f"{path}: {r.status} reward={reward}"
    if r.status is Status.OK:
        assert r.gflops is not None and r.gflops_min is not None and r.gflops_max is not None
        cv = f"{100 * (r.cv or 0):.1f}%"
        head += f" {r.gflops:.2f} GFLOPS (min {r.gflops_min:.2f}, max {r.gflops_max:.2f}, cv {cv})"
    tail = f" techniques={techniques} compile={r.compile_s:.2f}s run={r.run_s:.2f}s"
    tail += " (cached)" if r.cached else ""
    message = "" if r.status is Status.OK else f"\n  {r.message}"
    return head + tail + message


async def cmd_eval(args: argparse.Namespace) -> int:
    from hpcq.eval.engine import Engine
    from hpcq.eval.problems import default_kernels_dir, load_problem

    settings = settings_from(args)
    source = read_source(Path(args.file))
    load_problem(args.problem, settings.kernels_dir or default_kernels_dir())  # fail fast
    request = EvalRequest(
        problem_id=args.problem,
        source=source,
        constraints=Constraints(
            forbidden=parse_techniques(args.forbid), required=parse_techniques(args.require)
        ),
        cores=pick_cores(args.cores),
    )
    result = await Engine(settings).evaluate(request)
    if args.json:
        print(json.dumps({"file": args.file, **result.to_dict()}))
    else:
        print(human_line(args.file, result))
    return EXIT_INFRA if result.status is Status.INFRA_ERROR else EXIT_OK


async def cmd_peak(args: argparse.Namespace) -> int:
    from hpcq.eval.peak import PeakStore, measure_peak
    from hpcq.eval.problems import default_kernels_dir

    s = settings_from(args)
    value = await measure_peak(
        s.node.cc, s.kernels_dir or default_kernels_dir(), s.work_dir, args.core
    )
    best = PeakStore(s.cache_dir).put(s.node.name, value)
    print(json.dumps({"node_class": s.node.name, "measured": value, "stored": best}))
    return EXIT_OK


def cmd_problems(args: argparse.Namespace) -> int:
    from hpcq.eval.problems import catalogue, default_kernels_dir

    s = settings_from(args)
    for p in catalogue(s.kernels_dir or default_kernels_dir()).values():
        dims = "x".join(map(str, p.dims))
        print(f"{p.id}\t{p.family}\t{dims}\t{p.signature}")
    return EXIT_OK
