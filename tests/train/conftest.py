"""Fixtures of the training tests. The ML stack is optional: tests that need torch take
the `tiny_model` fixture (or call `needs_torch()`), which skips them with the reason
when torch/transformers are not installed. The model is built once per session, small
enough to train in well under a minute on one core."""

from __future__ import annotations

import argparse
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hpcq.pipeline.topology import Topology, delete_namespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the hub in tests
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ML = ("torch", "transformers", "tokenizers")


def needs_torch() -> None:
    missing = [m for m in ML if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"needs the ml extra ({', '.join(missing)} missing): pip install -e '.[ml]'",
            allow_module_level=True,
        )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    needs_torch()
    from bridges.bootstrap import BootstrapSettings, build

    out = tmp_path_factory.mktemp("tiny-model")
    settings = BootstrapSettings(
        samples=800, steps=120, hidden_size=64, layers=2, warmup_steps=10, lr=5e-3, threads=1
    )
    build(out, settings, log=lambda _line: None)
    return out


def cli_parser() -> argparse.ArgumentParser:
    from bridges.cli_train import parser_with_training

    return parser_with_training()


@dataclass
class BrokerSpace:
    """A fresh namespace on the real broker, with real-engine consumer processes."""

    topology: Topology
    tmp: Path
    producers: list[str] = field(default_factory=list)
    consumers: list[Any] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.topology.namespace

    async def start_consumer(self, *extra: str) -> Any:
        from pipeline.helpers import NODE_CLASS, ConsumerProc, wait_consumers

        log = self.tmp / f"consumer-{len(self.consumers)}.log"
        proc = ConsumerProc(self.name, log, *extra, scripted=False).start()
        self.consumers.append(proc)
        await wait_consumers(self.topology.task_queue(NODE_CLASS), len(self.consumers), 60)
        return proc


@pytest.fixture
async def space(tmp_path: Path) -> AsyncIterator[BrokerSpace]:
    import aio_pika
    from pipeline.helpers import BROKER_URL, NODE_CLASS

    try:
        connection = await aio_pika.connect(BROKER_URL, timeout=5)
    except Exception as exc:
        pytest.fail(f"RabbitMQ is not reachable at {BROKER_URL} ({exc!r}): `make services`")
    await connection.close()
    s = BrokerSpace(Topology(namespace=f"t-{uuid.uuid4().hex[:10]}"), tmp_path)
    yield s
    for proc in s.consumers:
        proc.stop()
    connection = await aio_pika.connect(BROKER_URL)
    try:
        channel = await connection.channel()
        await delete_namespace(channel, s.topology, (NODE_CLASS,), tuple(s.producers))
    finally:
        await connection.close()
