"""Helpers of the pipeline tests: consumer subprocesses, a TCP proxy that cuts
connections, broker probes. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from hpcq.eval.settings import detect_node_class

REPO = Path(__file__).resolve().parents[2]
NODE_CLASS = detect_node_class()  # what the engine of this machine answers for
BROKER_URL = os.environ.get("HPCQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# Fast recovery in tests: the defaults (30 s heartbeat, 2 s reconnect) suit clusters.
FAST = "heartbeat=5&reconnect_interval=0.3"


def fast_url(url: str = BROKER_URL) -> str:
    return f"{url}{'&' if '?' in url else '?'}{FAST}"


def proxy_url(port: int) -> str:
    return fast_url(f"amqp://guest:guest@127.0.0.1:{port}/")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def source(*directives: str, body: str = "void dgemm(void) {}") -> str:
    """A scripted-evaluator source (see tests.support.scripted)."""
    return "".join(f"// hpcq-test: {d}\n" for d in directives) + body + "\n"


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str, period_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(period_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


SCRIPTED_CONSUMER = "tests.support.scripted_consumer"


class ConsumerProc:
    """`python -m hpcq consumer` as a real subprocess, killed at the end of the test; by
    default through the tests' launcher of the scripted evaluator (same arguments)."""

    def __init__(
        self,
        namespace: str,
        log_path: Path,
        *extra: str,
        url: str | None = None,
        scripted: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self.env = env or {}
        self.args = [
            sys.executable,
            "-m",
            SCRIPTED_CONSUMER if scripted else "hpcq",
            "--log-level",
            "info",
            "consumer",
            "--namespace",
            namespace,
            "--amqp-url",
            url or fast_url(),
            "--slots",
            "1",
            "--heartbeat-s",
            "1",
            "--node-class",
            NODE_CLASS,
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProc:
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, env=env, cwd=REPO)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def poll(self) -> int | None:
        assert self.proc is not None
        return self.proc.poll()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"consumer {self.pid} still running after {timeout_s} s")
            await asyncio.sleep(0.05)
        code = self.poll()
        assert code is not None
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def queue_counts(name: str, url: str = BROKER_URL) -> tuple[int, int] | None:
    """(ready messages, consumers) of a queue, None if it does not exist."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return None
        ok = queue.declaration_result
        return ok.message_count or 0, ok.consumer_count or 0
    finally:
        await connection.close()


async def wait_consumers(name: str, count: int, timeout_s: float = 20.0) -> None:
    async def enough() -> bool:
        counts = await queue_counts(name)
        return counts is not None and counts[1] >= count

    await wait_until(enough, timeout_s, f"{count} consumer(s) on {name}", period_s=0.1)


async def drain_queue(name: str, url: str = BROKER_URL) -> list[AbstractIncomingMessage]:
    """Take every message of a queue (acked)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        out: list[AbstractIncomingMessage] = []
        while (message := await queue.get(no_ack=False, fail=False, timeout=5)) is not None:
            await message.ack()
            out.append(message)
        return out
    finally:
        await connection.close()


class TcpProxy:
    """Forwards to the broker; `cut()` aborts every connection at once (an RST on both
    sides, like a switch dropping the link), as aio-pika's own tests do."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5672, listen_port: int = 0) -> None:
        self.target = (host, port)
        self.port = listen_port
        self.cuts = 0
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self) -> str:
        return proxy_url(self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer),
                self._pipe(up_reader, writer),
                return_exceptions=True,
            )
        finally:
            self._pairs.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    def cut(self) -> int:
        pairs = list(self._pairs)
        for a, b in pairs:
            a.transport.abort()
            b.transport.abort()
        self.cuts += 1
        return len(pairs)

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


def header(message: AbstractIncomingMessage, key: str) -> Any:
    return (message.headers or {}).get(key)
