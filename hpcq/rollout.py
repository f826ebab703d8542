"""From sampled completions to scored group members, through the pipeline.

Each prompt's G completions become one group of tasks. Completions without usable code
are judged here as format violations and never sent; the rest go to the CPU nodes via
the producer core, which hands the group back complete: a result per member, or the
member left out (infra_error or deadline after its retries), with no reward.

Rewards are the run's: every member is scored here by `hpcq.reward.training_reward`
with `Context.rewards` from the raw measurement, whatever reward the consumer's own TOML
put on the result. A result the run's shaping cannot score (an ok without the slot's
peak under fraction_of_peak) is left out, never guessed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from hpcq.errors import InfraError
from hpcq.extract import extract_code
from hpcq.messages import Result, Task
from hpcq.outcome import Constraints, EvalResult, Status
from hpcq.policy import Sample
from hpcq.problems import Problem
from hpcq.producer import CompletedGroup
from hpcq.reward import training_reward
from hpcq.settings import RewardSettings

log = structlog.get_logger()

LEFT_OUT = "left_out"  # the member's status when the pipeline could not judge it


class GroupChannel(Protocol):
    """What the loop needs of the producer core (`hpcq.producer.Producer` is one)."""

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


async def score(
    channel: GroupChannel, batch: Sequence[Prompted], ctx: Context
) -> list[list[Member]]:
    """Rewards for every member of every group, in input order."""
    members: list[dict[int, Member]] = []
    waiting: dict[str, int] = {}  # group_id -> index in batch
    # A fresh token per group: a resumed run regenerates a step under new task ids, so
    # late results of the crashed incarnation can never be taken for the new samples.
    for index, p in enumerate(batch):
        group_id = f"{ctx.run_id}.s{ctx.step}.{uuid.uuid4().hex[:12]}"
        tasks, local = _tasks(p, group_id, ctx)
        members.append(local)
        if tasks:
            await channel.submit_group(tasks)
            waiting[group_id] = index
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.wait_s
    while waiting:
        try:
            done = await channel.next_group(max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise InfraError(
                f"step {ctx.step}: {len(waiting)} group(s) still unscored after {ctx.wait_s:g} s; "
                "are consumers running for this namespace and node class?"
            ) from None
        index = waiting.pop(done.group_id, -1)
        if index < 0:
            continue  # not this step's (a previous incarnation's group)
        _from_group(batch[index], done, members[index], ctx.rewards)
    return [[m[i] for i in range(len(p.samples))] for p, m in zip(batch, members, strict=True)]
