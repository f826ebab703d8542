"""CLI commands of the SQD controller: `hpcq sqd` and `hpcq archive show|export`.

Registered by `hpcq.cli.main` through `register(subparsers)`. Environment variables read
here (the CLI edge): HPCQ_SQD_CONFIG, HPCQ_SQD_STATE_DIR; the broker and telemetry ones in
`hpcq.cli.common`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from hpcq.cli.common import EXIT_OK, add_amqp_url_arg, add_namespace_arg, add_telemetry_args
from hpcq.errors import InfraError, InputError
from hpcq.sqd.archive import Archive, Elite
from hpcq.sqd.controller import ProblemState, problem_from_json
from hpcq.sqd.service import read_snapshot, state_path_for


def register(subparsers: Any) -> None:
    """Add `sqd` and `archive` to the `hpcq` command's subparsers."""
    env = os.environ.get
    p = subparsers.add_parser(
        "sqd", help="run the SQD controller: per-problem stages and the elite archive"
    )
    _state_args(p)
    add_amqp_url_arg(p)
    p.add_argument(
        "--sqd-config",
        default=env("HPCQ_SQD_CONFIG"),
        help="schedule file (default: kernels/sqd/default.toml)",
    )
    p.add_argument("--rebuild", action="store_true", help="replay the stream from its start")
    _seconds(p, "--idle-exit-s", None, "stop after this many seconds without a record "
             "(rebuilds, smoke tests)", old="--idle-exit")  # fmt: skip
    p.add_argument("--snapshot-every", type=int, default=200, metavar="N",
                   help="records between two snapshots")  # fmt: skip
    _seconds(p, "--snapshot-interval-s", 5.0, "seconds between two snapshots",
             old="--snapshot-interval")  # fmt: skip
    _seconds(p, "--announce-interval-s", 30.0, "seconds between re-announcements of every "
             "current stage", old="--announce-interval")  # fmt: skip
    add_telemetry_args(p)
    p.set_defaults(func=cmd_sqd)

    a = subparsers.add_parser("archive", help="the SQD elite archive: show or export it")
    actions = a.add_subparsers(dest="archive_command", required=True, metavar="ACTION")
    s = actions.add_parser("show", help="stages and archive cells as a table")
    _state_args(s)
    s.add_argument("--problem", default=None, help="only this problem")
    s.add_argument("--json", action="store_true", help="one JSON document")
    s.set_defaults(func=cmd_archive_show)
    e = actions.add_parser("export", help="cells table, elite sources and PNG plots into a folder")
    _state_args(e)
    e.add_argument("--out", default="sqd-report", help="output folder (created)")
    e.set_defaults(func=cmd_archive_export)


def _seconds(
    p: argparse.ArgumentParser, flag: str, default: float | None, help: str, old: str
) -> None:
    """A duration flag, its unit in its name; `old` is the spelling before units, still
    accepted but no longer shown."""
    dest = flag.removeprefix("--").replace("-", "_")
    p.add_argument(flag, type=float, default=default, metavar="S", help=help)
    p.add_argument(old, type=float, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _state_args(p: argparse.ArgumentParser) -> None:
    add_namespace_arg(p)
    add_state_dir_arg(p)


def add_state_dir_arg(p: argparse.ArgumentParser, flag: str = "--state-dir") -> None:
    """The folder of the controller's snapshots (env HPCQ_SQD_STATE_DIR), for `hpcq sqd`,
    `hpcq archive` and a producer that reads elites from it."""
    p.add_argument(
        flag,
        dest="state_dir",
        default=os.environ.get("HPCQ_SQD_STATE_DIR"),
        help="folder of the controller snapshots (env HPCQ_SQD_STATE_DIR; "
        "default: <cache-dir>/sqd)",
    )


def state_path(args: argparse.Namespace) -> Path:
    """The namespace's snapshot file under the --state-dir (or <cache-dir>/sqd)."""
    if args.state_dir:
        state_dir = Path(args.state_dir)
    else:
        from hpcq.eval.settings import default_cache_dir

        cache = getattr(args, "cache_dir", None)
        state_dir = (Path(cache) if cache else default_cache_dir()) / "sqd"
    return state_path_for(state_dir, args.namespace)


def _config_path(args: argparse.Namespace) -> Path:
    if args.sqd_config:
        return Path(args.sqd_config)
    from hpcq.eval.problems import default_kernels_dir
    from hpcq.sqd.stages import default_config_path

    kernels = getattr(args, "kernels_dir", None)
    return default_config_path(Path(kernels) if kernels else default_kernels_dir())


async def cmd_sqd(args: argparse.Namespace) -> int:
    from hpcq.cli.common import open_telemetry
    from hpcq.pipeline.broker import BrokerSettings
    from hpcq.pipeline.topology import Topology
    from hpcq.sqd.service import SqdService, SqdSettings
    from hpcq.sqd.stages import load_config

    config = load_config(_config_path(args))  # bad technique names stop us here
    broker = BrokerSettings(url=args.amqp_url)
    service = SqdService(
        broker,
        Topology(namespace=args.namespace),
        config,
        SqdSettings(
            state_path=state_path(args),
            snapshot_every=args.snapshot_every,
            snapshot_interval_s=args.snapshot_interval_s,
            announce_interval_s=args.announce_interval_s,
            idle_exit_s=args.idle_exit_s,
            rebuild=args.rebuild,
        ),
    )
    service.telemetry = await open_telemetry(args)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    try:
        await service.run()
    finally:
        await service.telemetry.close()
    if service.snapshot_error is not None:
        raise InfraError(
            f"sqd stopped without writing its last snapshot: {service.snapshot_error}; "
            "free space or fix --state-dir, then start it again (it re-reads the records "
            "since its last snapshot from the stream)"
        )
    return EXIT_OK


# --- archive ---------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> tuple[dict[str, Any], list[ProblemState], Archive]:
    path = state_path(args)
    doc = read_snapshot(path)
    if doc is None:
        raise InputError(
            f"no SQD state at {path}: run `hpcq sqd --namespace {args.namespace}` first "
            "(or pass --state-dir)"
        )
    state = doc["state"]
    problems = [problem_from_json(p) for p in state["problems"]]
    return doc, problems, Archive.from_json(state["archive"])


def _stage_rows(problems: list[ProblemState]) -> list[list[str]]:
    rows = [["problem", "index", "stage", "steps", "results", "best_gflops", "ended_by"]]
    for p in problems:
        for r in p.timeline:
            best = r.progress.best_gflops
            rows.append([
                p.problem_id, str(r.index), r.stage.name, str(len(r.progress.steps)),
                str(r.progress.results), "-" if best is None else f"{best:.2f}",
                r.ended_by or "(current)",
            ])  # fmt: skip
    return rows


def _cell_rows(archive: Archive, problem: str | None) -> list[list[str]]:
    rows = [["problem", "cell", "gflops", "count", "step", "policy", "stage", "task_id"]]
    for e in archive.elites(problem):
        cell = archive.cells[(e.problem_id, e.techniques)]
        rows.append([
            e.problem_id, e.cell, f"{e.gflops:.2f}", str(cell.count), str(e.step),
            str(e.policy_version), e.stage, e.task_id,
        ])  # fmt: skip
    return rows


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)  # fmt: skip


