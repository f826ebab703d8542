"""A TRL reward function that measures completions on hpcq's CPU nodes.

    reward = PipelineReward(BrokerSettings(url), Topology(namespace="hpcq"),
                            node_class=..., group_size=G, rank=args.process_index)
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], args=GRPOConfig(...), ...)

`python -m bridges.trl_train` builds all of this from a training TOML.

Each call sends the batch's completions through the same pipeline as `hpcq producer`
(code extraction, tasks with confirms, retries, results counted once per task) and
returns one reward per completion: GFLOPS for a correct kernel, the tier penalty for a
failure, and `None` for a member the pipeline could not judge (infra_error, deadline).
TRL (>= 1.14: the first to await an async callable class) turns `None` into NaN, leaves
it out of the group's mean and std, and gives that completion a zero advantage.

How TRL calls it (trl 1.16, `GRPOTrainer._calculate_rewards`): every process calls the
reward on its own slice of the generation batch (per_device_train_batch_size x
steps_per_generation rows, the G completions of a prompt on consecutive rows), then
the rewards are gathered and advantages computed over groups of G consecutive rows of
the gathered batch. Hence:
- each process has its own producer, named `<producer_name>-r<rank>`, so its own results
  queue: processes sharing one queue would take each other's results and their groups
  would never complete;
- a group must lie whole in one process's slice (the tie rule below needs all its
  rewards): the call refuses a slice that is not a whole number of groups.

Our tie rule survives TRL's group scaling: a group whose rewards tie within
`advantage.tie_rtol` / `tie_atol` (timing jitter), or with fewer than `min_members`
scored members, gets `None` for every member, so TRL gives it zero advantages instead
of turning jitter into +-1 (the group still counts in TRL's loss normalisation, where
our own loop drops it from the batch).

The reward is the run's: `rewards` (default: the paper's tiers and GFLOPS) applied here,
on the trainer's side, to the raw measurement (`hpcq.eval.reward.training_reward`, through
`hpcq.train.rollout.score`, the same function `hpcq producer` trains with). The reward figure
a consumer computed from its own TOML is ignored.

Each member is judged under the constraints it was sampled with: the dataset's
`forbidden` / `required` columns (`bridges.trl_dataset`, one list of technique names
per row), else `constraints`. A `problem_id` column picks the problem per row, else
`problem_id`. Every scored group is kept in `scored` for the run's metrics
(`take_scored`).

It is an async callable: TRL runs it on its own long-lived event loop thread, where the
producer's connection lives between calls; close it on that loop at the end:
`asyncio.run_coroutine_threadsafe(reward.close(), trainer.async_loop).result()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hpcq.errors import ConfigError, InputError
from hpcq.eval.problems import Problem, load_problem
from hpcq.eval.settings import RewardSettings, check_reward_settings
from hpcq.outcome import Constraints, Status
from hpcq.pipeline.broker import BrokerSettings
from hpcq.pipeline.producer import Producer, ProducerSettings
from hpcq.pipeline.topology import Topology, check_name
from hpcq.train.advantages import AdvantageSettings, drop_reason
from hpcq.train.policy import Sample
from hpcq.train.rollout import Context, Member, Prompted, score


def completion_text(completion: Any) -> str:
    """TRL passes plain strings, or for chat datasets a list of message dicts."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))


@dataclass(frozen=True)
class ScoredGroup:
    """One group as the pipeline judged it, for the run's metrics."""

    members: tuple[Member, ...]
    dropped: str  # "" when it counts, else hpcq.train.advantages.drop_reason's "tie" / "too_few"
    started: float  # time.monotonic() when the call began
    finished: float  # ... and when its rewards were back


def tie_masked(
    groups: Sequence[Sequence[float | None]], advantage: AdvantageSettings
) -> tuple[list[float | None], list[str]]:
    """Rewards as TRL should see them, flattened, and each group's drop reason: the
    members of a dropped group (tie, too few scored) all become None."""
    out: list[float | None] = []
    reasons = []
    for rewards in groups:
        why = drop_reason(rewards, advantage)
        reasons.append(why)
        out.extend([None] * len(rewards) if why else rewards)
    return out, reasons


def _constraints(
    forbidden: Sequence[Sequence[str]] | None,
    required: Sequence[Sequence[str]] | None,
    row: int,
    default: Constraints,
) -> Constraints:
    if forbidden is None and required is None:
        return default
    return Constraints(
        forbidden=frozenset(forbidden[row] if forbidden is not None else ()),
        required=frozenset(required[row] if required is not None else ()),
    )


