"""Fixtures of the pipeline tests: the real broker, one namespace per test, cleaned up."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import pytest
from yarl import URL

from hpcq.pipeline.topology import Topology, delete_namespace

from .helpers import BROKER_URL, NODE_CLASS, ConsumerProc


def _broker_up() -> bool:
    url = URL(BROKER_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def broker() -> str:
    if not _broker_up():
        pytest.fail(
            f"RabbitMQ is not reachable at {BROKER_URL}: start it with "
            "`rabbitmq-server -detached` (or `make services`), or set HPCQ_TEST_AMQP_URL",
            pytrace=False,
        )
    return BROKER_URL


@dataclass
class Namespace:
    topology: Topology
    tmp: Path
    node_classes: set[str] = field(default_factory=lambda: {NODE_CLASS})
    producers: set[str] = field(default_factory=set)
    consumers: list[ConsumerProc] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.topology.namespace

    def task_queue(self, node_class: str = NODE_CLASS) -> str:
        self.node_classes.add(node_class)
        return self.topology.task_queue(node_class)

    def consumer(
        self,
        *extra: str,
        url: str | None = None,
        scripted: bool = True,
        env: dict[str, str] | None = None,
    ) -> ConsumerProc:
        """A consumer subprocess (not started), by default with the scripted evaluator and
        the test's own crash-journal folder (one "host" per test)."""
        log = self.tmp / f"consumer-{len(self.consumers)}.log"
        if "--journal-dir" not in extra:
            extra = (*extra, "--journal-dir", str(self.tmp / "journal"))
        proc = ConsumerProc(self.name, log, *extra, url=url, scripted=scripted, env=env)
        self.consumers.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {c.log_path.name}\n{c.log()[-4000:]}" for c in self.consumers)


@pytest.fixture
async def ns(broker: str, tmp_path: Path) -> AsyncIterator[Namespace]:
    space = Namespace(Topology(namespace=f"t-{uuid.uuid4().hex[:10]}"), tmp_path)
    yield space
    for proc in space.consumers:
        proc.stop()
    connection = await aio_pika.connect(broker)
    try:
        channel = await connection.channel()
        await delete_namespace(
            channel, space.topology, tuple(space.node_classes), tuple(space.producers)
        )
    finally:
        await connection.close()


@pytest.fixture
def consumers_log(ns: Namespace) -> Iterator[None]:
    """Print the consumers' logs when a test fails (pytest shows captured output)."""
    yield
    print(ns.logs())
