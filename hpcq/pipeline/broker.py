"""One robust AMQP connection per process, and the one way hpcq publishes.

aio-pika's robust connection restores channels, QoS, exchanges, queues, bindings and
consumers after a broker restart or a network cut, but not in-flight work: deliveries of
the lost channel are redelivered by the broker, and publications that failed are not
replayed. `Link.publish` therefore waits for the channel to come back and retries with
a fresh message id (a lost confirm is not a nack, so a retry may duplicate: receivers
dedupe by task_id). Every publish uses confirms, `mandatory`, and a timeout.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError
from aiormq.exceptions import (
    AuthenticationError,
    ConnectionNotAllowed,
    InvalidFrameError,
    ProbableAuthenticationError,
)
from pamqp.common import FieldValue
from yarl import URL

from hpcq.errors import BrokerRefusedError, ConfigError, InfraError
from hpcq.pipeline.codec import CONTENT_TYPE

log = structlog.get_logger()

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True)
class BrokerSettings:
    url: str = DEFAULT_AMQP_URL
    """Query parameters in the URL (heartbeat, reconnect_interval, ...) win over fields."""
    heartbeat_s: int = 30
    """AMQP heartbeat; the loop stays free during evaluations, so a short one is safe."""
    reconnect_interval_s: float = 2.0
    connect_wait_s: float = 30.0
    """How long the first connection keeps trying (an elastic node may start before the
    broker). aio-pika alone would raise at once (its fail_fast)."""
    publish_timeout_s: float = 15.0
    """Per attempt: a confirm for a quorum queue plus a stream takes milliseconds."""
    publish_attempts: int = 6

    def __post_init__(self) -> None:
        if URL(self.url).scheme not in ("amqp", "amqps"):
            raise ConfigError(f"amqp url {self.redacted_url}: use amqp://user:pass@host:port/")
        if self.publish_attempts < 1 or self.publish_timeout_s <= 0:
            raise ConfigError("publish_attempts >= 1 and publish_timeout_s > 0")

    @property
    def redacted_url(self) -> str:
        url = URL(self.url)
        return str(url.with_password("***")) if url.password else str(url)


def _connection_url(settings: BrokerSettings) -> URL:
    url = URL(settings.url)
    defaults = {
        "heartbeat": str(settings.heartbeat_s),
        "reconnect_interval": str(settings.reconnect_interval_s),
    }
    return url.with_query({**defaults, **url.query})


def refusal(settings: BrokerSettings, exc: BaseException) -> BrokerRefusedError | None:
    """The broker answered, and said no: wrong credentials or virtual host. Waiting for
    it cannot help, unlike a broker that is not up yet."""
    url = URL(settings.url)
    where = f"RabbitMQ at {settings.redacted_url}"
    text = str(exc)
    if isinstance(exc, ProbableAuthenticationError | AuthenticationError) or (
        "ACCESS_REFUSED" in text
    ):
        return BrokerRefusedError(
            f"{where} refused the login of user {url.user or 'guest'!r} (ACCESS_REFUSED): "
            "fix the user or password in --amqp-url / HPCQ_AMQP_URL "
            "(the broker's users: `rabbitmqctl list_users`)"
        )
    # aiormq 7.2 reports Connection.Close in answer to Connection.Open (RabbitMQ's 530
    # NOT_ALLOWED: no such vhost, or no access to it) as an unexpected frame.
    closed_at_open = isinstance(exc, InvalidFrameError) and (
        "Connection.OpenOk" in text and "Connection.Close" in text
    )
    if isinstance(exc, ConnectionNotAllowed) or closed_at_open or "NOT_ALLOWED" in text:
        vhost = url.path[1:] or "/"
        return BrokerRefusedError(
            f"{where} refused virtual host {vhost!r} to user {url.user or 'guest'!r} "
            "(NOT_ALLOWED: the vhost does not exist, or the user has no access to it): "
            "fix the vhost (the URL's path) in --amqp-url / HPCQ_AMQP_URL, or create it "
            f"(`rabbitmqctl add_vhost {vhost}` and `rabbitmqctl set_permissions -p "
            f"{vhost} USER '.*' '.*' '.*'`)"
        )
    return None


async def connect(settings: BrokerSettings, name: str) -> AbstractRobustConnection:
    """Connect robustly, retrying the first attempt for `connect_wait_s` while the broker
    is unreachable; a refusal (credentials, vhost) raises BrokerRefusedError at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.connect_wait_s
    url = _connection_url(settings)
    pause = 0.25
    while True:
        try:
            return await aio_pika.connect_robust(
                url, client_properties={"connection_name": name}, timeout=10
            )
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            refused = refusal(settings, exc)
            if refused is not None:
                raise refused from exc
            if loop.time() + pause > deadline:
                raise InfraError(
                    f"cannot reach RabbitMQ at {settings.redacted_url} ({exc!r}); start it "
                    "(`rabbitmq-server -detached`) or set --amqp-url / HPCQ_AMQP_URL"
                ) from exc
            log.warning("broker not reachable yet", url=settings.redacted_url, error=repr(exc))
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)


