"""The Staged Quality-Diversity controller as a pure state machine.

Fed the pipeline's records in stream order (a Task before its Result), it keeps, per
problem, the current stage and its progress, fills the MAP-Elites archive, and returns
the stage changes to announce. No I/O, no clock: the same records in the same order give
the same state, which is what makes a restart (resume from a snapshot) and a rebuild
(replay the stream from the start) reach the identical state. `hpcq.sqd.service` wires
it to the broker and persists it.

Counting rules:
- A result is counted once per task_id (`counted`), however many times it arrives.
  An `infra_error` result is not counted: the task is retried and its next result is
  the one that counts.
- A result counts toward the current stage only if its task carried exactly the stage's
  constraints (a task generated for an earlier stage may still be in flight). Every
  correct result enters the archive.
- A result whose task was never seen (the stream was cut by retention) is an orphan:
  without its source it can neither be an elite nor be judged against a stage.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from hpcq.errors import ConfigError
from hpcq.outcome import Constraints, Status
from hpcq.pipeline.messages import Record, Result, Task
from hpcq.sqd.advance import AdvanceRule, StageProgress, reason_to_advance
from hpcq.sqd.archive import Archive, Elite
from hpcq.sqd.stages import Schedule, SqdConfig, Stage

log = structlog.get_logger()

STATE_VERSION = 1


@dataclass(frozen=True)
class Limits:
    """Bounds on the memory of the controller (and the size of its snapshot)."""

    pending_tasks: int = 100_000
    """Tasks kept while their result is awaited; the oldest is forgotten beyond this."""
    dedupe_window: int = 1_000_000
    """Task ids remembered as counted. Redeliveries come within minutes, so a window of
    the last million results is as good as forever and keeps snapshots bounded."""


@dataclass(frozen=True)
class StageChange:
    """A problem entered a stage: what `hpcq sqd` announces on the control exchange."""

    problem_id: str
    index: int  # position in the problem's schedule; increases by one per change
    stage: Stage
    reason: str
    run_id: str
    policy_version: int
    step: int  # the step of the result that ended the previous stage (0 at start)


@dataclass(frozen=True)
class _TaskInfo:
    problem_id: str
    source: str
    constraints: Constraints


@dataclass
class StageRecord:
    """One stage in a problem's timeline; the last one is the current stage."""

    index: int
    stage: Stage
    started_by: str  # why it began
    start_step: int
    progress: StageProgress = field(default_factory=StageProgress)
    step_best: dict[int, float] = field(default_factory=dict)  # best GFLOPS per step (plots)
    ended_by: str = ""


@dataclass
class ProblemState:
    problem_id: str
    schedule: str
    timeline: list[StageRecord]
    statuses: dict[str, int] = field(default_factory=dict)  # counted results per status
    off_stage: int = 0  # counted results generated under another stage's constraints
    run_id: str = ""  # of the latest counted result (re-announcements carry it)
    policy_version: int = 0

    @property
    def current(self) -> StageRecord:
        return self.timeline[-1]


