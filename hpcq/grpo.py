"""The online GRPO loop on the producer.

One step:
    1. pick `prompts_per_step` problems, build their prompts under the current stages;
    2. the policy samples G completions per prompt (in a thread: the event loop keeps
       serving the broker while the model generates);
    3. the groups go through the pipeline and come back scored (hpcq.rollout) with the
       run's own reward settings, never the consumers';
    4. groups that are ties or have too few survivors are dropped, or, with
       `on_tie = "resample"`, replaced by new groups (DAPO's dynamic sampling) for at
       most `max_resample_rounds` more rounds;
    5. group-relative advantages (hpcq.advantages), then one policy update;
    6. a line of metrics, and a checkpoint every `checkpoint_every` steps.
A restarted run resumes from its newest checkpoint (hpcq.checkpoint).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from hpcq import checkpoint, metrics
from hpcq.advantages import drop_reason, group_advantages
from hpcq.metrics import StepMetrics
from hpcq.outcome import Status
from hpcq.policy import Policy, Scored, UpdateStats
from hpcq.problems import Problem
from hpcq.prompts import StageSource, build_prompt
from hpcq.rollout import LEFT_OUT, Context, GroupChannel, Member, Prompted, score
from hpcq.train_settings import TrainSettings

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


async def _round(
    run: Run, step: int, count: int, rng: random.Random
) -> tuple[list[list[Member]], float, float]:
    """Sample and score `count` groups; returns them with (generate_s, rewards_s)."""
    problems = [rng.choice(run.problems) for _ in range(count)]
    stages = [run.stages.stage_for(p.id) for p in problems]
    loop_s = run.settings.loop
    prompts = [
        build_prompt(p, s, loop_s.cores_per_task) for p, s in zip(problems, stages, strict=True)
    ]
    t0 = time.monotonic()
    samples = await asyncio.to_thread(run.policy.generate, prompts, loop_s.group_size)
    t1 = time.monotonic()
    batch = [
        Prompted(p, s.constraints, tuple(g))
        for p, s, g in zip(problems, stages, samples, strict=True)
    ]
    ctx = Context(run.run_id, step, run.settings.reward, run.node_class, loop_s.reward_wait_s)
    groups = await score(run.channel, batch, ctx)
    return groups, t1 - t0, time.monotonic() - t1


async def train_step(run: Run, step: int, rng: random.Random) -> StepMetrics:
    loop_s, adv_s = run.settings.loop, run.settings.advantage
    kept: list[list[Member]] = []
    seen: list[list[Member]] = []
    reasons: Counter[str] = Counter()
    t_gen = t_rew = 0.0
    rounds = 0
    while rounds == 0 or (
        loop_s.on_tie == "resample"
        and len(kept) < loop_s.prompts_per_step
        and rounds <= loop_s.max_resample_rounds
    ):
        groups, g_s, r_s = await _round(run, step, loop_s.prompts_per_step - len(kept), rng)
        t_gen, t_rew, rounds = t_gen + g_s, t_rew + r_s, rounds + 1
        for g in groups:
            seen.append(g)
            why = drop_reason([m.reward for m in g], adv_s)
            if why:
                reasons[why] += 1
            else:
                kept.append(g)
    advantages = group_advantages([[m.reward for m in g] for g in kept], adv_s)
    batch = [
        Scored(m.sample, a)
        for g, ga in zip(kept, advantages, strict=True)
        for m, a in zip(g, ga.advantages, strict=True)
        if a is not None
    ]
    t0 = time.monotonic()
    stats = await asyncio.to_thread(run.policy.update, batch) if batch else NO_UPDATE
    t_upd = time.monotonic() - t0
    return _metrics(run, step, seen, reasons, stats, rounds, (t_gen, t_rew, t_upd))


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
    rewards = [m.reward for m in members if m.reward is not None]
    gflops = [m.gflops for m in members if m.status == Status.OK and m.gflops is not None]
    statuses = Counter(m.status for m in members)
    names = [str(s) for s in Status if s is not Status.INFRA_ERROR] + [LEFT_OUT]
    per_problem: dict[str, list[float]] = {}
    for m in members:
        if m.reward is not None:
            per_problem.setdefault(m.problem_id, []).append(m.reward)
    lengths = [len(m.sample.completion_ids) for m in members]
    dropped = sum(reasons.values())
    return StepMetrics(
        step=step,
        policy_version=run.policy.version,
        samples=len(members),
        groups=len(groups),
        groups_dropped=dropped,
        frac_groups_dropped=dropped / max(1, len(groups)),
        drop_reasons=dict(reasons),
        reward_mean=statistics.fmean(rewards) if rewards else None,
        reward_std=statistics.pstdev(rewards) if rewards else None,
        gflops_best=max(gflops) if gflops else None,
        gflops_mean=statistics.fmean(gflops) if gflops else None,
        status_fractions={n: statuses.get(n, 0) / max(1, len(members)) for n in names},
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
        eval_busy_s=sum(m.eval_s for m in members),
        problems={p: statistics.fmean(r) for p, r in sorted(per_problem.items())},
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
    for step in range(start, loop_s.steps + 1):
        m = await train_step(run, step, rng)
        metrics.append(run.run_dir, m)
        if on_step is not None:
            on_step(m)
        if step % loop_s.checkpoint_every == 0 or step == loop_s.steps:
            checkpoint.save(run.run_dir, run.policy, step, run.run_id, rng, loop_s.keep_checkpoints)
    return step
