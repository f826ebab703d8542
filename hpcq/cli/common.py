"""What every `hpcq` command shares, declared once: exit codes, the broker options
(--namespace, --amqp-url, --delivery-limit) and the telemetry options (--mqtt-url,
--metrics-port), with the environment variables that default them (HPCQ_NAMESPACE,
HPCQ_AMQP_URL, HPCQ_MQTT_URL): read here, at the CLI edge, and nowhere below. The
telemetry adapters those options ask for are found here too, through the
`hpcq.telemetry` entry point group (bridges/ declares them in pyproject.toml).

Exit codes: 0 the command did its job (for `eval`: the evaluation ran, whatever the
kernel's status), 2 bad input or configuration, 3 the node could not evaluate
(infra_error) or the broker could not be reached, 4 the broker refused the credentials
or the virtual host of the AMQP URL, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from hpcq.errors import ConfigError
from hpcq.eval.settings import EngineSettings, load_settings
from hpcq.pipeline.broker import DEFAULT_AMQP_URL, BrokerSettings
from hpcq.pipeline.telemetry import (
    Fanout,
    Feed,
    FeedFactory,
    MqttSettings,
    MqttSinkFactory,
    NullTelemetry,
    PromSinkFactory,
    Telemetry,
)
from hpcq.pipeline.topology import Topology

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_INFRA = 3
EXIT_REFUSED = 4
EXIT_INTERRUPTED = 130


def settings_from(args: argparse.Namespace) -> EngineSettings:
    overrides: dict[str, Any] = {}
    if args.cache_dir:
        overrides["cache_dir"] = Path(args.cache_dir)
    if args.kernels_dir:
        overrides["kernels_dir"] = Path(args.kernels_dir)
    if getattr(args, "no_cache", False):
        overrides["use_cache"] = False
    return load_settings(Path(args.config) if args.config else None, **overrides)


def add_namespace_arg(p: argparse.ArgumentParser, own_default: str | None = None) -> None:
    """--namespace, defaulting to HPCQ_NAMESPACE or "hpcq". A tool with a namespace of its
    own (the demo: one per run, whose queues it deletes at the end) passes `own_default`,
    and then the environment is not read: it must not land on a shared namespace."""
    if own_default is None:
        default = os.environ.get("HPCQ_NAMESPACE", "hpcq")
        said = "env HPCQ_NAMESPACE; default hpcq"
    else:
        default = own_default
        said = f"default {own_default}" if own_default else "default: one of the command's own"
    p.add_argument(
        "--namespace",
        default=default,
        help=f"prefix of every queue and exchange ({said})",
    )


def add_amqp_url_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--amqp-url",
        default=os.environ.get("HPCQ_AMQP_URL", DEFAULT_AMQP_URL),
        help="RabbitMQ URL (env HPCQ_AMQP_URL; default the local development broker)",
    )


def add_broker_args(p: argparse.ArgumentParser) -> None:
    add_namespace_arg(p)
    add_amqp_url_arg(p)
    p.add_argument(
        "--delivery-limit",
        type=int,
        default=Topology.delivery_limit,
        help="backstop: returns of one delivery (crashes, cut connections) before the "
        "broker parks it in the DLQ (same in every process of a namespace)",
    )


def add_telemetry_args(p: argparse.ArgumentParser, reader: bool = False) -> None:
    """--mqtt-url (env HPCQ_MQTT_URL) and, for a process that reports (not a `reader`),
    the Prometheus endpoint."""
    what = "read nodes, steps and stages from" if reader else "send live telemetry to"
    p.add_argument(
        "--mqtt-url",
        default=os.environ.get("HPCQ_MQTT_URL") or None,
        help=f"{what} this MQTT broker, e.g. mqtt://127.0.0.1:1883 "
        "(env HPCQ_MQTT_URL; needs the mqtt extra; default: off)",
    )
    if not reader:
        p.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="serve Prometheus metrics on this port (needs the prometheus extra)",
        )
        p.add_argument(
            "--metrics-addr",
            default="127.0.0.1",
            help="address of the Prometheus endpoint (0.0.0.0: every interface)",
        )


def mqtt_from_args(args: argparse.Namespace) -> MqttSettings | None:
    url = getattr(args, "mqtt_url", None)
    return MqttSettings.from_url(url, namespace=args.namespace) if url else None


TELEMETRY_GROUP = "hpcq.telemetry"


def load_adapter(name: str, flag: str, extra: str, hint: str = "") -> Any:
    """The factory that the `hpcq.telemetry` entry point `name` names, loaded now (which
    imports the extra's package): `flag` asked for it. Typed by the caller, with one of
    the factory types of `hpcq.pipeline.telemetry`."""
    found = sorted(entry_points(group=TELEMETRY_GROUP, name=name), key=lambda ep: ep.value)
    if not found:
        raise ConfigError(
            f"{flag}: no {name!r} adapter in the {TELEMETRY_GROUP} entry points; "
            "reinstall hpcq (pip install -e . in a checkout)"
        )
    try:
        return found[0].load()
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{flag} needs the {extra} extra ({exc.name} is missing): "
            f"pip install 'hpcq[{extra}]'{hint}"
        ) from exc


async def open_telemetry(
    args: argparse.Namespace, node: str | None = None, node_class: str = ""
) -> Telemetry:
    """The sinks the flags ask for, started (their adapters are loaded only then)."""
    sinks: list[Telemetry] = []
    mqtt = mqtt_from_args(args)
    if mqtt is not None:
        mqtt_sink: MqttSinkFactory = load_adapter("mqtt", "--mqtt-url", "mqtt")
        sinks.append(mqtt_sink(mqtt, node, node_class))
    port = getattr(args, "metrics_port", None)
    if port is not None:
        prom_sink: PromSinkFactory = load_adapter("prometheus", "--metrics-port", "prometheus")
        sinks.append(prom_sink(port, args.metrics_addr))
    telemetry: Telemetry = Fanout(sinks) if len(sinks) > 1 else (sinks or [NullTelemetry()])[0]
    await telemetry.start()
    return telemetry


def feed_from_args(args: argparse.Namespace) -> Feed | None:
    """The MQTT reader of `hpcq status --watch` when --mqtt-url asks for one (not started)."""
    mqtt = mqtt_from_args(args)
    if mqtt is None:
        return None
    hint = ", or leave --mqtt-url out to watch from the broker alone"
    make_feed: FeedFactory = load_adapter("mqtt-feed", "--mqtt-url", "mqtt", hint)
    return make_feed(mqtt)


def broker_from_args(args: argparse.Namespace) -> BrokerSettings:
    return BrokerSettings(url=args.amqp_url)


def topology_from_args(args: argparse.Namespace) -> Topology:
    return Topology(namespace=args.namespace, delivery_limit=args.delivery_limit)
