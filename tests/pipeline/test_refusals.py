"""A broker that refuses the credentials or the virtual host is not a broker that is down:
every command that connects fails at once, says what to fix, and exits 4 (a broker that
cannot be reached is retried for 30 s, then exits 3)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from yarl import URL

from .conftest import Namespace
from .helpers import BROKER_URL, NODE_CLASS, REPO, SCRIPTED_CONSUMER, source, wait_consumers

pytestmark = pytest.mark.broker

_URL = URL(BROKER_URL)
BAD_PASSWORD = str(_URL.with_password("hpcq-wrong-password"))
BAD_VHOST = str(_URL.with_path("/hpcq-no-such-vhost"))


def command(name: str, tmp: Path) -> list[str]:
    """`-m MODULE COMMAND ...`: the consumer through the tests' scripted launcher."""
    kernel = tmp / "k.c"
    kernel.write_text(source())
    return {
        "consumer": [
            "-m", SCRIPTED_CONSUMER, "consumer", "--slots", "1",
            "--node-class", NODE_CLASS, "--journal-dir", str(tmp / "journal"),
        ],
        "submit": ["-m", "hpcq", "submit", str(kernel), "--node-class", NODE_CLASS],
        "status": ["-m", "hpcq", "status", "--node-class", NODE_CLASS],
        "replay": ["-m", "hpcq", "replay", "--to", str(tmp / "out.jsonl")],
        "sqd": ["-m", "hpcq", "sqd", "--state-dir", str(tmp / "sqd")],
    }[name]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "refusal"),
    [(BAD_PASSWORD, "ACCESS_REFUSED"), (BAD_VHOST, "NOT_ALLOWED")],
    ids=["password", "vhost"],
)
@pytest.mark.parametrize("name", ["consumer", "submit", "status", "replay", "sqd"])
async def test_refused_connection_fails_at_once(
    name: str, url: str, refusal: str, tmp_path: Path
) -> None:
    args = command(name, tmp_path)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, "--namespace", "t-refused", "--amqp-url", url,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    elapsed = time.monotonic() - started
    text = err.decode()
    assert proc.returncode == 4, text
    assert elapsed < 20, f"took {elapsed:.1f} s: retried as if the broker were down"
    [line] = text.splitlines()  # one clear line, no traceback, no retry warnings
    assert line.startswith("hpcq: broker refused: RabbitMQ at "), line
    assert refusal in line and "--amqp-url" in line, line
    assert "start it" not in line and "hpcq-wrong-password" not in line, line
    if refusal == "NOT_ALLOWED":
        assert "'hpcq-no-such-vhost'" in line and "rabbitmqctl add_vhost" in line, line
    assert out == b""


async def test_a_different_delivery_limit_names_the_fix(ns: Namespace) -> None:
    """Queue arguments cannot change: a consumer with another --delivery-limit than the
    work queue's (3, the former default) stops at once and says what to do."""
    queue = ns.task_queue()
    ns.consumer().start()  # the queue now exists, with the default limit (10)
    await wait_consumers(queue, 1)
    late = ns.consumer("--delivery-limit", "3").start()
    assert await late.wait(30) == 2
    [line] = late.log().splitlines()
    assert line.startswith(f"hpcq: error: work queue {queue} exists with other arguments"), line
    assert "received '3' but current is '10'" in line and "--delivery-limit" in line, line
