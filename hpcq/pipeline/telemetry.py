"""Live telemetry: what the processes report about themselves, and where it goes.

The pipeline calls a `Telemetry` (heartbeats from consumers, step metrics from the
producer, stage changes from the SQD controller). The default does nothing; the CLI
picks real sinks by flag: MQTT (the `mqtt` extra) and a Prometheus endpoint (the
`prometheus` extra). Their adapters live outside the core (bridges/) and register the
factories typed at the end of this module under the `hpcq.telemetry` entry point group
(pyproject.toml); the CLI loads one only when its flag asks, so the core installs and
runs without either and never imports `bridges`.

Publishing never blocks the pipeline: the three report methods are plain functions that
hand the message to the sink and return (a sink queues it, bounded, and drops when its
broker is away). Only `start` and `close` are awaited, at the edges of a process.

This module also owns the telemetry wire format (JSON payloads, MQTT topics): the
publisher and every reader (`hpcq status --watch`) go through it.

Topics, under `hpcq/<namespace>/`:
- `nodes/<node_id>`: a consumer's heartbeat, retained; its last will (retained) says
  `"state": "offline"`, and a clean shutdown publishes that state itself.
- `train/<run_id>/step`: the producer's latest step metrics, retained.
- `sqd/<problem_id>`: the problem's current stage, retained.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias
from urllib.parse import unquote, urlsplit

from hpcq import __version__
from hpcq.errors import ConfigError

# Type-only: the records this contract carries come from the layers above the pipeline
# (the import-linter layers contract in pyproject.toml ignores exactly these two).
if TYPE_CHECKING:
    from hpcq.sqd.controller import StageChange
    from hpcq.train.metrics import StepMetrics

TOPIC_ROOT = "hpcq"
ONLINE, DRAINING, PAUSED, OFFLINE = "online", "draining", "paused", "offline"


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeBeat:
    """A consumer's heartbeat: who it is, how loaded, how far along."""

    node: str  # the consumer's name, "host:pid"
    node_class: str
    state: str = ONLINE  # online, draining, paused (infra errors), offline
    slots: int = 0
    busy: int = 0
    done: int = 0  # results published since start
    statuses: Mapping[str, int] = field(default_factory=dict)  # results per status
    last_error: str = ""
    version: str = __version__
    sent_at: float | None = None  # unix seconds; None in a last will (written at connect)

    @property
    def free(self) -> int:
        return max(0, self.slots - self.busy)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "statuses": dict(self.statuses), "free": self.free}


@dataclass(frozen=True)
class StageReport:
    """A problem's current SQD stage."""

    problem_id: str
    index: int
    stage: str
    forbidden: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    reason: str = ""
    run_id: str = ""
    policy_version: int = 0
    step: int = 0
    sent_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def stage_report(change: StageChange, now: float | None = None) -> StageReport:
    c = change.stage.constraints
    return StageReport(
        problem_id=change.problem_id,
        index=change.index,
        stage=change.stage.name,
        forbidden=tuple(sorted(c.forbidden)),
        required=tuple(sorted(c.required)),
        reason=change.reason[:200],
        run_id=change.run_id,
        policy_version=change.policy_version,
        step=change.step,
        sent_at=time.time() if now is None else now,
    )


def step_payload(run_id: str, metrics: StepMetrics, now: float | None = None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        **dataclasses.asdict(metrics),
        "sent_at": time.time() if now is None else now,
    }


