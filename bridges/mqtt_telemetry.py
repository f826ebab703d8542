"""Telemetry over MQTT with aiomqtt (the `mqtt` extra): the publisher and the reader.

`MqttTelemetry` implements `hpcq.pipeline.telemetry.Telemetry`. Reports go into a bounded queue
and return at once; one background task connects (with a last will when it speaks for a
node), publishes what is queued, and on any MQTT error reconnects with a doubling
backoff. While the broker is away the queue fills and the oldest messages are dropped
and counted (`dropped`): heartbeats and step metrics are state, the newest one matters.
A message taken from the queue and lost with its connection counts as dropped too.

aiomqtt's `Client` is a reusable (not reentrant) async context manager that raises
`MqttError` when the connection fails or is lost; reconnecting is entering it again.
The blocking part of connecting runs in an executor thread, so a broker that does not
answer never stalls the event loop.

`MqttFeed` subscribes to a namespace's topics and keeps the latest of each (retained
messages arrive first), for `hpcq status --watch`.

The CLI finds both through the `hpcq.telemetry` entry points `mqtt` and `mqtt-feed`
(pyproject.toml), which name `sink` and `feed` at the end of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

import aiomqtt
import structlog

from hpcq.pipeline import telemetry as t
from hpcq.train.metrics import StepMetrics

log = structlog.get_logger()

_ids = itertools.count()


def _client_id(role: str) -> str:
    # Unique per process and instance: a broker disconnects the older of two clients
    # that share an id, which would fire its will.
    return f"hpcq-{role}-{socket.gethostname()}-{os.getpid()}-{next(_ids)}"[:100]


def _client(s: t.MqttSettings, role: str, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
    return aiomqtt.Client(
        s.host,
        s.port,
        username=s.username,
        password=s.password,
        identifier=_client_id(role),
        will=will,
        keepalive=s.keepalive_s,
        timeout=s.publish_timeout_s,
        tls_context=ssl.create_default_context() if s.tls else None,
    )


@dataclass(frozen=True)
class _Out:
    topic: str
    payload: bytes
    retain: bool


class MqttTelemetry:
    """Publishes heartbeats, step metrics and stage changes; never blocks its caller.

    `node`: the consumer this process speaks for (its heartbeat topic carries the last
    will), or None for a producer or controller."""

    def __init__(
        self, settings: t.MqttSettings, node: str | None = None, node_class: str = ""
    ) -> None:
        self.settings = settings
        self.topics = t.Topics(settings.namespace)
        self.node = node
        self.node_class = node_class
        self.sent = 0
        self.dropped = 0
        self.connects = 0
        self.connected = False
        self._queue: asyncio.Queue[_Out] = asyncio.Queue(maxsize=settings.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._last_beat: t.NodeBeat | None = None
        self._idle = asyncio.Event()  # set while the queue is empty and nothing is in flight
        self._idle.set()

    # --- the Telemetry contract ----------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mqtt-telemetry")

    def heartbeat(self, beat: t.NodeBeat) -> None:
        self._last_beat = beat
        self._offer(self.topics.node(beat.node), t.encode(beat.to_json()), retain=True)

    def step(self, run_id: str, metrics: StepMetrics) -> None:
        self._offer(self.topics.step(run_id), t.encode(t.step_payload(run_id, metrics)), True)

    def stage(self, report: t.StageReport) -> None:
        topic = self.topics.stage(report.problem_id)
        self._offer(topic, t.encode(report.to_json()), retain=True)

    async def close(self) -> None:
        """Publish 'offline' for the node (when connected), disconnect cleanly (no will)."""
        if self._task is None:
            return
        if self.connected:
            beat = self._last_beat or t.NodeBeat(self.node or "", self.node_class)
            if self.node is not None:
                offline = replace(beat, node=self.node, state=t.OFFLINE, busy=0)
                self.heartbeat(replace(offline, sent_at=time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.settings.close_timeout_s)
        await _stop(self._task, self.settings.publish_timeout_s)
        self._task = None
        if self.dropped:
            log.warning("telemetry: MQTT messages dropped", dropped=self.dropped, sent=self.sent)

    # --- inside ----------------------------------------------------------------------------

    def _offer(self, topic: str, payload: bytes, retain: bool) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # the oldest goes: the newest state matters
            self.dropped += 1
        self._queue.put_nowait(_Out(topic, payload, retain))
        self._idle.clear()

    def _will(self) -> aiomqtt.Will | None:
        if self.node is None:
            return None
        beat = t.NodeBeat(self.node, self.node_class, state=t.OFFLINE, sent_at=None)
        doc = {**beat.to_json(), "reason": "connection lost"}
        return aiomqtt.Will(self.topics.node(self.node), t.encode(doc), qos=1, retain=True)

    async def _run(self) -> None:
        s = self.settings
        delay = s.reconnect_min_s
        client = _client(s, "node" if self.node else "tel", self._will())
        while True:
            try:
                async with client:
                    self.connected = True
                    self.connects += 1
                    delay = s.reconnect_min_s
                    log.info("telemetry: MQTT connected", host=s.host, port=s.port)
                    if self._last_beat is not None and self.connects > 1:
                        self.heartbeat(self._last_beat)  # replace the will's 'offline'
                    await _until_first_fails(self._pump(client), _disconnected(client))
            except Exception as exc:  # MqttError, or anything else: telemetry never dies
                _reraise_cancellation(exc)
                if self.connected or self.connects == 0:
                    log.warning(
                        "telemetry: MQTT unavailable; dropping while away, reconnecting",
                        error=repr(exc),
                        retry_in_s=delay,
                    )
            finally:
                self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, s.reconnect_max_s)

    async def _pump(self, client: aiomqtt.Client) -> None:
        while True:
            if self._queue.empty():
                self._idle.set()
            out = await self._queue.get()
            try:
                await client.publish(out.topic, out.payload, qos=1, retain=out.retain)
            except (aiomqtt.MqttError, asyncio.CancelledError):
                self.dropped += 1  # lost with its connection (or with the process)
                raise
            self.sent += 1


def _reraise_cancellation(exc: Exception) -> None:
    """aiomqtt's `__aexit__` may raise an MqttError while the task is being cancelled
    (a disconnect that ends in an error): that error must not swallow the cancellation,
    or the loop would go on and `close()` would wait for it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


