"""`hpcq sqd`: the SQD controller on the broker.

It reads the namespace's replay stream (`ns.log`), which the tasks and the results
exchanges both feed, rather than a queue of its own on the results exchange, because:
- a result does not carry its kernel's source nor the stage it was generated for, and
  the task record before it in the stream does;
- the stream has one total order, so the state machine (`hpcq.sqd.controller.Controller`) sees the
  same sequence live, after a restart and in a rebuild;
- a stream is read from an offset, so resuming is "the snapshot's offset + 1", and a
  rebuild is "from the first offset with an empty state".

Snapshots (state + last offset) are written atomically (temp file, fsync, rename, fsync
of the directory) every `snapshot_every` records or `snapshot_interval_s`, and on a
clean stop. Killed between two snapshots, the controller re-reads the records after the
last one from the stream and, being deterministic, reaches the same state; the stage
changes it announces again carry the same stage index, which receivers drop.

Stage changes go to the control exchange as `StageUpdate` records, routing key
`stage.<problem_id>`, and every current stage is announced again every
`announce_interval_s`, so a producer that starts late learns it.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustQueue
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from hpcq.errors import ConfigError, DecodeError, InfraError
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings, Link
from hpcq.pipeline.fate import SQD_READER, stream_delivery, stream_record
from hpcq.pipeline.messages import StageUpdate
from hpcq.pipeline.telemetry import NullTelemetry, Telemetry, stage_report
from hpcq.pipeline.topology import Exchanges, Topology, declare_base
from hpcq.sqd.controller import Controller, Limits, StageChange
from hpcq.sqd.stages import SqdConfig

log = structlog.get_logger()

OFFSET_HEADER = "x-stream-offset"


@dataclass(frozen=True)
class SqdSettings:
    state_path: Path
    """The snapshot file, conventionally <cache_dir>/sqd/<namespace>.json."""
    snapshot_every: int = 200
    """Records processed between two snapshots (at most this many are re-read after a kill)."""
    snapshot_interval_s: float = 5.0
    prefetch: int = 500
    """Stream messages in flight to this process (a stream consumer needs a prefetch)."""
    snapshot_retry_s: float = 5.0
    """After a snapshot could not be written (disk full, state folder gone), how long
    the controller serves on before it tries again."""
    announce_interval_s: float = 30.0
    idle_exit_s: float | None = None
    """Stop after this long without a message (rebuilds, tests); None: run until stopped."""
    rebuild: bool = False
    """Ignore the snapshot and read the stream from its first offset."""
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.snapshot_every < 1 or self.prefetch < 1 or self.snapshot_interval_s <= 0:
            raise ConfigError("sqd: snapshot_every, prefetch and snapshot_interval_s must be > 0")
        if self.snapshot_retry_s <= 0:
            raise ConfigError("sqd: snapshot_retry_s must be > 0")


def state_path_for(state_dir: Path, namespace: str) -> Path:
    return state_dir / f"{namespace}.json"


# --- snapshots ---------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file, never a
    torn one: write a temp file in the same directory, fsync it, rename, fsync the dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide elites from producers
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def snapshot_bytes(controller: Controller, offset: int | None, namespace: str) -> bytes:
    doc = {"namespace": namespace, "offset": offset, "state": controller.to_json()}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def read_snapshot(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"SQD state {path} is unreadable ({exc}); move it away or run `hpcq sqd --rebuild`"
        ) from exc
    if not isinstance(doc, dict) or "state" not in doc:
        raise ConfigError(f"SQD state {path} is not an hpcq snapshot; run `hpcq sqd --rebuild`")
    return doc


def load_controller(
    path: Path, config: SqdConfig, limits: Limits, rebuild: bool
) -> tuple[Controller, int | None]:
    doc = None if rebuild else read_snapshot(path)
    if doc is None:
        return Controller(config, limits), None
    return Controller.from_json(config, doc["state"], limits), doc["offset"]


def stage_update(change: StageChange, issued_at: float) -> StageUpdate:
    return StageUpdate(
        run_id=change.run_id,
        problem_id=change.problem_id,
        stage=change.index,
        stage_name=change.stage.name,
        constraints=change.stage.constraints,
        policy_version=change.policy_version,
        issued_at=issued_at,
    )


# --- the service -------------------------------------------------------------------------


class SqdService:
    def __init__(
        self,
        broker: BrokerSettings,
        topology: Topology,
        config: SqdConfig,
        settings: SqdSettings,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.broker = broker
        self.topology = topology
        self.settings = settings
        self.telemetry: Telemetry = telemetry or NullTelemetry()  # stage changes, too
        self.controller, self.offset = load_controller(
            settings.state_path, config, settings.limits, settings.rebuild
        )
        self.skipped = 0  # stream messages seen twice (around a reconnect)
        self.resubscriptions = 0
        self.snapshot_failures = 0
        self.snapshot_error: str | None = None  # why the latest attempt failed, if it did
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._stream: AbstractRobustQueue | None = None
        self._resubscribe = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._next_attempt = 0.0  # monotonic time before which a failed snapshot waits
        self._last_announce = time.monotonic()

    def stop(self) -> None:
        """Finish the record in hand, write a snapshot, return from run()."""
        self._stopping.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        link = await Link.open(self.broker, f"hpcq-sqd {self.topology.namespace}")
        try:
            exchanges = await declare_base(link.channel, self.topology)
            # Per-consumer prefetch; streams refuse a global one.
            await link.channel.set_qos(prefetch_count=self.settings.prefetch)
            stream = await link.channel.get_queue(self.topology.log_stream, ensure=True)
            assert isinstance(stream, AbstractRobustQueue)
            self._stream = stream
            link.connection.reconnect_callbacks.add(self._on_reconnect)
            await self._subscribe()
            self._ready.set()
            await self._announce(link, exchanges, self.controller.current())
            await self._serve(link, exchanges)
        finally:
            self._snapshot()
            await link.close()
        log.info("sqd stopped", offset=self.offset, results=self.controller.results)

    async def _subscribe(self) -> None:
        """Read the stream from the record after the last one processed.

        Not a robust consumer: aio-pika would restore it after a reconnect with its first
        arguments, re-reading everything since this process started. Instead each
        reconnect subscribes again from the current offset (`_on_reconnect`)."""
        assert self._stream is not None
        start: int | str = "first" if self.offset is None else self.offset + 1
        await self._stream.consume(self._enqueue, arguments={OFFSET_HEADER: start}, robust=False)
        log.info("sqd reading the stream", namespace=self.topology.namespace, start=start)

    def _on_reconnect(self, *_: object) -> None:
        # Called by aio-pika once the connection and its channels are restored.
        self.resubscriptions += 1
        self._resubscribe.set()

    async def _enqueue(self, message: AbstractIncomingMessage) -> None:
        # No await before the put: callbacks start in delivery order, so the inbox keeps
        # the stream's order.
        self._inbox.put_nowait(message)

    async def _serve(self, link: Link, exchanges: Exchanges) -> None:
        idle_since = time.monotonic()
        while not self._stopping.is_set():
            if self._resubscribe.is_set():
                self._resubscribe.clear()
                try:
                    await self._subscribe()
                except (InfraError, *CONNECTION_EXCEPTIONS) as exc:
                    # Lost again: the next reconnect calls _on_reconnect again.
                    log.warning("sqd: cannot subscribe again yet", error=repr(exc))
            try:
                message = await asyncio.wait_for(self._inbox.get(), 0.2)
            except TimeoutError:
                now = time.monotonic()
                idle = self.settings.idle_exit_s
                if idle is not None and now - idle_since >= idle:
                    return
                await self._periodic(link, exchanges)
                continue
            idle_since = time.monotonic()
            async with stream_delivery(message, SQD_READER):
                changes = self._process(message)
                await self._announce(link, exchanges, changes)
            await self._periodic(link, exchanges)

    def _process(self, message: AbstractIncomingMessage) -> list[StageChange]:
        offset = (message.headers or {}).get(OFFSET_HEADER)
        if not isinstance(offset, int):
            raise InfraError(f"stream message without an integer {OFFSET_HEADER} header")
        if self.offset is not None and offset <= self.offset:
            self.skipped += 1  # delivered before a reconnect and again after it
            return []
        self.offset = offset
        self._since_snapshot += 1
        record = stream_record(message, SQD_READER)
        if isinstance(record, DecodeError):
            self.controller.undecodable += 1  # and skipped: the offset moved past it
            return []
        return self.controller.feed(record)

    async def _periodic(self, link: Link, exchanges: Exchanges) -> None:
        now = time.monotonic()
        if (
            self._since_snapshot
            and now >= self._next_attempt
            and (
                self._since_snapshot >= self.settings.snapshot_every
                or now - self._last_snapshot >= self.settings.snapshot_interval_s
            )
        ):
            self._snapshot()
        if now - self._last_announce >= self.settings.announce_interval_s:
            self._last_announce = now
            await self._announce(link, exchanges, self.controller.current())

    def _snapshot(self) -> None:
        """Write the state; a failure is logged, never raised: the controller serves on
        (the stream keeps every record after the last snapshot) and tries again after
        `snapshot_retry_s`."""
        data = snapshot_bytes(self.controller, self.offset, self.topology.namespace)
        path = self.settings.state_path
        try:
            write_atomic(path, data)
        except OSError as exc:
            self.snapshot_failures += 1
            self.snapshot_error = f"{exc.strerror or exc} ({path})"
            self._next_attempt = time.monotonic() + self.settings.snapshot_retry_s
            log.error(
                "sqd: cannot write the snapshot; still serving, retrying later "
                "(a restart re-reads the unsaved records from the stream)",
                error=self.snapshot_error,
                retry_in_s=self.settings.snapshot_retry_s,
                unsaved_records=self._since_snapshot,
                failures=self.snapshot_failures,
            )
            return
        if self.snapshot_error is not None:
            log.warning("sqd: snapshot written again", path=str(path), offset=self.offset)
        self.snapshot_error = None
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()

    async def _announce(self, link: Link, exchanges: Exchanges, changes: list[StageChange]) -> None:
        for change in changes:
            self.telemetry.stage(stage_report(change))
            body = codec.encode(stage_update(change, time.time()))
            try:
                # Not mandatory: no producer may be listening yet; the periodic
                # announcement repeats it.
                await link.publish(
                    exchanges.control,
                    f"stage.{change.problem_id}",
                    body,
                    headers={"kind": "stage", "reason": change.reason[:200]},
                    mandatory=False,
                )
            except InfraError as exc:
                log.warning("sqd: stage update not confirmed", error=str(exc))