def _summary(doc: dict[str, Any], archive: Archive) -> dict[str, Any]:
    state = doc["state"]
    filled, possible = archive.coverage()
    return {
        "namespace": doc.get("namespace"),
        "offset": doc.get("offset"),
        "results": state["results"],
        "duplicates": state["duplicates"],
        "orphans": state["orphans"],
        "cells": filled,
        "possible_cells": possible,
        "qd_score": round(archive.qd_score(), 3),
        "step_reports": state["step_reports"][-1:],
    }


def cmd_archive_show(args: argparse.Namespace) -> int:
    doc, problems, archive = _load(args)
    problems = [p for p in problems if args.problem in (None, p.problem_id)]
    if args.json:
        cells = [
            {**{k: v for k, v in e.to_json().items() if k != "source"},
             "count": archive.cells[(e.problem_id, e.techniques)].count}
            for e in archive.elites(args.problem)
        ]  # fmt: skip
        print(json.dumps({"summary": _summary(doc, archive), "cells": cells,
                          "stages": _stage_rows(problems)[1:]}))  # fmt: skip
        return EXIT_OK
    s = _summary(doc, archive)
    print(
        f"namespace {s['namespace']}: {s['results']} results counted "
        f"({s['duplicates']} duplicates dropped, {s['orphans']} orphans), "
        f"coverage {s['cells']}/{s['possible_cells']}, QD-score {s['qd_score']:.2f}"
    )
    for p in problems:
        filled, possible = archive.coverage(p.problem_id)
        print(
            f"  {p.problem_id}: schedule {p.schedule}, stage {p.current.index} "
            f"{p.current.stage.name!r}, coverage {filled}/{possible}, "
            f"QD-score {archive.qd_score(p.problem_id):.2f}"
        )
    if s["step_reports"]:
        print(f"  last step report: {json.dumps(s['step_reports'][-1])}")
    print("\nstages\n" + _table(_stage_rows(problems)))
    print("\ncells\n" + _table(_cell_rows(archive, args.problem)))
    return EXIT_OK


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def _elite_file(e: Elite) -> str:
    head = (
        f"/* hpcq SQD elite: problem {e.problem_id}, cell {e.cell}, {e.gflops:.2f} GFLOPS,\n"
        f"   step {e.step}, policy version {e.policy_version}, stage {e.stage}, "
        f"task {e.task_id} */\n"
    )
    return head + e.source


def cmd_archive_export(args: argparse.Namespace) -> int:
    from hpcq.figures import PlotsUnavailable
    from hpcq.sqd.plots import heatmap_png, timeline_png

    doc, problems, archive = _load(args)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create it: {exc.strerror}") from exc
    for name, rows in (("cells.csv", _cell_rows(archive, None)),
                       ("stages.csv", _stage_rows(problems))):  # fmt: skip
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        (out / name).write_text(buf.getvalue())
    (out / "summary.json").write_text(json.dumps(_summary(doc, archive), indent=1) + "\n")
    for e in archive.elites():
        folder = out / "elites" / _safe(e.problem_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{_safe(e.cell)}.c").write_text(_elite_file(e))
    try:
        for p in problems:
            (out / f"timeline-{_safe(p.problem_id)}.png").write_bytes(timeline_png(p))
        (out / "heatmap.png").write_bytes(heatmap_png(archive))
    except PlotsUnavailable as exc:  # the tables and sources stand without pictures
        print(f"wrote {len(archive.cells)} elites and the tables to {out}; no plots: {exc}")
        return EXIT_OK
    print(f"wrote {len(archive.cells)} elites, {len(problems)} timelines and a heatmap to {out}")
    return EXIT_OK
