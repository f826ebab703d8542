"""How a producer learns each problem's SQD stage: `current_constraints(problem_id)`.

`StageClient` listens to the control exchange (`stage.#`) with a private queue and keeps
the newest stage per problem (the stage index only grows, so repeats and late copies are
dropped). Until the first update of a problem arrives it answers the problem's first
stage from the same schedule config the controller uses. It also implements the GRPO
producer's `hpcq.train.prompts.PromptStageSource` (`stage_for`), whose `FixedStages` serves a
producer that runs without `hpcq sqd`.

The prompt text is rebuilt from the config (the wire record carries the stage's name and
constraints, not its text), and elites for in-context examples are read from the
controller's snapshot file when the producer has it (same node, or a shared
filesystem); the producer decides how many it wants.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from hpcq.errors import DecodeError
from hpcq.outcome import Constraints
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings, Link
from hpcq.pipeline.messages import StageUpdate
from hpcq.pipeline.topology import Topology, declare_base
from hpcq.sqd.archive import Archive, Elite
from hpcq.sqd.stages import SqdConfig, Stage
from hpcq.train import prompts

log = structlog.get_logger()


class StageView(NamedTuple):
    """What the producer puts in a problem's prompts now."""

    constraints: Constraints
    prompt_text: str
    elites_for_prompt: tuple[Elite, ...]


_MADE = re.compile(r"^(\d+)-no-(\w+)$")
_FINAL = re.compile(r"^(\d+)-free$")


def stage_for(config: SqdConfig, update: StageUpdate) -> Stage:
    """The full stage (prompt included) an update names, rebuilt from the config."""
    schedule = config.schedule_for(update.problem_id)
    listed = schedule.listed(update.stage)
    if listed is not None and listed.name == update.stage_name:
        return listed
    made = _MADE.match(update.stage_name)
    if schedule.diversity and made:
        return schedule.made_stage(update.stage, update.constraints.forbidden, made.group(2))
    if schedule.diversity and _FINAL.match(update.stage_name):
        return schedule.final_stage(update.stage)
    # Another config than the controller's: trust the wire's constraints, state them.
    return Stage(name=update.stage_name, constraints=update.constraints)


class _SnapshotElites:
    """Elites from the controller's snapshot, re-read only when the file changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime_ns = -1
        self._archive = Archive()

    def archive(self) -> Archive:
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._mtime_ns:
                doc = json.loads(self.path.read_bytes())
                self._archive = Archive.from_json(doc["state"]["archive"])
                self._mtime_ns = mtime
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("sqd snapshot not readable; no elites", path=str(self.path), error=str(exc))
        return self._archive


class StageClient:
    def __init__(
        self,
        broker: BrokerSettings,
        namespace: str,
        config: SqdConfig,
        elites_per_prompt: int = 0,
        snapshot: Path | None = None,
    ) -> None:
        self.broker = broker
        self.topology = Topology(namespace=namespace)
        self.config = config
        self.elites_per_prompt = elites_per_prompt
        self._elites = _SnapshotElites(snapshot) if snapshot and elites_per_prompt > 0 else None
        self._latest: dict[str, StageUpdate] = {}
        self._link: Link | None = None
        self._queue: AbstractQueue | None = None

    async def start(self) -> None:
        link = await Link.open(self.broker, f"hpcq-stage-client {self.topology.namespace}")
        self._link = link
        exchanges = await declare_base(link.channel, self.topology)
        # Private and transient: a client only needs updates from now on (the controller
        # announces every current stage again periodically).
        queue = await link.channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchanges.control, "stage.#")
        await queue.consume(self._on_message, no_ack=True)
        self._queue = queue

    async def close(self) -> None:
        if self._link is not None:
            await self._link.close()
            self._link = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            record = codec.decode(message.body)
        except DecodeError as exc:
            log.warning("stage client: undecodable control message", error=str(exc))
            return
        if isinstance(record, StageUpdate):
            self.apply(record)

    def apply(self, update: StageUpdate) -> bool:
        """Keep `update` if it is newer than what the problem has; True if kept."""
        known = self._latest.get(update.problem_id)
        if known is not None and update.stage <= known.stage:
            return False
        self._latest[update.problem_id] = update
        log.info("stage", problem=update.problem_id, stage=update.stage_name, index=update.stage)
        return True

    def current_stage(self, problem_id: str) -> tuple[Stage, int]:
        """The problem's stage and its index in the schedule."""
        update = self._latest.get(problem_id)
        if update is None:
            return self.config.first_stage(problem_id), 0
        return stage_for(self.config, update), update.stage

    def _elites_for(self, problem_id: str, constraints: Constraints) -> tuple[Elite, ...]:
        if self._elites is None:
            return ()
        archive = self._elites.archive()
        return tuple(archive.for_prompt(problem_id, constraints, self.elites_per_prompt))

    def current_constraints(self, problem_id: str) -> StageView:
        stage, _ = self.current_stage(problem_id)
        elites = self._elites_for(problem_id, stage.constraints)
        return StageView(stage.constraints, stage.prompt_text(), elites)

    def stage_for(self, problem_id: str) -> prompts.PromptStage:
        """The producer's view (`hpcq.train.prompts` states the constraints itself, so the hint
        is the stage's own text plus the elites, if any were asked for)."""
        stage, _ = self.current_stage(problem_id)
        hint = [stage.prompt.strip()] if stage.prompt.strip() else []
        for e in self._elites_for(problem_id, stage.constraints):
            hint.append(
                f"A correct kernel found earlier ({e.gflops:.1f} GFLOPS, techniques: "
                f"{e.cell}); improve on it:\n{prompts.fenced(e.source)}"
            )
        return prompts.PromptStage(
            name=stage.name, constraints=stage.constraints, hint="\n".join(hint)
        )
