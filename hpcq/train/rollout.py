"""From sampled completions to scored group members, through the pipeline.

Each prompt's G completions become one group of tasks. Completions without usable code
are judged here as format violations and never sent; the rest go to the CPU nodes via
the producer core, which hands the group back complete: a result per member, or the
member left out (infra_error or deadline after its retries), with no reward.

`Rollouts` keeps groups in flight across steps and policy versions (asynchronous
rollouts, hpcq.train.loop); `score` is one batch through it, waited for whole.

Rewards are the run's: every member is scored here by `hpcq.eval.reward.training_reward`
with `Context.rewards` from the raw measurement, whatever reward the consumer's own TOML
put on the result. A result the run's shaping cannot score (an ok without the slot's
peak under fraction_of_peak) is left out, never guessed.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from hpcq.errors import InfraError
from hpcq.eval.problems import Problem
from hpcq.eval.reward import training_reward
from hpcq.eval.settings import RewardSettings
from hpcq.outcome import Constraints, EvalResult, Status
from hpcq.pipeline.messages import Result, Task
from hpcq.pipeline.producer import CompletedGroup
from hpcq.train.extract import extract_code
from hpcq.train.policy import Sample

log = structlog.get_logger()

LEFT_OUT = "left_out"  # the member's status when the pipeline could not judge it


class GroupChannel(Protocol):
    """What the loop needs of the producer core (`hpcq.pipeline.producer.Producer` is one)."""

    async def submit_group(self, tasks: Sequence[Task]) -> None: ...

    async def next_group(self, timeout_s: float | None = None) -> CompletedGroup: ...


@dataclass(frozen=True)
class Member:
    sample: Sample
    problem_id: str
    status: str  # a hpcq.outcome.Status value, or LEFT_OUT
    reward: float | None  # None: left out of the group's statistics
    gflops: float | None = None
    eval_s: float = 0.0  # time a CPU node spent on it
    message: str = ""


@dataclass(frozen=True)
class Prompted:
    """One prompt's completions and what they were asked under."""

    problem: Problem
    constraints: Constraints
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Context:
    run_id: str
    step: int
    rewards: RewardSettings  # the run's: the only reward settings training uses
    node_class: str
    wait_s: float = 7200.0


def _tasks(p: Prompted, group_id: str, ctx: Context) -> tuple[list[Task], dict[int, Member]]:
    tasks, local = [], {}
    for i, s in enumerate(p.samples):
        code = extract_code(s.text, p.problem.entry)
        if code.source is None:
            verdict = EvalResult(Status.VIOLATION, None, message=code.message)
            reward = training_reward(verdict, ctx.rewards)
            local[i] = Member(s, p.problem.id, str(Status.VIOLATION), reward, message=code.message)
            continue
        tasks.append(
            Task(
                task_id=f"{group_id}.{i}",
                problem_id=p.problem.id,
                source=code.source,
                constraints=p.constraints,
                node_class=ctx.node_class,
                run_id=ctx.run_id,
                step=ctx.step,
                group_id=group_id,
                member=i,
                policy_version=s.policy_version,
            )
        )
    return tasks, local


def _member(p: Prompted, r: Result, rewards: RewardSettings) -> Member:
    o = r.outcome
    sample, eval_s = p.samples[r.member], max(0.0, r.finished_at - r.started_at)
    try:
        reward = training_reward(o, rewards)
    except ValueError as exc:
        log.warning("result.unscorable", task_id=r.task_id, consumer=r.consumer, why=str(exc))
        why = f"unscorable {o.status} result from {r.consumer}: {exc}"
        return Member(sample, p.problem.id, LEFT_OUT, None, o.gflops, eval_s, why[:200])
    return Member(sample, p.problem.id, str(o.status), reward, o.gflops, eval_s, o.message[:200])


def _from_group(
    p: Prompted, done: CompletedGroup, members: dict[int, Member], rewards: RewardSettings
) -> None:
    for r in done.results:
        members[r.member] = _member(p, r, rewards)
    for lo in done.left_out:
        i = lo.task.member
        members[i] = Member(p.samples[i], p.problem.id, LEFT_OUT, None, message=lo.reason[:200])


@dataclass(frozen=True)
class Group:
    """One prompt's group back from the pipeline, every member scored or left out."""

    group_id: str
    prompted: Prompted  # with the constraints it was sampled (and judged) under
    members: tuple[Member, ...]  # in sample order
    version: int  # policy version that sampled it: the behaviour policy
    step: int  # the loop's step while it was sampled


@dataclass
class _Flying:
    prompted: Prompted
    members: dict[int, Member]  # filled as results arrive; violations from the start
    ctx: Context