class Controller:
    def __init__(self, config: SqdConfig, limits: Limits | None = None) -> None:
        self.config = config
        self.limits = limits or Limits()
        self.archive = Archive()
        self.problems: dict[str, ProblemState] = {}
        self.counted: OrderedDict[str, None] = OrderedDict()
        self.pending: OrderedDict[str, _TaskInfo] = OrderedDict()
        self.results = 0  # counted results
        self.duplicates = 0
        self.orphans = 0
        self.infra_errors = 0
        self.undecodable = 0  # stream messages that were no record (counted by the service)
        self.last_step: int | None = None
        self.step_reports: list[dict[str, Any]] = []

    # --- input ---------------------------------------------------------------------

    def feed(self, record: Record) -> list[StageChange]:
        if isinstance(record, Task):
            self.on_task(record)
        elif isinstance(record, Result):
            return self.on_result(record)
        return []  # heartbeats and stage updates are not ours to count

    def on_task(self, task: Task) -> None:
        if task.task_id in self.counted:
            return  # a retry published after its result was counted
        self.pending[task.task_id] = _TaskInfo(task.problem_id, task.source, task.constraints)
        self.pending.move_to_end(task.task_id)
        while len(self.pending) > self.limits.pending_tasks:
            self.pending.popitem(last=False)

    def on_result(self, result: Result) -> list[StageChange]:
        if result.task_id in self.counted:
            self.duplicates += 1
            return []
        outcome = result.outcome
        if outcome.status is Status.INFRA_ERROR:
            self.infra_errors += 1  # the retry's result counts, not this one
            return []
        task = self.pending.pop(result.task_id, None)
        if task is None:
            self.orphans += 1
            return []
        self._mark_counted(result.task_id)
        self.results += 1
        self._report_steps(result.step)
        changes: list[StageChange] = []
        state = self.problems.get(task.problem_id)
        if state is None:
            state, first = self._start(task.problem_id, result)
            changes.append(first)
        state.statuses[str(outcome.status)] = state.statuses.get(str(outcome.status), 0) + 1
        state.run_id, state.policy_version = result.run_id, result.policy_version
        gflops = outcome.gflops if outcome.status is Status.OK else None
        techniques = frozenset(outcome.techniques)
        if gflops is not None:
            self.archive.add(
                Elite(
                    task_id=result.task_id,
                    problem_id=task.problem_id,
                    techniques=techniques,
                    gflops=gflops,
                    source=task.source,
                    step=result.step,
                    policy_version=result.policy_version,
                    stage=state.current.stage.name,
                )
            )
        record = state.current
        if task.constraints != record.stage.constraints:
            state.off_stage += 1
            return changes
        rule = record.stage.advance
        record.progress.observe(
            result.step, gflops, result.task_id, techniques, rule.plateau_pct or 0.0
        )
        if gflops is not None and gflops > record.step_best.get(result.step, -1.0):
            record.step_best[result.step] = gflops
        change = self._maybe_advance(state, result)
        if change is not None:
            changes.append(change)
        return changes

    def _mark_counted(self, task_id: str) -> None:
        self.counted[task_id] = None
        while len(self.counted) > self.limits.dedupe_window:
            self.counted.popitem(last=False)

    def _report_steps(self, step: int) -> None:
        """Coverage and QD-score once per step, when the first result of a later step
        arrives (the earlier step's results are then, mostly, in)."""
        if self.last_step is not None and step > self.last_step:
            filled, possible = self.archive.coverage()
            report = {
                "step": self.last_step,
                "cells": filled,
                "coverage": round(filled / possible, 6) if possible else 0.0,
                "qd_score": round(self.archive.qd_score(), 6),
            }
            self.step_reports.append(report)
            log.info("sqd.step", **report)
        if self.last_step is None or step > self.last_step:
            self.last_step = step

    # --- stages ----------------------------------------------------------------------

    def _start(self, problem_id: str, result: Result) -> tuple[ProblemState, StageChange]:
        plan = self.config.plan(problem_id)
        stage = self.config.schedules[plan.schedule].stages[0]
        state = ProblemState(
            problem_id, plan.schedule, [StageRecord(0, stage, "start", result.step)]
        )
        self.problems[problem_id] = state
        return state, self._change(state, result, "start")

    def _maybe_advance(self, state: ProblemState, result: Result) -> StageChange | None:
        schedule = self.config.schedules[state.schedule]
        record = state.current
        if not schedule.diversity and record.index >= len(schedule.stages) - 1:
            return None  # the last stage of a fixed schedule stays
        reference = self.config.plan(state.problem_id).reference_gflops
        reason = reason_to_advance(record.stage.advance, record.progress, reference)
        if reason is None:
            return None
        record.ended_by = reason
        nxt = self._next_stage(state, schedule)
        state.timeline.append(StageRecord(record.index + 1, nxt, reason, result.step))
        log.info(
            "sqd.stage",
            problem=state.problem_id,
            stage=nxt.name,
            index=record.index + 1,
            reason=reason,
        )
        return self._change(state, result, reason)

    def _next_stage(self, state: ProblemState, schedule: Schedule) -> Stage:
        record = state.current
        index = record.index + 1
        listed = schedule.listed(index)
        if listed is not None:
            return listed
        if index >= schedule.max_stages - 1:
            return schedule.final_stage(index)
        technique = self._most_relied_on(state, schedule)
        if technique is None:
            return schedule.final_stage(index)
        forbidden = frozenset({technique})
        if schedule.keep_forbidden:
            forbidden |= record.stage.constraints.forbidden
        return schedule.made_stage(index, forbidden, technique)

    def _most_relied_on(self, state: ProblemState, schedule: Schedule) -> str | None:
        """From the best kernel of the ending stage, or of the whole problem when the
        stage had no correct kernel."""
        progress = state.current.progress
        if progress.best_gflops is not None:
            techniques, gflops = frozenset(progress.best_techniques), progress.best_gflops
        else:
            elites = self.archive.elites(state.problem_id)
            if not elites:
                return None
            techniques, gflops = elites[0].techniques, elites[0].gflops
        return self.archive.most_relied_on(state.problem_id, techniques, gflops, schedule.tie_order)

    def _change(self, state: ProblemState, result: Result, reason: str) -> StageChange:
        return StageChange(
            problem_id=state.problem_id,
            index=state.current.index,
            stage=state.current.stage,
            reason=reason,
            run_id=result.run_id,
            policy_version=result.policy_version,
            step=result.step,
        )

    def current(self) -> list[StageChange]:
        """The current stage of every problem, as changes to announce again (a producer
        that started late learns them; receivers drop what they already have)."""
        return [
            StageChange(
                problem_id=p,
                index=s.current.index,
                stage=s.current.stage,
                reason=s.current.started_by,
                run_id=s.run_id,
                policy_version=s.policy_version,
                step=s.current.start_step,
            )
            for p, s in sorted(self.problems.items())
        ]

    # --- persistence -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The whole state as JSON-ready data, in a deterministic order."""
        return {
            "version": STATE_VERSION,
            "config": self.config.fingerprint,
            "results": self.results,
            "duplicates": self.duplicates,
            "orphans": self.orphans,
            "infra_errors": self.infra_errors,
            "undecodable": self.undecodable,
            "last_step": self.last_step,
            "step_reports": self.step_reports,
            "counted": list(self.counted),
            "pending": [
                {
                    "task_id": k,
                    "problem_id": t.problem_id,
                    "source": t.source,
                    **_constraints_json(t.constraints),
                }
                for k, t in self.pending.items()
            ],
            "problems": [problem_json(s) for _, s in sorted(self.problems.items())],
            "archive": self.archive.to_json(),
        }

    @classmethod
    def from_json(
        cls, config: SqdConfig, data: Mapping[str, Any], limits: Limits | None = None
    ) -> Controller:
        if data.get("version") != STATE_VERSION:
            raise ConfigError(
                f"SQD state version {data.get('version')!r}, this hpcq writes {STATE_VERSION}: "
                "rebuild it from the stream (`hpcq sqd --rebuild`)"
            )
        if data.get("config") != config.fingerprint:
            raise ConfigError(
                f"the SQD state was made under another schedule config than {config.source}; "
                "use the same file, or rebuild the state from the stream (`hpcq sqd --rebuild`)"
            )
        c = cls(config, limits)
        for key in ("results", "duplicates", "orphans", "infra_errors", "undecodable"):
            setattr(c, key, int(data[key]))
        c.last_step = data["last_step"]
        c.step_reports = list(data["step_reports"])
        c.counted = OrderedDict((k, None) for k in data["counted"])
        c.pending = OrderedDict(
            (p["task_id"], _TaskInfo(p["problem_id"], p["source"], _constraints_from(p)))
            for p in data["pending"]
        )
        c.problems = {p["problem_id"]: problem_from_json(p) for p in data["problems"]}
        c.archive = Archive.from_json(data["archive"])
        return c


