"""An opt-in Prometheus endpoint (prometheus-client, the `prometheus` extra).

`PromTelemetry` implements `hpcq.pipeline.telemetry.Telemetry`: each report sets metrics in a
registry of its own, served over HTTP by prometheus-client's server thread (`/metrics`
on `--metrics-port`). Setting a metric is a few dictionary updates under a lock: it
never waits on the network. The figures are those of the MQTT telemetry:

| metric | labels | from |
|---|---|---|
| `hpcq_node_up` | node, node_class | heartbeat (0 for a state `offline`) |
| `hpcq_node_slots`, `hpcq_node_busy_slots` | node, node_class | heartbeat |
| `hpcq_node_results_total` | node, node_class, status | heartbeat (results published) |
| `hpcq_train_step` and `hpcq_train_*` | run_id | producer step metrics |
| `hpcq_train_status_fraction` | run_id, status | producer step metrics |
| `hpcq_sqd_stage_index` | problem_id | SQD stage changes |
| `hpcq_sqd_stage` | problem_id, stage (1 for the current one) | SQD stage changes |

The CLI finds it through the `hpcq.telemetry` entry point `prometheus` (pyproject.toml),
which names `sink` at the end of this module.
"""

from __future__ import annotations

import asyncio
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from hpcq.errors import ConfigError
from hpcq.pipeline import telemetry as t
from hpcq.train.metrics import StepMetrics

_TRAIN_GAUGES = {
    "reward_mean": "mean reward of the step's scored members",
    "reward_std": "reward standard deviation of the step",
    "gflops_best": "best GFLOPS of the step's correct kernels",
    "gflops_mean": "mean GFLOPS of the step's correct kernels",
    "frac_groups_dropped": "share of GRPO groups dropped",
    "kl": "KL to the reference policy",
    "loss": "training loss",
    "time_generate_s": "seconds generating completions",
    "time_rewards_s": "seconds waiting for rewards",
    "time_update_s": "seconds in the policy update",
    "eval_busy_s": "evaluation seconds spent on the CPU nodes for the step",
}


class PromTelemetry:
    def __init__(self, port: int, addr: str = "127.0.0.1") -> None:
        self.port = port
        self.addr = addr
        self.registry = CollectorRegistry()
        r = self.registry
        node = ["node", "node_class"]
        self._up = Gauge("hpcq_node_up", "1 while the consumer runs", node, registry=r)
        self._slots = Gauge("hpcq_node_slots", "evaluation slots", node, registry=r)
        self._busy = Gauge("hpcq_node_busy_slots", "slots evaluating", node, registry=r)
        self._results = Counter(
            "hpcq_node_results", "results published", [*node, "status"], registry=r
        )
        self._seen: dict[tuple[str, str, str], int] = {}
        self._step = Gauge("hpcq_train_step", "last policy step done", ["run_id"], registry=r)
        self._train = {
            name: Gauge(f"hpcq_train_{name}", doc, ["run_id"], registry=r)
            for name, doc in _TRAIN_GAUGES.items()
        }
        self._fractions = Gauge(
            "hpcq_train_status_fraction",
            "share of the step's members per status",
            ["run_id", "status"],
            registry=r,
        )
        self._stage_index = Gauge(
            "hpcq_sqd_stage_index", "current stage index", ["problem_id"], registry=r
        )
        self._stage = Gauge(
            "hpcq_sqd_stage", "1 for the current stage", ["problem_id", "stage"], registry=r
        )
        self._stage_names: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: WSGIServer | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        try:
            self._server, _ = start_http_server(self.port, self.addr, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"--metrics-port {self.port}: cannot listen on {self.addr}: "
                f"{exc.strerror or exc}; pick a free port"
            ) from exc

    def heartbeat(self, beat: t.NodeBeat) -> None:
        labels = (beat.node, beat.node_class)
        with self._lock:
            self._up.labels(*labels).set(0 if beat.state == t.OFFLINE else 1)
            self._slots.labels(*labels).set(beat.slots)
            self._busy.labels(*labels).set(beat.busy)
            for status, count in beat.statuses.items():
                key = (*labels, status)
                delta = count - self._seen.get(key, 0)
                if delta > 0:
                    self._results.labels(*key).inc(delta)
                self._seen[key] = count

    def step(self, run_id: str, metrics: StepMetrics) -> None:
        with self._lock:
            self._step.labels(run_id).set(metrics.step)
            for name, gauge in self._train.items():
                value = getattr(metrics, name)
                if value is not None:
                    gauge.labels(run_id).set(float(value))
            for status, share in metrics.status_fractions.items():
                self._fractions.labels(run_id, status).set(share)

    def stage(self, report: t.StageReport) -> None:
        with self._lock:
            old = self._stage_names.get(report.problem_id)
            if old is not None and old != report.stage:
                self._stage.remove(report.problem_id, old)
            self._stage_names[report.problem_id] = report.stage
            self._stage.labels(report.problem_id, report.stage).set(1)
            self._stage_index.labels(report.problem_id).set(report.index)

    async def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)  # waits for the serving loop's poll
            server.server_close()


# The factory the `hpcq.telemetry` entry point names (pyproject.toml), typed by the core's
# contract: mypy checks that the class fits it.
sink: t.PromSinkFactory = PromTelemetry
