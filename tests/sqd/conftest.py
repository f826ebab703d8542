"""Fixtures of the SQD tests: the broker, one namespace per test (deleted after)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from yarl import URL

from hpcq.pipeline.topology import Topology, delete_namespace
from hpcq.sqd.stages import SqdConfig, load_config

from .helpers import BROKER_URL, fast_default_text


def _broker_up() -> bool:
    url = URL(BROKER_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
async def topo() -> AsyncIterator[Topology]:
    if not _broker_up():
        pytest.fail(f"RabbitMQ is not reachable at {BROKER_URL} (`make services`)", pytrace=False)
    topology = Topology(namespace=f"t-sqd-{uuid.uuid4().hex[:10]}")
    yield topology
    connection = await aio_pika.connect(BROKER_URL)
    try:
        channel = await connection.channel()
        await delete_namespace(channel, topology, ("sqd-e2e",), ("e2e",))
    finally:
        await connection.close()


@pytest.fixture
def fast_config(tmp_path: Path) -> tuple[Path, SqdConfig]:
    path = tmp_path / "fast.toml"
    path.write_text(fast_default_text())
    return path, load_config(path)
