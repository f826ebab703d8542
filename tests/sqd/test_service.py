"""`hpcq sqd` on the real broker: restart without loss, replay to the identical state,
stage updates reaching a producer, and a forbidden technique judged `violation` end to
end through the pipeline. One namespace per test, deleted afterwards; every wait bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpcq.eval.settings import EngineSettings
from hpcq.outcome import Evaluator, Status
from hpcq.pipeline import codec
from hpcq.pipeline.broker import BrokerSettings, Link
from hpcq.pipeline.messages import Record, Result, Task
from hpcq.pipeline.topology import Topology, declare_base
from hpcq.sqd.client import StageClient
from hpcq.sqd.controller import Controller
from hpcq.sqd.service import SqdService, SqdSettings, read_snapshot, state_path_for
from hpcq.sqd.stages import SqdConfig, load_config

from .helpers import FAST_URL, Script, random_stream

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]


async def publish(topology: Topology, records: list[Record]) -> None:
    """As the pipeline would: tasks on the tasks exchange, results on the results one."""
    link = await Link.open(BrokerSettings(url=FAST_URL), "sqd-test-publisher")
    try:
        ex = await declare_base(link.channel, topology)
        for record in records:  # one by one: the stream keeps this order
            if isinstance(record, Task):
                await link.publish(ex.tasks, record.node_class, codec.encode(record))
            else:
                await link.publish(ex.results, "_", codec.encode(record))
    finally:
        await link.close()


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def expected_state(config: SqdConfig, records: list[Record]) -> dict[str, Any]:
    c = Controller(config)
    for r in records:
        c.feed(r)
    return json.loads(json.dumps(c.to_json()))


def offset_of(path: Path) -> int:
    try:
        doc = read_snapshot(path)
    except Exception:
        return -1
    return -1 if doc is None or doc["offset"] is None else int(doc["offset"])


def sqd_proc(
    topology: Topology, config: Path, state_dir: Path, *extra: str
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "hpcq", "sqd", "--namespace", topology.namespace,
        "--amqp-url", FAST_URL, "--sqd-config", str(config), "--state-dir", str(state_dir),
        "--snapshot-every", "7", "--snapshot-interval-s", "1000", *extra,
    ]  # fmt: skip
    log = (state_dir / "sqd.log").open("ab")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=REPO)


async def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"hpcq sqd still running after {timeout_s} s")
        await asyncio.sleep(0.05)
    return proc.returncode


async def test_kill_restart_and_replay(
    topo: Topology, fast_config: tuple[Path, SqdConfig], tmp_path: Path
) -> None:
    config_path, config = fast_config
    records = random_stream(seed=21, steps=24, per_step=4)
    half = 7 * (len(records) // 14) + 3  # not a multiple of 7: a kill between snapshots
    state = state_path_for(tmp_path, topo.namespace)
    await publish(topo, records[:half])
    proc = sqd_proc(topo, config_path, tmp_path)
    try:
        last_snapshot = 7 * (half // 7) - 1  # offset of the last record the snapshot holds
        await wait_for(lambda: offset_of(state) >= last_snapshot, 30, "the first snapshots")
        await asyncio.sleep(0.5)  # it processes the 3 records after it, unsaved
        proc.send_signal(signal.SIGKILL)
        await wait_exit(proc, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert offset_of(state) == last_snapshot
    await publish(topo, records[half:])
    proc = sqd_proc(topo, config_path, tmp_path, "--idle-exit-s", "1.5")
    assert await wait_exit(proc, 30) == 0, (tmp_path / "sqd.log").read_text()[-3000:]
    doc = read_snapshot(state)
    assert doc is not None
    want = expected_state(config, records)
    assert doc["offset"] == len(records) - 1
    assert doc["state"] == want  # no record lost, none counted twice
    unique = {r.task_id for r in records if isinstance(r, Result)}
    assert want["results"] == len(unique) and want["duplicates"] > 0
    # Rebuilt from a replay of the stream: the identical state and archive.
    replay_path = tmp_path / "replay" / "state.json"
    service = SqdService(
        BrokerSettings(url=FAST_URL),
        topo,
        config,
        SqdSettings(state_path=replay_path, idle_exit_s=1.0, rebuild=True),
    )
    await asyncio.wait_for(service.run(), 30)
    replayed = read_snapshot(replay_path)
    assert replayed is not None
    assert replayed["state"] == doc["state"] and replayed["offset"] == doc["offset"]


async def test_stage_updates_reach_the_producer(
    topo: Topology, fast_config: tuple[Path, SqdConfig], tmp_path: Path
) -> None:
    _, config = fast_config
    state = tmp_path / "state.json"
    service = SqdService(
        BrokerSettings(url=FAST_URL), topo, config,
        SqdSettings(state_path=state, snapshot_every=1),
    )  # fmt: skip
    client = StageClient(
        BrokerSettings(url=FAST_URL), topo.namespace, config, elites_per_prompt=2, snapshot=state
    )
    running = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.wait_ready(), 15)
        await client.start()
        first = client.current_constraints("dgemm-256")
        stage, index = client.current_stage("dgemm-256")
        assert (stage.name, index) == ("scalar", 0) and first.constraints == stage.constraints
        script = Script()
        blocked = config.schedules["cumulative"].stages[1].constraints
        # A blocked kernel from elsewhere (off-stage) lands in the archive as an elite.
        script.kernel(0, 30.0, ("cache_blocking",), blocked, "dgemm-256")
        for step in range(6):  # max_steps = 6 in the fast schedule
            script.kernel(step, 5.0 + step, (), first.constraints, "dgemm-256")
        await publish(topo, script.records)
        await wait_for(lambda: client.current_stage("dgemm-256")[1] == 1, 15, "stage update")
        constraints, prompt_text, elites = client.current_constraints("dgemm-256")
        assert client.current_stage("dgemm-256")[0].name == "blocking"
        assert constraints == blocked
        assert "Stage 2 of 5: blocking" in prompt_text and "must use" in prompt_text
        assert [e.gflops for e in elites] == [30.0]
        stage = client.stage_for("dgemm-256")
        assert stage.constraints == blocked and "30.0 GFLOPS" in stage.hint
        assert client.current_stage("dgemm-512")[0].name == "0-free"
    finally:
        await client.close()
        service.stop()
        await asyncio.wait_for(running, 15)


def _engine(settings: EngineSettings) -> Evaluator:
    """The real engine. An import error or a missing tool fails the test: a node that
    cannot evaluate must not pass the suite by skipping it."""
    from hpcq.eval.engine import Engine

    missing = [
        t for t in ("bwrap", "setpriv", "prlimit", "gcc", "nm", "objdump") if not shutil.which(t)
    ]
    assert not missing, f"{missing} missing: run `make install-system`"
    return Engine(settings)


OPENMP_KERNEL = """#include <omp.h>
void dgemm(int M, int N, int K, const double *A, const double *B, double *C) {
    #pragma omp parallel for
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
"""


SCALAR_KERNEL = """void dgemm(int M, int N, int K, const double *A, const double *B, double *C) {
    for (int i = 0; i < M * N; i++) C[i] = 0.0;
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            double a = A[i * K + k];
            for (int j = 0; j < N; j++) C[i * N + j] += a * B[k * N + j];
        }
}
"""


async def test_forbidden_technique_is_a_violation_end_to_end(
    topo: Topology, tmp_path: Path, engine_settings: EngineSettings
) -> None:
    """Producer side asks the stage client, the task carries the stage's constraints, the
    real consumer and engine judge it, the SQD controller counts the violation."""
    from hpcq.pipeline.consumer import Consumer, ConsumerSettings
    from hpcq.pipeline.slots import plan_slots
    from hpcq.pipeline.topology import declare_results_queue

    engine = _engine(engine_settings)
    from hpcq.eval.problems import default_kernels_dir
    from hpcq.sqd.stages import default_config_path

    config = load_config(default_config_path(default_kernels_dir()))
    broker = BrokerSettings(url=FAST_URL)
    service = SqdService(broker, topo, config, SqdSettings(state_path=tmp_path / "s.json"))
    client = StageClient(broker, topo.namespace, config)
    consumer = Consumer(
        broker,
        topo,
        ConsumerSettings(node_class="sqd-e2e", pin_process=False),
        plan_slots((0,), slots=1, reserve_cores=0),
        engine,
    )
    tasks = [asyncio.create_task(service.run()), asyncio.create_task(consumer.run())]
    link = await Link.open(broker, "sqd-e2e-producer")
    try:
        await asyncio.wait_for(service.wait_ready(), 15)
        await asyncio.wait_for(consumer.wait_ready(), 15)
        await client.start()
        view = client.current_constraints("dgemm-256")
        assert "openmp" in view.constraints.forbidden  # the scalar stage
        ex = await declare_base(link.channel, topo)
        results = await declare_results_queue(link.channel, topo, ex, "e2e")
        task = Task(
            task_id="e2e-1", problem_id="dgemm-256", source=OPENMP_KERNEL,
            constraints=view.constraints, node_class="sqd-e2e", reply_to="e2e",
        )  # fmt: skip
        await link.publish(ex.tasks, "sqd-e2e", codec.encode(task))
        message = await _get(results, 60)
        result = codec.decode_result(message.body)
        assert result.outcome.status is Status.VIOLATION, result.outcome.message
        assert "openmp" in result.outcome.message
        await wait_for(lambda: service.controller.results == 1, 15, "the controller")
        state = service.controller.problems["dgemm-256"]
        assert state.statuses == {"violation": 1}
        assert service.controller.archive.cells == {}  # a violation is no elite
        # A kernel that keeps to the stage is measured and becomes the `scalar` elite.
        task = dataclasses.replace(task, task_id="e2e-2", source=SCALAR_KERNEL)
        await link.publish(ex.tasks, "sqd-e2e", codec.encode(task))
        result = codec.decode_result((await _get(results, 120)).body)
        # infra_error included: a sandbox that cannot run a correct kernel fails here.
        assert result.outcome.status is Status.OK, result.outcome.message
        await wait_for(lambda: service.controller.results == 2, 15, "the controller")
        elite = service.controller.archive.cells[("dgemm-256", frozenset())].elite
        assert elite.task_id == "e2e-2" and elite.source == SCALAR_KERNEL
        assert state.current.progress.best_gflops == result.outcome.gflops
    finally:
        await link.close()
        await client.close()
        service.stop()
        consumer.drain()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def _get(queue: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.1)
    raise AssertionError(f"no result within {timeout_s} s")


async def _close_connection(name: str) -> None:
    """Cut one client connection broker-side, as a network failure would."""
    listing = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_connections", "pid", "client_properties",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(listing.communicate(), 30)
    lines = [line for line in out.decode().splitlines() if f'"{name}"' in line]
    assert len(lines) == 1, out.decode()[-2000:]
    closing = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "close_connection", lines[0].split("\t")[0], "sqd test cut",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(closing.wait(), 30) == 0


async def test_connection_loss_loses_and_doubles_nothing(
    topo: Topology, fast_config: tuple[Path, SqdConfig], tmp_path: Path
) -> None:
    if not shutil.which("rabbitmqctl"):
        pytest.skip("rabbitmqctl is needed to cut the connection broker-side")
    _, config = fast_config
    records = random_stream(seed=33, steps=12, per_step=4)
    half = len(records) // 2
    service = SqdService(
        BrokerSettings(url=FAST_URL), topo, config,
        SqdSettings(state_path=tmp_path / "state.json"),
    )  # fmt: skip
    running = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.wait_ready(), 15)
        await publish(topo, records[:half])
        await wait_for(lambda: service.offset == half - 1, 15, "the first half")
        await _close_connection(f"hpcq-sqd {topo.namespace}")
        await publish(topo, records[half:])
        await wait_for(lambda: service.offset == len(records) - 1, 30, "the second half")
        await asyncio.sleep(0.3)  # a re-read of old offsets, if any, would land now
        assert service.resubscriptions == 1
        assert service.skipped < half // 2  # it went on from where it was, not from the start
        assert json.loads(json.dumps(service.controller.to_json())) == expected_state(
            config, records
        )
    finally:
        service.stop()
        await asyncio.wait_for(running, 15)