async def _stop(task: asyncio.Task[None], timeout_s: float) -> None:
    """Cancel a background task and wait for it, boundedly: shutting down never hangs."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("telemetry: MQTT task did not stop in time; left behind")
    elif not task.cancelled() and task.exception() is not None:
        log.warning("telemetry: MQTT task failed", error=repr(task.exception()))


async def _disconnected(client: aiomqtt.Client) -> None:
    """Raises MqttError when the connection drops. The publisher would otherwise learn
    it only at its next publish; the message iterator is aiomqtt's public signal."""
    async for _ in client.messages:
        pass  # nothing is subscribed: no message comes


async def _until_first_fails(*coros: Coroutine[Any, Any, None]) -> None:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise the MqttError that ended it
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- reading -------------------------------------------------------------------------------


class MqttFeed:
    """Follows `hpcq/<namespace>/#` in the background, reconnecting like the publisher."""

    def __init__(
        self,
        settings: t.MqttSettings,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = t.Topics(settings.namespace)
        self.state = t.FeedState({}, {}, {})
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-feed")

    async def ready(self, timeout_s: float) -> bool:
        """Until subscribed and the retained messages had a moment to arrive (bounded)."""
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        except TimeoutError:
            return False
        await asyncio.sleep(0.3)  # retained messages follow the SUBACK at once
        return True

    async def close(self) -> None:
        if self._task is not None:
            await _stop(self._task, self.settings.publish_timeout_s)
            self._task = None

    def feed(self, topic: str, payload: bytes, received_at: float | None = None) -> None:
        """One message into the state (public: tests feed it directly too)."""
        kind = self.topics.kind(topic)
        if kind is None or not payload:  # an empty retained payload clears a topic
            return
        try:
            doc = t.decode(payload)
            if kind == "node":
                beat = t.node_beat_from_json(doc)
                known = self.state.nodes.get(beat.node)
                if beat.sent_at is None and known is not None:
                    # A last will knows only who died: keep the last figures seen.
                    beat = replace(known[0], state=beat.state, busy=0)
                self.state.nodes[beat.node] = (beat, received_at or time.time())
            elif kind == "step":
                self.state.steps[str(doc.get("run_id", topic))] = doc
            else:
                self.state.stages[str(doc.get("problem_id", topic))] = doc
        except ValueError as exc:
            log.debug("telemetry: payload ignored", topic=topic, error=str(exc))
            return
        if self._on_change is not None:
            self._on_change()

    async def _run(self) -> None:
        delay = self.settings.reconnect_min_s
        client = _client(self.settings, "watch")
        while True:
            try:
                async with client:
                    await client.subscribe(self.topics.everything(), qos=1)
                    self.state.connected, self.state.error = True, ""
                    self._subscribed.set()
                    delay = self.settings.reconnect_min_s
                    async for message in client.messages:
                        payload = message.payload
                        if isinstance(payload, bytes | bytearray):
                            self.feed(str(message.topic), bytes(payload))
            except Exception as exc:  # MqttError, or anything else: the view goes on
                _reraise_cancellation(exc)
                self.state.connected, self.state.error = False, str(exc) or repr(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)


# The factories the `hpcq.telemetry` entry points name (pyproject.toml), typed by the
# core's contract: mypy checks that these classes fit it.
sink: t.MqttSinkFactory = MqttTelemetry
feed: t.FeedFactory = MqttFeed