class Rollouts:
    """Groups in flight: submitted as they are sampled, handed back one by one as they
    complete, across steps and policy versions (asynchronous rollouts), or a step's
    batch at a time (`score`).

    A group this object did not submit is ignored and counted (`ignored`): the late
    results of a crashed incarnation of the run, whose task ids a resumed run never
    reuses, can never be taken for its own samples."""

    def __init__(self, channel: GroupChannel) -> None:
        self.channel = channel
        self._flying: dict[str, _Flying] = {}
        self._done: deque[Group] = deque()  # groups judged here (nothing to send)
        self.ignored = 0

    @property
    def ahead(self) -> int:
        """Groups submitted and not yet handed back by `next`."""
        return len(self._flying) + len(self._done)

    async def submit(self, p: Prompted, ctx: Context) -> str:
        # A fresh token per group: a resumed run regenerates a step under new task ids.
        group_id = f"{ctx.run_id}.s{ctx.step}.{uuid.uuid4().hex[:12]}"
        tasks, local = _tasks(p, group_id, ctx)
        if tasks:
            await self.channel.submit_group(tasks)
            self._flying[group_id] = _Flying(p, local, ctx)
        else:
            self._done.append(_group(group_id, p, local, ctx.step))
        return group_id

    async def next(self, timeout_s: float | None = None) -> Group:
        """The next complete group, in completion order; TimeoutError after `timeout_s`."""
        if self._done:
            return self._done.popleft()
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            done = await self.channel.next_group(left)
            flying = self._flying.pop(done.group_id, None)
            if flying is None:
                self.ignored += 1  # not ours: a previous incarnation's group
                log.info("rollout: a group this run did not submit", group=done.group_id,
                         ignored=self.ignored)  # fmt: skip
                continue
            _from_group(flying.prompted, done, flying.members, flying.ctx.rewards)
            return _group(done.group_id, flying.prompted, flying.members, flying.ctx.step)


def _group(group_id: str, p: Prompted, members: dict[int, Member], step: int) -> Group:
    version = min((s.policy_version for s in p.samples), default=0)
    ordered = tuple(members[i] for i in range(len(p.samples)))
    return Group(group_id, p, ordered, version, step)


async def score(
    channel: GroupChannel, batch: Sequence[Prompted], ctx: Context
) -> list[list[Member]]:
    """Rewards for every member of every group, in input order."""
    flight = Rollouts(channel)
    ids = [await flight.submit(p, ctx) for p in batch]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.wait_s
    groups: dict[str, Group] = {}
    while flight.ahead:
        try:
            g = await flight.next(max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise InfraError(
                f"step {ctx.step}: {flight.ahead} group(s) still unscored after {ctx.wait_s:g} s; "
                "are consumers running for this namespace and node class?"
            ) from None
        groups[g.group_id] = g
    return [list(groups[i].members) for i in ids]


def member_figures(
    groups: Sequence[Sequence[Member]], reasons: Mapping[str, int]
) -> dict[str, Any]:
    """The `StepMetrics` fields that come from a step's scored members alone, for every
    loop that writes metrics.jsonl (hpcq.train.loop and the TRL launcher): counts, drops,
    rewards, GFLOPS of ok kernels, the status mix, evaluation time and per-problem means.
    `reasons`: dropped groups by why."""
    members = [m for g in groups for m in g]
    rewards = [m.reward for m in members if m.reward is not None]
    gflops = [m.gflops for m in members if m.status == Status.OK and m.gflops is not None]
    statuses = Counter(m.status for m in members)
    names = [str(s) for s in Status if s is not Status.INFRA_ERROR] + [LEFT_OUT]
    per_problem: dict[str, list[float]] = {}
    for m in members:
        if m.reward is not None:
            per_problem.setdefault(m.problem_id, []).append(m.reward)
    dropped = sum(reasons.values())
    return {
        "samples": len(members),
        "groups": len(groups),
        "groups_dropped": dropped,
        "frac_groups_dropped": dropped / max(1, len(groups)),
        "drop_reasons": dict(reasons),
        "reward_mean": statistics.fmean(rewards) if rewards else None,
        "reward_std": statistics.pstdev(rewards) if rewards else None,
        "gflops_best": max(gflops) if gflops else None,
        "gflops_mean": statistics.fmean(gflops) if gflops else None,
        "status_fractions": {n: statuses.get(n, 0) / max(1, len(members)) for n in names},
        "eval_busy_s": sum(m.eval_s for m in members),
        "problems": {p: statistics.fmean(r) for p, r in sorted(per_problem.items())},
    }
