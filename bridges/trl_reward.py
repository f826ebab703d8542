"""A TRL reward function that measures completions on hpcq's CPU nodes.

    reward = PipelineReward(BrokerSettings(url), Topology(namespace="hpcq"), node_class=...)
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], args=GRPOConfig(...), ...)

Each call sends the batch's completions through the same pipeline as `hpcq producer`
(code extraction, tasks with confirms, retries, results counted once per task) and
returns one reward per completion: GFLOPS for a correct kernel, the tier penalty for a
failure, and `None` for a member the pipeline could not judge (infra_error, deadline),
which TRL turns into NaN and leaves out of the group's baseline.

The reward is the run's: `rewards` (default: the paper's tiers and GFLOPS) applied here,
on the trainer's side, to the raw measurement (`hpcq.reward.training_reward`, through
`hpcq.rollout.score`, the same function `hpcq producer` trains with). The reward figure
a consumer computed from its own TOML is ignored. `reward.rewards` is what to record
with the trainer's config.

It is an async callable: TRL runs it on its own long-lived event loop thread, where the
producer's connection lives between calls; close it on that loop at the end:
`asyncio.run_coroutine_threadsafe(reward.close(), trainer.async_loop).result()`.
A dataset column `problem_id` picks the problem per prompt; otherwise every completion
is judged against the `problem_id` given here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hpcq.broker import BrokerSettings
from hpcq.outcome import Constraints, Status
from hpcq.policy import Sample
from hpcq.problems import Problem, load_problem
from hpcq.producer import Producer, ProducerSettings
from hpcq.rollout import Context, Prompted, score
from hpcq.settings import RewardSettings, check_reward_settings
from hpcq.topology import Topology


def completion_text(completion: Any) -> str:
    """TRL passes plain strings, or for chat datasets a list of message dicts."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))


class PipelineReward:
    __name__ = "hpcq_gflops"  # TRL names the reward's metrics after this

    def __init__(
        self,
        broker: BrokerSettings,
        topology: Topology,
        *,
        node_class: str,
        problem_id: str = "dgemm-256",
        constraints: Constraints | None = None,
        rewards: RewardSettings | None = None,
        producer_name: str = "trl",
        run_id: str = "trl",
        wait_s: float = 3600.0,
    ) -> None:
        self.broker = broker
        self.topology = topology
        self.node_class = node_class
        self.problem_id = problem_id
        self.constraints = constraints or Constraints()
        self.rewards = rewards or RewardSettings()
        check_reward_settings(self.rewards)
        self.producer_name = producer_name
        self.run_id = run_id
        self.wait_s = wait_s
        self.calls = 0
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

    async def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        problem_id: Sequence[str] | None = None,
        trainer_state: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        **_: Any,
    ) -> list[float | None]:
        self.calls += 1
        ids = list(problem_id) if problem_id is not None else [self.problem_id] * len(completions)
        problems: dict[str, Problem] = {p: load_problem(p) for p in set(ids)}
        # One pipeline group per problem in the batch: the unit the producer hands back.
        order: dict[str, list[int]] = {}
        for i, p in enumerate(ids):
            order.setdefault(p, []).append(i)
        batch = [
            Prompted(
                problems[p],
                self.constraints,
                tuple(
                    Sample((), (), (), completion_text(completions[i]), False, 0) for i in members
                ),
            )
            for p, members in order.items()
        ]
        step = int(getattr(trainer_state, "global_step", self.calls))
        ctx = Context(self.run_id, step, self.rewards, self.node_class, self.wait_s)
        groups = await score(await self._channel(), batch, ctx)
        out: list[float | None] = [None] * len(completions)
        statuses = []
        for members, group in zip(order.values(), groups, strict=True):
            for i, m in zip(members, group, strict=True):
                out[i] = m.reward
                statuses.append(m.status)
        if log_metric is not None and statuses:
            log_metric("hpcq/ok_fraction", statuses.count(str(Status.OK)) / len(statuses))
        return out