# --- JSON shapes of the state ----------------------------------------------------------


def _constraints_json(c: Constraints) -> dict[str, list[str]]:
    return {"forbidden": sorted(c.forbidden), "required": sorted(c.required)}


def _constraints_from(d: Mapping[str, Any]) -> Constraints:
    return Constraints(forbidden=frozenset(d["forbidden"]), required=frozenset(d["required"]))


def stage_json(s: Stage) -> dict[str, Any]:
    return {
        "name": s.name,
        **_constraints_json(s.constraints),
        "prompt": s.prompt,
        "advance": dataclasses.asdict(s.advance),
    }


def stage_from(d: Mapping[str, Any]) -> Stage:
    return Stage(
        name=d["name"],
        constraints=_constraints_from(d),
        prompt=d["prompt"],
        advance=AdvanceRule(**d["advance"]),
    )


def problem_json(s: ProblemState) -> dict[str, Any]:
    return {
        "problem_id": s.problem_id,
        "schedule": s.schedule,
        "statuses": dict(sorted(s.statuses.items())),
        "off_stage": s.off_stage,
        "run_id": s.run_id,
        "policy_version": s.policy_version,
        "timeline": [
            {
                "index": r.index,
                "stage": stage_json(r.stage),
                "started_by": r.started_by,
                "start_step": r.start_step,
                "ended_by": r.ended_by,
                "progress": r.progress.to_json(),
                "step_best": [[k, v] for k, v in sorted(r.step_best.items())],
            }
            for r in s.timeline
        ],
    }


def problem_from_json(d: Mapping[str, Any]) -> ProblemState:
    timeline = [
        StageRecord(
            index=r["index"],
            stage=stage_from(r["stage"]),
            started_by=r["started_by"],
            start_step=r["start_step"],
            progress=StageProgress.from_json(r["progress"]),
            step_best={int(k): float(v) for k, v in r["step_best"]},
            ended_by=r["ended_by"],
        )
        for r in d["timeline"]
    ]
    return ProblemState(
        problem_id=d["problem_id"],
        schedule=d["schedule"],
        timeline=timeline,
        statuses=dict(d["statuses"]),
        off_stage=int(d["off_stage"]),
        run_id=d["run_id"],
        policy_version=int(d["policy_version"]),
    )
