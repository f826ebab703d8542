"""Stand-ins for unit tests of the loop: a bandit policy over fixed answers and a
channel that judges tasks at once. The real policy and the real pipeline are tested
in test_producer_e2e.py; these only make the loop's bookkeeping fast to check."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from hpcq.outcome import EvalResult, Status
from hpcq.pipeline.messages import Result, Task
from hpcq.pipeline.producer import CompletedGroup, LeftOut
from hpcq.train.policy import Sample, Scored, UpdateStats
from hpcq.train.prompts import Message


class BanditPolicy:
    """Samples one of `answers` by softmax over logits; an update moves the logits by
    lr x advantage (a policy gradient on a categorical distribution)."""

    def __init__(self, answers: Sequence[str], seed: int = 0, lr: float = 0.5) -> None:
        self.answers = list(answers)
        self.logits = [0.0] * len(answers)
        self.rng = random.Random(seed)
        self.lr = lr
        self._version = 0
        self.updates: list[list[Scored]] = []
        self.generated: list[list[list[Sample]]] = []  # every generate() call's groups

    @property
    def version(self) -> int:
        return self._version

    def probs(self) -> list[float]:
        z = [math.exp(x) for x in self.logits]
        return [x / sum(z) for x in z]

    def generate(self, prompts: Sequence[Sequence[Message]], n: int) -> list[list[Sample]]:
        out = []
        for _ in prompts:
            group = []
            for _ in range(n):
                k = self.rng.choices(range(len(self.answers)), self.probs())[0]
                group.append(
                    Sample(
                        (1, 2),
                        (k,),
                        (math.log(self.probs()[k]),),
                        self.answers[k],
                        False,
                        self._version,
                    )
                )
            out.append(group)
        self.generated.append(out)
        return out

    def update(self, batch: Sequence[Scored]) -> UpdateStats:
        self.updates.append(list(batch))
        p = self.probs()
        for s in batch:
            k = s.sample.completion_ids[0]
            for j in range(len(self.logits)):
                self.logits[j] += self.lr * s.advantage * ((j == k) - p[j]) / len(batch)
        self._version += 1
        return UpdateStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, len(batch))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        state = {"logits": self.logits, "version": self._version, "rng": self.rng.getstate()}
        (directory / "bandit.json").write_text(json.dumps(state))

    def load(self, directory: Path) -> None:
        state = json.loads((directory / "bandit.json").read_text())
        self.logits, self._version = state["logits"], state["version"]
        r = state["rng"]
        self.rng.setstate((r[0], tuple(r[1]), r[2]))


Judge = Callable[[Task], EvalResult | None]  # None: leave the task out (infra failure)


class InstantChannel:
    """Judges every submitted task at once with `judge`; keeps what it was sent."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.submitted: list[Task] = []
        self._ready: asyncio.Queue[CompletedGroup] = asyncio.Queue()

    async def submit_group(self, tasks: Sequence[Task]) -> None:
        self.submitted.extend(tasks)
        results, left = [], []
        for t in tasks:
            verdict = self.judge(t)
            if verdict is None:
                left.append(LeftOut(t, "infra_error: injected"))
            else:
                results.append(
                    Result(
                        t.task_id,
                        verdict,
                        "fake:1",
                        0,
                        (0,),
                        node_class=t.node_class,
                        group_id=t.group_id,
                        member=t.member,
                        started_at=1.0,
                        finished_at=1.5,
                    )
                )
        await self._ready.put(CompletedGroup(tasks[0].group_id, tuple(results), tuple(left)))

    async def next_group(self, timeout_s: float | None = None) -> CompletedGroup:
        return await asyncio.wait_for(self._ready.get(), timeout_s)


def ok(gflops: float, peak_gflops: float | None = None, reward: float | None = None) -> EvalResult:
    """An ok verdict; `reward` is the consumer's own figure (default: its GFLOPS)."""
    return EvalResult(
        Status.OK, gflops if reward is None else reward, gflops=gflops, peak_gflops=peak_gflops
    )