class PipelineReward:
    __name__ = "hpcq_gflops"  # TRL names the reward's metrics after this

    def __init__(
        self,
        broker: BrokerSettings,
        topology: Topology,
        *,
        node_class: str,
        group_size: int,
        problem_id: str = "dgemm-256",
        constraints: Constraints | None = None,
        rewards: RewardSettings | None = None,
        advantage: AdvantageSettings | None = None,
        producer_name: str = "trl",
        rank: int = 0,
        run_id: str = "trl",
        wait_s: float = 3600.0,
    ) -> None:
        """`group_size`: TRL's num_generations. `rank`: the process's index in the
        training job (`GRPOConfig(...).process_index`), which names its results queue."""
        if group_size < 2 or rank < 0:
            raise ConfigError("group_size (TRL's num_generations) >= 2 and rank >= 0")
        self.broker = broker
        self.topology = topology
        self.node_class = node_class
        self.group_size = group_size
        self.problem_id = problem_id
        self.constraints = constraints or Constraints()
        self.rewards = rewards or RewardSettings()
        check_reward_settings(self.rewards)
        self.advantage = advantage or AdvantageSettings()
        self.producer_name = check_name("producer name", f"{producer_name}-r{rank}")
        self.run_id = run_id
        self.wait_s = wait_s
        self.calls = 0
        self.scored: list[ScoredGroup] = []
        self._producer: Producer | None = None

    async def _channel(self) -> Producer:
        if self._producer is None:
            producer = Producer(
                self.broker, self.topology, ProducerSettings(name=self.producer_name)
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.close()
            self._producer = None

    def take_scored(self) -> list[ScoredGroup]:
        """The groups scored since the last take (TRL's thread is idle between calls)."""
        taken, self.scored = self.scored, []
        return taken

    def _batch(
        self,
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None,
        problem_id: Sequence[str] | None,
        forbidden: Sequence[Sequence[str]] | None,
        required: Sequence[Sequence[str]] | None,
        version: int,
    ) -> list[Prompted]:
        g, n = self.group_size, len(completions)
        if n % g:
            raise ConfigError(
                f"this process got {n} completions, not whole groups of {g}: a group's "
                "rewards must be judged together (tie rule), so make "
                "per_device_train_batch_size x steps_per_generation a multiple of "
                "num_generations"
            )
        ids = list(problem_id) if problem_id is not None else [self.problem_id] * n
        problems: dict[str, Problem] = {p: load_problem(p) for p in set(ids)}
        batch = []
        for start in range(0, n, g):
            rows = range(start, start + g)
            asked = {(ids[i], _constraints(forbidden, required, i, self.constraints)) for i in rows}
            if len(asked) != 1:
                raise InputError(
                    f"rows {start}..{start + g - 1} are one group but were asked different "
                    "problems or stages: the dataset must give one prompt per group"
                )
            (pid, constraints), samples = asked.pop(), []
            for i in rows:
                tokens = tuple(completion_ids[i]) if completion_ids is not None else ()
                text = completion_text(completions[i])
                samples.append(Sample((), tokens, (), text, False, version))
            batch.append(Prompted(problems[pid], constraints, tuple(samples)))
        return batch

    async def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        problem_id: Sequence[str] | None = None,
        forbidden: Sequence[Sequence[str]] | None = None,
        required: Sequence[Sequence[str]] | None = None,
        trainer_state: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        **_: Any,
    ) -> list[float | None]:
        started = time.monotonic()
        self.calls += 1
        step = int(getattr(trainer_state, "global_step", self.calls - 1)) + 1
        batch = self._batch(completions, completion_ids, problem_id, forbidden, required, step - 1)
        ctx = Context(self.run_id, step, self.rewards, self.node_class, self.wait_s)
        groups = await score(await self._channel(), batch, ctx)
        out, reasons = tie_masked([[m.reward for m in g] for g in groups], self.advantage)
        finished = time.monotonic()
        self.scored += [
            ScoredGroup(tuple(g), why, started, finished)
            for g, why in zip(groups, reasons, strict=True)
        ]
        if log_metric is not None and groups:
            statuses = [m.status for g in groups for m in g]
            log_metric("hpcq/ok_fraction", statuses.count(str(Status.OK)) / len(statuses))
            log_metric("hpcq/groups_dropped", float(sum(1 for why in reasons if why)))
        return out