@dataclass
class Link:
    """A robust connection with one confirming channel, held strongly (aio-pika keeps
    channels only in a WeakSet: a dropped reference is never restored)."""

    settings: BrokerSettings
    connection: AbstractRobustConnection
    channel: AbstractRobustChannel

    @classmethod
    async def open(cls, settings: BrokerSettings, name: str) -> Link:
        connection = await connect(settings, name)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except BaseException:
            await connection.close()
            raise
        assert isinstance(channel, AbstractRobustChannel)
        return cls(settings=settings, connection=connection, channel=channel)

    async def close(self) -> None:
        await self.connection.close()

    async def _wait_ready(self) -> None:
        try:
            await asyncio.wait_for(self.channel.ready(), self.settings.publish_timeout_s)
        except (TimeoutError, *CONNECTION_EXCEPTIONS):
            pass  # the next attempt reports the state

    async def publish(
        self,
        exchange: AbstractExchange,
        routing_key: str,
        body: bytes,
        *,
        headers: Mapping[str, FieldValue] | None = None,
        mandatory: bool = True,
        attempts: int | None = None,
    ) -> None:
        """Publish and wait for the broker's confirm; raise InfraError when it never came.

        Unroutable (no queue bound for the key) is a topology error and is not retried.
        """
        attempts = attempts or self.settings.publish_attempts
        timeout = self.settings.publish_timeout_s
        last: BaseException | None = None
        for attempt in range(1, attempts + 1):
            message = aio_pika.Message(
                body,
                # A fresh id per attempt: aiormq maps message ids to delivery tags, and a
                # repeated id on one channel is suspected of losing confirms (aio-pika #689).
                message_id=uuid.uuid4().hex,
                content_type=CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=dict(headers or {}),
                timestamp=time.time(),
            )
            try:
                # Also bounds the wait for a reconnect (aio-pika #636). asyncio.timeout,
                # unlike wait_for on 3.11, costs no extra task per publish.
                async with asyncio.timeout(timeout):
                    await exchange.publish(
                        message, routing_key, mandatory=mandatory, timeout=timeout
                    )
                return
            except PublishError as exc:
                raise InfraError(
                    f"unroutable: no queue bound to {exchange.name!r} for key {routing_key!r}"
                ) from exc
            except (TimeoutError, DeliveryError, *CONNECTION_EXCEPTIONS) as exc:
                last = exc
                log.warning(
                    "publish failed, retrying",
                    exchange=exchange.name,
                    attempt=attempt,
                    error=repr(exc),
                )
                await self._wait_ready()
        raise InfraError(
            f"publish to {exchange.name!r} not confirmed after {attempts} attempts: {last!r}"
        ) from last
