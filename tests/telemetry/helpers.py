"""Helpers of the telemetry tests: an MQTT listener, a broker that never answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import aiomqtt

from hpcq.pipeline import telemetry as t

MQTT_URL = os.environ.get("HPCQ_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


class Listener:
    """Subscribes to a namespace and keeps every message: (topic, payload, retained)."""

    def __init__(self, settings: t.MqttSettings) -> None:
        self.settings = settings
        self.topics = t.Topics(settings.namespace)
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        s = self.settings
        async with aiomqtt.Client(s.host, s.port, identifier=None) as client:
            await client.subscribe(self.topics.everything(), qos=1)
            self._ready.set()
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                if m.payload:
                    self.messages.append((str(m.topic), t.decode(m.payload), m.retain))

    def latest(self, topic: str) -> dict[str, Any] | None:
        docs = [doc for top, doc, _ in self.messages if top == topic]
        return docs[-1] if docs else None

    async def wait_for(
        self, topic: str, predicate: Callable[[dict[str, Any]], bool], timeout_s: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            doc = self.latest(topic)
            if doc is not None and predicate(doc):
                return doc
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"no matching message on {topic} within {timeout_s} s; last: {self.latest(topic)}"
        )


async def retained(
    settings: t.MqttSettings, topic: str, wait_s: float = 1.0
) -> dict[str, Any] | None:
    """The retained message of a topic, as a new subscriber sees it."""
    found: dict[str, Any] | None = None
    async with aiomqtt.Client(settings.host, settings.port) as client:
        await client.subscribe(topic, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for m in client.messages:
                    assert isinstance(m.payload, bytes)
                    if m.retain and m.payload:
                        found = t.decode(m.payload)
                        break
    return found


async def clear_retained(settings: t.MqttSettings) -> None:
    """Empty every retained topic of the namespace (an empty retained payload clears)."""
    topics: set[str] = set()
    async with aiomqtt.Client(settings.host, settings.port) as client:
        await client.subscribe(t.Topics(settings.namespace).everything(), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for m in client.messages:
                    if m.retain:
                        topics.add(str(m.topic))
        for topic in topics:
            await client.publish(topic, b"", qos=1, retain=True)


class SilentBroker:
    """Accepts TCP connections and never answers: an MQTT broker that hangs."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> SilentBroker:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass

    async def __aexit__(self, *_: object) -> None:
        for w in self._writers:
            w.transport.abort()
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
