"""The online GRPO loop on the producer.

One step:
    1. pick problems, build their prompts under the current stages;
    2. the policy samples G completions per prompt (in a thread: the event loop keeps
       serving the broker while the model generates);
    3. the groups go through the pipeline and come back scored (hpcq.train.rollout) with the
       run's own reward settings, never the consumers';
    4. the step takes `prompts_per_step` groups; ties and groups with too few survivors
       are dropped, or, with `on_tie = "resample"`, replaced by new groups (DAPO's
       dynamic sampling) for at most `max_resample_rounds` more rounds;
    5. group-relative advantages (hpcq.train.advantages), then one policy update;
    6. a line of metrics, and a checkpoint every `checkpoint_every` steps.
Synchronously (`max_staleness` = 0) a step samples its own groups and waits for all of
them. Asynchronously (`max_staleness` = k >= 1) sampling runs up to k steps ahead
(`admit`): the CPU nodes measure while the policy generates and trains, groups are
taken as they complete, and one sampled more than k versions before the weights it
would train is dropped and counted (`groups_stale`). The loss corrects for the rest
(truncated importance weights against the behaviour log-probs the samples carry,
bridges/grpo_loss.py).
A restarted run resumes from its newest checkpoint (hpcq.train.checkpoint).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from hpcq.errors import InfraError
from hpcq.eval.problems import Problem
from hpcq.train import checkpoint, metrics
from hpcq.train.advantages import drop_reason, group_advantages
from hpcq.train.metrics import StepMetrics
from hpcq.train.policy import Policy, Scored, UpdateStats
from hpcq.train.prompts import StageSource, build_prompt
from hpcq.train.rollout import (
    Context,
    Group,
    GroupChannel,
    Member,
    Prompted,
    Rollouts,
    member_figures,
)
from hpcq.train.settings import LoopSettings, TrainSettings

log = structlog.get_logger()

NO_UPDATE = UpdateStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)


@dataclass(frozen=True)
class Run:
    """Everything a step needs, fixed for the whole run."""

    policy: Policy
    channel: GroupChannel
    problems: tuple[Problem, ...]
    stages: StageSource
    settings: TrainSettings  # settings.reward is what the run trains on
    run_dir: Path
    run_id: str
    node_class: str  # routing key of the CPU nodes that measure this run's kernels


def admit(loop_s: LoopSettings, ahead: int, short: int, steps_left: int) -> int:
    """How many groups to sample now, at the current policy version.

    `ahead`: groups sampled and not yet taken by a step; `short`: groups the current step
    still needs; `steps_left`: steps after it. The groups the next `max_staleness` steps
    will take are admitted (AReaL's capacity rule): taken in order, a group sampled now
    is trained at most `max_staleness` updates later. `max_in_flight` caps the total.
    Synchronous (`max_staleness` = 0): one round at a time, nothing ahead."""
    if loop_s.max_staleness == 0 and ahead > 0:
        return 0
    window = short + loop_s.prompts_per_step * min(loop_s.max_staleness, steps_left)
    return max(0, min(loop_s.in_flight_limit, window) - ahead)


async def _sample(run: Run, flight: Rollouts, step: int, count: int, rng: random.Random) -> float:
    """Sample `count` groups and submit them; returns the seconds spent generating."""
    loop_s = run.settings.loop
    problems = [rng.choice(run.problems) for _ in range(count)]
    # The stage is read now: its constraints travel with the tasks, so a group is judged
    # under what it was sampled under, whatever the controller decides meanwhile.
    stages = [run.stages.stage_for(p.id) for p in problems]
    prompts = [
        build_prompt(p, s, loop_s.cores_per_task) for p, s in zip(problems, stages, strict=True)
    ]
    ctx = Context(run.run_id, step, run.settings.reward, run.node_class, loop_s.reward_wait_s)
    # Synchronously one call for the round; asynchronously a group at a time, so the
    # CPU nodes start on the first while the next is generated.
    per_call = count if loop_s.max_staleness == 0 else 1
    seconds = 0.0
    for k in range(0, count, per_call):
        t0 = time.monotonic()
        part = prompts[k : k + per_call]
        samples = await asyncio.to_thread(run.policy.generate, part, loop_s.group_size)
        seconds += time.monotonic() - t0
        chunk = zip(problems[k : k + per_call], stages[k : k + per_call], samples, strict=True)
        for p, s, g in chunk:
            await flight.submit(Prompted(p, s.constraints, tuple(g)), ctx)
    return seconds


async def _next(run: Run, flight: Rollouts, step: int) -> Group:
    wait_s = run.settings.loop.reward_wait_s
    try:
        return await flight.next(wait_s)
    except TimeoutError:
        raise InfraError(
            f"step {step}: no group's rewards came back in {wait_s:g} s "
            f"({flight.ahead} in flight); are consumers running for this namespace and "
            "node class?"
        ) from None


@dataclass
class _Taken:
    """What one step took from the pipeline."""

    kept: list[Group] = field(default_factory=list)
    seen: list[Group] = field(default_factory=list)  # kept, and dropped as ties / too few
    reasons: Counter[str] = field(default_factory=Counter)
    staleness: Counter[int] = field(default_factory=Counter)  # versions behind -> groups
    stale: int = 0  # over the bound: dropped before judging
    rounds: int = 0  # sampling rounds that replaced dropped groups
    generate_s: float = 0.0
    idle_s: float = 0.0


async def _take(run: Run, flight: Rollouts, step: int, rng: random.Random) -> _Taken:
    """Take `prompts_per_step` groups (kept or dropped; with on_tie = "resample" until
    that many are kept), sampling what the admission rule allows while waiting."""
    loop_s, adv_s = run.settings.loop, run.settings.advantage
    b = loop_s.prompts_per_step
    resample = loop_s.on_tie == "resample"
    limit = b * (1 + loop_s.max_resample_rounds) if resample else b
    steps_left = loop_s.steps - step
    t = _Taken()
    while len(t.kept) < b and len(t.seen) < limit:
        short = min(b - len(t.kept), limit - len(t.seen))
        n = admit(loop_s, flight.ahead, short, steps_left)
        replacing = resample and len(t.seen) > len(t.kept)
        if n and replacing:
            if t.rounds == loop_s.max_resample_rounds:
                n = 0
            else:
                t.rounds += 1
        if n:
            t.generate_s += await _sample(run, flight, step, n, rng)
        if not flight.ahead:
            break  # resampling rounds exhausted
        t0 = time.monotonic()
        group = await _next(run, flight, step)
        t.idle_s += time.monotonic() - t0
        behind = run.policy.version - group.version
        if behind > loop_s.max_staleness:
            t.stale += 1
            log.info("group.stale", group_id=group.group_id, behind=behind, step=step)
            continue
        t.staleness[behind] += 1
        t.seen.append(group)
        why = drop_reason([m.reward for m in group.members], adv_s)
        if why:
            t.reasons[why] += 1
        else:
            t.kept.append(group)
    # Sample ahead before the update: the CPU nodes measure these while the policy learns.
    n = admit(loop_s, flight.ahead, 0, steps_left)
    if n:
        t.generate_s += await _sample(run, flight, step, n, rng)
    return t


async def train_step(run: Run, step: int, rng: random.Random, flight: Rollouts) -> StepMetrics:
    t_start = time.monotonic()
    t = await _take(run, flight, step, rng)
    advantages = group_advantages(
        [[m.reward for m in g.members] for g in t.kept], run.settings.advantage
    )
    batch = [
        Scored(m.sample, a)
        for g, ga in zip(t.kept, advantages, strict=True)
        for m, a in zip(g.members, ga.advantages, strict=True)
        if a is not None
    ]
    t0 = time.monotonic()
    stats = await asyncio.to_thread(run.policy.update, batch) if batch else NO_UPDATE
    t_upd = time.monotonic() - t0
    times = (t.generate_s, t.idle_s, t_upd)
    m = _metrics(run, step, [g.members for g in t.seen], t.reasons, stats, t.rounds + 1, times)
    wall = time.monotonic() - t_start
    return dataclasses.replace(
        m,
        time_step_s=wall,
        idle_fraction=t.idle_s / wall if wall > 0 else 0.0,
        staleness={str(k): v for k, v in sorted(t.staleness.items())},
        groups_stale=t.stale,
        in_flight=flight.ahead,
        is_clip_frac=stats.is_clip_frac,
        is_weight_mean=stats.is_weight_mean,
    )


def _metrics(
    run: Run,
    step: int,
    groups: Sequence[Sequence[Member]],
    reasons: Counter[str],
    stats: UpdateStats,
    rounds: int,
    times: tuple[float, float, float],
) -> StepMetrics:
    members = [m for g in groups for m in g]
    lengths = [len(m.sample.completion_ids) for m in members]
    return StepMetrics(
        step=step,
        policy_version=run.policy.version,
        **member_figures(groups, reasons),
        kl=stats.kl,
        clip_low=stats.clip_low,
        clip_high=stats.clip_high,
        entropy=stats.entropy,
        loss=stats.loss,
        grad_norm=stats.grad_norm,
        completion_tokens_mean=statistics.fmean(lengths) if lengths else 0.0,
        truncated_fraction=sum(m.sample.truncated for m in members) / max(1, len(members)),
        resample_rounds=rounds - 1,
        time_generate_s=times[0],
        time_rewards_s=times[1],
        time_update_s=times[2],
        wall_time=time.time(),
        sampler_kl=stats.sampler_kl,
    )


async def train(run: Run, on_step: Callable[[StepMetrics], None] | None = None) -> int:
    """Run (or resume) the loop to `settings.loop.steps`; returns the last step done."""
    loop_s = run.settings.loop
    rng = random.Random(run.settings.policy.seed)
    state = checkpoint.resume(run.run_dir, run.policy, rng)
    start = 1
    if state is not None:
        start = state.step + 1
        metrics.truncate_after(run.run_dir, state.step)
        log.info("resumed", run_dir=str(run.run_dir), step=state.step, version=run.policy.version)
    else:
        metrics.truncate_after(run.run_dir, 0)  # a run that crashed before its first checkpoint
    step = start - 1
    # Groups still in flight when the run ends (or crashes) are abandoned: a resumed run
    # samples anew under new ids, and Rollouts ignores the old groups' late results.
    flight = Rollouts(run.channel)
    for step in range(start, loop_s.steps + 1):
        m = await train_step(run, step, rng, flight)
        metrics.append(run.run_dir, m)
        if on_step is not None:
            on_step(m)
        if step % loop_s.checkpoint_every == 0 or step == loop_s.steps:
            checkpoint.save(run.run_dir, run.policy, step, run.run_id, rng, loop_s.keep_checkpoints)
    return step
