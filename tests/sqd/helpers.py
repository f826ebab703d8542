"""Scripted records for the SQD tests: tasks and their results, as the pipeline makes them."""

from __future__ import annotations

import os
import random
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from hpcq.eval.problems import default_kernels_dir
from hpcq.eval.techniques import CATALOGUE
from hpcq.outcome import Constraints, EvalResult, Status
from hpcq.pipeline.messages import Record, Result, Task
from hpcq.sqd.controller import Controller
from hpcq.sqd.stages import SqdConfig, default_config_path, parse_config

TWO_STAGES = """
default_schedule = "s"
[problems.p-ref]
schedule = "s"
reference_gflops = 100.0
[schedules.s]
advance = {advance}
[[schedules.s.stages]]
name = "first"
forbidden = ["openmp"]
[[schedules.s.stages]]
name = "second"
"""

BROKER_URL = os.environ.get("HPCQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
FAST_URL = BROKER_URL + "?heartbeat=5&reconnect_interval=0.3"
NODE_CLASS = "test-node"
FIRST = Constraints(forbidden=frozenset({"openmp"}))


def config(text: str) -> SqdConfig:
    return parse_config(tomllib.loads(text), "test config")


def two_stages(**rule: Any) -> SqdConfig:
    """Stage `first` (no openmp) then `second` (free), leaving `first` under `rule`."""
    table = "{" + ", ".join(f"{k} = {v!r}" for k, v in rule.items()) + "}"
    return config(TWO_STAGES.replace("{advance}", table))


@dataclass
class Script:
    """Makes (Task, Result) pairs with fresh task ids."""

    run_id: str = "run"
    n: int = 0
    records: list[Record] = field(default_factory=list)

    def kernel(
        self,
        step: int,
        gflops: float | None,
        techniques: tuple[str, ...] = (),
        constraints: Constraints = FIRST,
        problem: str = "p",
        status: Status | None = None,
        task_id: str | None = None,
    ) -> tuple[Task, Result]:
        self.n += 1
        tid = task_id or f"task-{self.n}"
        status = status or (Status.OK if gflops is not None else Status.COMPILE_ERROR)
        task = Task(
            task_id=tid,
            problem_id=problem,
            source=f"// kernel {tid}\nvoid dgemm(void) {{}}\n",
            constraints=constraints,
            node_class=NODE_CLASS,
            run_id=self.run_id,
            step=step,
        )
        reward = None if status is Status.INFRA_ERROR else (gflops or -40.0)
        outcome = EvalResult(
            status=status,
            reward=reward,
            gflops=gflops if status is Status.OK else None,
            techniques=tuple(sorted(techniques)),
            problem_id=problem,
        )
        result = Result(
            task_id=tid,
            outcome=outcome,
            consumer="test:1",
            slot=0,
            cores=(0,),
            node_class=NODE_CLASS,
            run_id=self.run_id,
            step=step,
        )
        self.records += [task, result]
        return task, result


def run(controller: Controller, *pairs: tuple[Task, Result]) -> list[str]:
    """Feed pairs; the names of the stages entered."""
    entered = []
    for task, result in pairs:
        controller.feed(task)
        entered += [c.stage.name for c in controller.feed(result)]
    return entered


FAST_RULE = "advance = { plateau_pct = 5.0, plateau_steps = 3, max_steps = 6, min_steps = 1 }"


def fast_default_text() -> str:
    """The shipped schedule file with short stages (a few steps each)."""
    text = default_config_path(default_kernels_dir()).read_text()
    return re.sub(r"(?m)^advance = \{.*\}$", FAST_RULE, text)


def fast_default() -> SqdConfig:
    return config(fast_default_text())


def random_stream(seed: int, steps: int = 40, per_step: int = 6) -> list[Record]:
    """A plausible run over two problems, with duplicates, infra errors and retries, in
    which the kernels only use what the current stage allows (as a policy learning the
    stage would). Stage constraints come from a shadow controller fed as it goes."""
    cfg = fast_default()
    shadow = Controller(cfg)
    rng = random.Random(seed)
    script = Script()
    out: list[Record] = []
    for step in range(steps):
        for problem in ("dgemm-256", "dgemm-512"):
            state = shadow.problems.get(problem)
            stage = state.current.stage if state else cfg.first_stage(problem)
            c = stage.constraints
            for _ in range(per_step):
                allowed = [t for t in CATALOGUE if t not in c.forbidden]
                techs = set(c.required) | {t for t in allowed if rng.random() < 0.35}
                ok = rng.random() < 0.75
                g = 1 + 4 * len(techs) + rng.random() * (step + 1) if ok else None
                task, result = script.kernel(step, g, tuple(techs), c, problem)
                batch: list[Record] = [task]
                if rng.random() < 0.05:  # the node failed: infra_error, then the retry
                    infra = Result(
                        task_id=task.task_id,
                        outcome=EvalResult(status=Status.INFRA_ERROR, reward=None),
                        consumer="test:1",
                        slot=0,
                        cores=(0,),
                        node_class=NODE_CLASS,
                        step=step,
                    )
                    batch += [infra, task]
                batch.append(result)
                if rng.random() < 0.1:  # a redelivery published the result twice
                    batch.append(result)
                for record in batch:
                    shadow.feed(record)
                out += batch
    return out
