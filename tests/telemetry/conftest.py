"""Fixtures of the telemetry tests: the real Mosquitto (and RabbitMQ for the pipeline),
one namespace per test; RabbitMQ's side is deleted afterwards, MQTT's retained topics
are cleared."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from hpcq.pipeline.telemetry import MqttSettings
from hpcq.pipeline.topology import Topology, delete_namespace

from .helpers import MQTT_URL, clear_retained


def _up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
async def mqtt() -> AsyncIterator[MqttSettings]:
    """Settings for a fresh namespace on the real Mosquitto (fast reconnects)."""
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    settings = MqttSettings.from_url(
        MQTT_URL, namespace, keepalive_s=5, reconnect_min_s=0.1, reconnect_max_s=1.0
    )
    if not _up(settings.host, settings.port):
        pytest.fail(
            f"Mosquitto is not reachable at {MQTT_URL}: start it with "
            "`mosquitto -d -c /etc/mosquitto/mosquitto.conf` (or `make services`), "
            "or set HPCQ_TEST_MQTT_URL",
            pytrace=False,
        )
    yield settings
    await clear_retained(settings)


@pytest.fixture
async def pipeline_ns(mqtt: MqttSettings, tmp_path: Path) -> AsyncIterator[Topology]:
    """A RabbitMQ namespace named like the MQTT one, deleted afterwards."""
    from pipeline.helpers import BROKER_URL, NODE_CLASS

    if not _up("127.0.0.1", 5672) and "HPCQ_TEST_AMQP_URL" not in os.environ:
        pytest.fail("RabbitMQ is not reachable: `rabbitmq-server -detached`", pytrace=False)
    topology = Topology(namespace=mqtt.namespace)
    yield topology
    connection = await aio_pika.connect(BROKER_URL)
    try:
        channel = await connection.channel()
        await delete_namespace(channel, topology, (NODE_CLASS,), ("p0",))
    finally:
        await connection.close()