def node_beat_from_json(doc: Mapping[str, Any]) -> NodeBeat:
    """A heartbeat as read back; raises ValueError on a payload that is not one."""
    try:
        sent = doc.get("sent_at")
        return NodeBeat(
            node=str(doc["node"]),
            node_class=str(doc.get("node_class", "")),
            state=str(doc.get("state", ONLINE)),
            slots=int(doc.get("slots", 0)),
            busy=int(doc.get("busy", 0)),
            done=int(doc.get("done", 0)),
            statuses={str(k): int(v) for k, v in dict(doc.get("statuses") or {}).items()},
            last_error=str(doc.get("last_error", "")),
            version=str(doc.get("version", "")),
            sent_at=None if sent is None else float(sent),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a node heartbeat: {exc!r}") from exc


def encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode(payload: bytes) -> dict[str, Any]:
    """A telemetry payload; raises ValueError on anything but a JSON object."""
    doc = json.loads(payload)
    if not isinstance(doc, dict):
        raise ValueError("telemetry payload is not a JSON object")
    return doc


# --- topics --------------------------------------------------------------------------------


def topic_part(name: str) -> str:
    """A name made safe as one topic level (MQTT reserves '/', '+', '#')."""
    return re.sub(r"[/+#\x00]", "_", name) or "_"


@dataclass(frozen=True)
class Topics:
    namespace: str

    @property
    def root(self) -> str:
        return f"{TOPIC_ROOT}/{topic_part(self.namespace)}"

    def node(self, node_id: str) -> str:
        return f"{self.root}/nodes/{topic_part(node_id)}"

    def step(self, run_id: str) -> str:
        return f"{self.root}/train/{topic_part(run_id)}/step"

    def stage(self, problem_id: str) -> str:
        return f"{self.root}/sqd/{topic_part(problem_id)}"

    def everything(self) -> str:
        return f"{self.root}/#"

    def kind(self, topic: str) -> str | None:
        """'node', 'step' or 'stage' for a topic of this namespace, else None."""
        parts = topic.split("/")
        head = self.root.split("/")
        if parts[: len(head)] != head:
            return None
        rest = parts[len(head) :]
        if len(rest) == 2 and rest[0] == "nodes":
            return "node"
        if len(rest) == 3 and rest[0] == "train" and rest[2] == "step":
            return "step"
        if len(rest) == 2 and rest[0] == "sqd":
            return "stage"
        return None


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MqttSettings:
    """Where telemetry goes over MQTT, and how hard it tries."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    namespace: str = "hpcq"
    keepalive_s: int = 10
    """MQTT keep-alive: the broker publishes a silent client's last will after 1.5x this
    (a node that lost power or network). A process killed on a live host is seen at once:
    its kernel closes the socket."""
    queue_size: int = 1000
    """Messages waiting while the broker is away; beyond it the oldest are dropped."""
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    """Reconnect backoff: doubles from min to max after each failed attempt."""
    publish_timeout_s: float = 5.0
    close_timeout_s: float = 2.0
    """How long a clean shutdown waits to publish its 'offline' state."""

    @classmethod
    def from_url(cls, url: str, namespace: str, **overrides: Any) -> MqttSettings:
        """`mqtt://[user:password@]host[:port]` (or `mqtts://` for TLS, port 8883)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(
                f"MQTT URL {url!r}: expected mqtt://host[:port] or mqtts://host[:port] "
                "(--mqtt-url / HPCQ_MQTT_URL)"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"MQTT URL {url!r}: {exc} (--mqtt-url / HPCQ_MQTT_URL)") from None
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            namespace=namespace,
            **overrides,
        )


# --- the contract --------------------------------------------------------------------------


class Telemetry(Protocol):
    """A telemetry sink. The report methods must return at once and never raise."""

    async def start(self) -> None: ...

    def heartbeat(self, beat: NodeBeat) -> None: ...

    def step(self, run_id: str, metrics: StepMetrics) -> None: ...

    def stage(self, report: StageReport) -> None: ...

    async def close(self) -> None: ...


class NullTelemetry:
    """The default: telemetry is off."""

    async def start(self) -> None:
        pass

    def heartbeat(self, beat: NodeBeat) -> None:
        pass

    def step(self, run_id: str, metrics: StepMetrics) -> None:
        pass

    def stage(self, report: StageReport) -> None:
        pass

    async def close(self) -> None:
        pass


class Fanout:
    """Several sinks as one (MQTT and Prometheus side by side)."""

    def __init__(self, sinks: list[Telemetry]) -> None:
        self.sinks = tuple(sinks)

    async def start(self) -> None:
        for sink in self.sinks:
            await sink.start()

    def heartbeat(self, beat: NodeBeat) -> None:
        for sink in self.sinks:
            sink.heartbeat(beat)

    def step(self, run_id: str, metrics: StepMetrics) -> None:
        for sink in self.sinks:
            sink.step(run_id, metrics)

    def stage(self, report: StageReport) -> None:
        for sink in self.sinks:
            sink.stage(report)

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()


# --- reading -------------------------------------------------------------------------------


@dataclass
class FeedState:
    """The latest of each telemetry topic of a namespace, as a reader follows them."""

    nodes: dict[str, tuple[NodeBeat, float]]  # node -> (heartbeat, received at)
    steps: dict[str, dict[str, Any]]  # run_id -> step payload
    stages: dict[str, dict[str, Any]]  # problem_id -> stage payload
    connected: bool = False
    error: str = ""


class Feed(Protocol):
    """A reader of a namespace's telemetry (`hpcq status --watch`): `state` is kept up to
    date in the background between `start` and `close`."""

    @property
    def state(self) -> FeedState: ...

    async def start(self) -> None: ...

    async def ready(self, timeout_s: float) -> bool:
        """Until subscribed and the retained messages arrived (False: not in time)."""
        ...

    async def close(self) -> None: ...


# --- adapters ------------------------------------------------------------------------------
# The factories an adapter package declares under the `hpcq.telemetry` entry point group,
# by name (pyproject.toml; bridges/ declares its own with these types, checked by mypy).

MqttSinkFactory: TypeAlias = Callable[[MqttSettings, str | None, str], Telemetry]
"""`mqtt`: (settings, node, node_class) -> a sink; `node` is the consumer the process
speaks for (its heartbeat topic carries the last will), None for a producer or controller."""
PromSinkFactory: TypeAlias = Callable[[int, str], Telemetry]
"""`prometheus`: (port, address) -> a sink serving `/metrics` once started."""
FeedFactory: TypeAlias = Callable[[MqttSettings], Feed]
"""`mqtt-feed`: settings -> a reader of the namespace's topics, not started."""
