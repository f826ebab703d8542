"""`hpcq status --watch`: a live terminal view of one namespace.

Nodes come from MQTT heartbeats when the CLI hands over an MQTT `Feed` (the `mqtt-feed`
telemetry adapter: their retained state, and a node's last will when it died), otherwise
(and for consumers that do not publish to MQTT) from the consumers' heartbeats on the
broker's control exchange; a node that stopped sending is shown `silent`. Queue depths,
dead letters, results per second and the status mix always come from RabbitMQ (only the
broker knows them). Training step and stage per problem come from MQTT when it is there,
else from the replay stream (highest step seen in the window) and the SQD controller's
stage announcements.

The figures are gathered into a `WatchState` (plain data, tested without a terminal);
`render` draws it with rich (imported here, lazily: the `watch` extra).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpcq.errors import ConfigError
from hpcq.pipeline.broker import BrokerSettings
from hpcq.pipeline.status import BrokerFeed, BrokerView, QueueInfo
from hpcq.pipeline.telemetry import DRAINING, OFFLINE, ONLINE, PAUSED, Feed, FeedState, NodeBeat
from hpcq.pipeline.topology import Topology

if TYPE_CHECKING:
    from rich.console import Console, Group

SILENT = "silent"


@dataclass(frozen=True)
class WatchSettings:
    refresh_s: float = 2.0
    window_s: float = 60.0
    """Results per second and the status mix are over this recent window."""
    silent_after_s: float = 15.0
    """A node whose last heartbeat is older than this is shown `silent` (its process may
    be stopped or cut off; MQTT's last will says `offline` only once the broker knows)."""
    forget_after_s: float = 3600.0
    """Nodes offline or silent for longer are left out of the table."""
    count: int | None = None
    """Refreshes before returning (tests, scripts); None: until interrupted."""


@dataclass(frozen=True)
class NodeRow:
    node: str
    node_class: str
    state: str
    busy: int
    slots: int
    done: int
    last_error: str
    seen_s_ago: float | None


@dataclass(frozen=True)
class WatchState:
    namespace: str
    source: str  # where the nodes come from: "mqtt" (then the broker) or "broker"
    nodes: tuple[NodeRow, ...]
    task_queues: tuple[QueueInfo, ...]
    dead_letters: int
    results_per_s: float
    window_s: float
    status_mix: dict[str, int]
    steps: dict[str, dict[str, Any]]  # run_id -> {"step", "reward_mean", "gflops_best"}
    stages: dict[str, tuple[int, str]]  # problem -> (index, stage name)
    notes: tuple[str, ...] = field(default=())


def _node_from_beat(
    beat: NodeBeat, received_at: float, now: float, s: WatchSettings
) -> NodeRow | None:
    seen = now - (beat.sent_at if beat.sent_at is not None else received_at)
    state = beat.state
    if state != OFFLINE and seen > s.silent_after_s:
        state = SILENT
    if state in (OFFLINE, SILENT) and seen > s.forget_after_s:
        return None
    return NodeRow(
        beat.node, beat.node_class, state, beat.busy, beat.slots, beat.done, beat.last_error,
        round(seen, 1),
    )  # fmt: skip


def gather(
    namespace: str,
    broker: BrokerView,
    mqtt: FeedState | None,
    settings: WatchSettings,
    now: float | None = None,
) -> WatchState:
    now = time.time() if now is None else now
    notes = [f"broker: {broker.error}"] if broker.error else []
    # The broker's nodes, steps and stages, overridden by MQTT's where it has them (a
    # consumer started without --mqtt-url still shows, from its broker heartbeats).
    beats = {
        b.consumer: (
            NodeBeat(b.consumer, b.node_class, DRAINING if b.draining else ONLINE, b.slots,
                     b.busy, b.done, sent_at=b.sent_at),
            b.sent_at,
        )
        for b in broker.heartbeats.values()
    }  # fmt: skip
    steps: dict[str, dict[str, Any]] = {run: {"step": n} for run, n in broker.steps.items()}
    stages = {p: (u.stage, u.stage_name) for p, u in broker.stages.items()}
    if mqtt is not None:
        if not mqtt.connected:
            notes.append(f"MQTT not connected ({mqtt.error or 'connecting'})")
        beats.update(mqtt.nodes)
        for run, doc in mqtt.steps.items():
            steps[run] = {k: doc.get(k) for k in ("step", "reward_mean", "gflops_best")}
        for p, d in mqtt.stages.items():
            stages[p] = (int(d.get("index", 0)), str(d.get("stage", "")))
    rows = [_node_from_beat(beat, at, now, settings) for beat, at in beats.values()]
    return WatchState(
        namespace=namespace,
        source="mqtt" if mqtt is not None else "broker",
        nodes=tuple(sorted((r for r in rows if r is not None), key=lambda r: r.node)),
        task_queues=broker.task_queues,
        dead_letters=broker.dead_letters.ready if broker.dead_letters else 0,
        results_per_s=round(broker.results_per_s, 2),
        window_s=broker.window_s,
        status_mix=dict(sorted(broker.status_mix.items(), key=lambda kv: -kv[1])),
        steps=steps,
        stages=dict(sorted(stages.items())),
        notes=tuple(notes),
    )


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


_STATE_STYLE = {ONLINE: "green", DRAINING: "yellow", PAUSED: "yellow", SILENT: "red"}


def render(w: WatchState) -> Group:
    from rich.console import Group
    from rich.table import Table

    nodes = Table(title=f"nodes ({w.source})", expand=True)
    for col in ("node", "class", "state", "busy/slots", "done", "seen", "last error"):
        nodes.add_column(col, justify="right" if col in ("done", "seen") else "left")
    for n in w.nodes:
        style = _STATE_STYLE.get(n.state, "red")
        seen = "-" if n.seen_s_ago is None else f"{n.seen_s_ago:.0f}s"
        nodes.add_row(
            n.node, n.node_class, f"[{style}]{n.state}[/]", f"{n.busy}/{n.slots}",
            str(n.done), seen, n.last_error[:40],
        )  # fmt: skip
    if not w.nodes:
        nodes.add_row("(no heartbeat yet)", "", "", "", "", "", "")

    pipe = Table(title=f"pipeline, namespace {w.namespace}", expand=True)
    pipe.add_column("figure")
    pipe.add_column("value")
    for q in w.task_queues:
        value = f"{q.ready} ready, {q.consumers} consumer(s)" if q.exists else "not declared"
        pipe.add_row(q.name, value)
    pipe.add_row("dead letters", str(w.dead_letters))
    pipe.add_row(f"results/s (last {w.window_s:g} s)", f"{w.results_per_s:g}")
    mix = ", ".join(f"{k} {v}" for k, v in w.status_mix.items()) or "-"
    pipe.add_row("status mix", mix)

    train = Table(title="training", expand=True)
    for col in ("run / problem", "step / stage", "reward", "best GFLOPS"):
        train.add_column(col)
    for run, doc in sorted(w.steps.items()):
        train.add_row(
            run, _fmt(doc.get("step"), "d"), _fmt(doc.get("reward_mean")),
            _fmt(doc.get("gflops_best")),
        )  # fmt: skip
    for problem, (index, name) in w.stages.items():
        train.add_row(problem, f"stage {index} {name}", "", "")
    if not w.steps and not w.stages:
        train.add_row("(no step or stage yet)", "", "", "")
    parts: list[Any] = [nodes, pipe, train, *[f"[red]{note}[/]" for note in w.notes]]
    return Group(*parts)


def _console() -> Console:
    try:
        from rich.console import Console
    except ModuleNotFoundError as exc:
        raise ConfigError("hpcq status --watch needs rich: pip install 'hpcq[watch]'") from exc
    return Console()


async def watch(
    broker: BrokerSettings,
    topology: Topology,
    node_classes: tuple[str, ...],
    settings: WatchSettings,
    feed: Feed | None = None,
) -> None:
    """Refresh the view every `settings.refresh_s` until interrupted (or `count` times);
    `feed` (not started yet) adds what MQTT knows, and is closed at the end."""
    console = _console()
    from rich.live import Live

    if feed is not None:
        await feed.start()
        await feed.ready(timeout_s=3.0)  # the first view already shows the retained state
    source = BrokerFeed(broker, topology, node_classes, settings.window_s)
    await source.start()
    done = 0
    try:
        with Live(console=console, auto_refresh=False) as live:
            while settings.count is None or done < settings.count:
                view = await source.refresh()
                state = gather(topology.namespace, view, feed.state if feed else None, settings)
                live.update(render(state), refresh=True)
                done += 1
                if settings.count is None or done < settings.count:
                    await asyncio.sleep(settings.refresh_s)
    finally:
        await source.close()
        if feed is not None:
            await feed.close()
