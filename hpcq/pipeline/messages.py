"""Wire records of the pipeline: what travels over RabbitMQ.

Typed, frozen dataclasses. Only `hpcq.pipeline.codec` knows how they look on the wire (msgpack
keys, schema version, size limits); everything else passes these objects around.
`task_id` is the idempotency key of the whole pipeline: a task may be delivered, and its
result published, more than once, but a result is counted once per task_id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hpcq.outcome import Constraints, EvalResult

SCHEMA_VERSION = 1
"""Bumped on any incompatible change of a record; decoders reject other versions. A new
optional field is not one: its absence decodes to its default (see hpcq.pipeline.codec)."""


@dataclass(frozen=True)
class Task:
    """One candidate kernel to judge: everything a consumer needs, and nothing else."""

    task_id: str
    problem_id: str  # e.g. "dgemm-256"
    source: str  # the candidate C translation unit
    constraints: Constraints = field(default_factory=Constraints)
    # Routing key: only nodes of that class serve it. Keyword-only and required: a default
    # would silently route a GPU node's tasks by the GPU node's own CPU.
    node_class: str = field(kw_only=True)
    run_id: str = ""
    step: int = 0  # policy step that generated the candidate
    group_id: str = ""  # GRPO group (one prompt's G samples)
    member: int = 0  # index inside the group
    policy_version: int = 0
    attempt: int = 1  # 1 on first publish; the producer bumps it on a retry
    reply_to: str = ""  # producer name: results are routed to its queue
    created_at: float = 0.0  # unix seconds


@dataclass(frozen=True)
class Result:
    """The verdict on one task, and who measured it."""

    task_id: str
    outcome: EvalResult
    consumer: str  # "host:pid" of the consumer process
    slot: int  # slot index inside that consumer
    cores: tuple[int, ...]  # the slot's cores
    node_class: str = field(kw_only=True)
    run_id: str = ""
    group_id: str = ""
    member: int = 0
    step: int = 0
    policy_version: int = 0
    attempt: int = 1  # the task attempt this answers
    started_at: float = 0.0  # unix seconds, evaluation start on the consumer
    finished_at: float = 0.0


@dataclass(frozen=True)
class StageUpdate:
    """Control message from the SQD controller: the constraints of the next prompts."""

    run_id: str
    problem_id: str
    stage: int
    stage_name: str = ""
    constraints: Constraints = field(default_factory=Constraints)
    policy_version: int = 0
    issued_at: float = 0.0


@dataclass(frozen=True)
class Heartbeat:
    """A consumer's periodic liveness report (control exchange, never authoritative)."""

    consumer: str  # "host:pid"
    node_class: str
    slots: int
    busy: int
    done: int  # results published since start
    draining: bool = False
    in_flight: tuple[str, ...] = ()  # task ids being evaluated
    sent_at: float = 0.0


Record = Task | Result | StageUpdate | Heartbeat
