"""The one module that knows the wire format (msgpack) of every pipeline record.

Envelope: a msgpack map with `v` (schema version), `k` (record kind) and the record's
fields under short keys. Decoding never trusts the peer: it bounds the raw size before
parsing, checks every field's type and length, and raises `DecodeError` whose message
starts with a short reason code (`oversized`, `malformed`, `schema_version`, `invalid`)
that the consumer copies into the dead-letter header.

Versioning: a field added later is optional on the wire. Its absence decodes to the
field's default and older decoders ignore keys they do not know, so adding one keeps
`SCHEMA_VERSION`; only a change that old peers would misread bumps it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgpack

from hpcq.errors import DecodeError
from hpcq.outcome import Constraints, EvalResult, Status
from hpcq.pipeline.messages import SCHEMA_VERSION, Heartbeat, Record, Result, StageUpdate, Task

MAX_MESSAGE_BYTES = 1 << 20  # a task is one C file; anything bigger is not ours
MAX_SOURCE_BYTES = 256 << 10
MAX_TEXT_BYTES = 64 << 10  # free text such as an evaluation message
MAX_ID_CHARS = 200
MAX_LIST_ITEMS = 4096

CONTENT_TYPE = "application/msgpack"

_R = TypeVar("_R")


# --- decoding helpers -----------------------------------------------------------------


class _Fields:
    """Typed access to one wire map; every failure names the field."""

    def __init__(self, data: Mapping[str, Any], kind: str) -> None:
        self._d = data
        self._kind = kind

    def _get(self, key: str, default: Any = ...) -> Any:
        if key in self._d:
            return self._d[key]
        if default is ...:
            raise DecodeError(f"invalid: {self._kind} lacks field {key!r}")
        return default

    def _bad(self, key: str, want: str) -> DecodeError:
        got = type(self._d.get(key)).__name__
        return DecodeError(f"invalid: {self._kind}.{key} must be {want}, got {got}")

    def text(self, key: str, limit: int = MAX_ID_CHARS, default: Any = ...) -> str:
        v = self._get(key, default)
        if not isinstance(v, str):
            raise self._bad(key, "a string")
        if len(v) > limit:
            raise DecodeError(f"oversized: {self._kind}.{key} has {len(v)} chars > {limit}")
        return v

    def integer(self, key: str, default: Any = ...) -> int:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._bad(key, "an integer")
        return v

    def number(self, key: str, default: Any = ...) -> float:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self._bad(key, "a number")
        if not math.isfinite(v):
            raise DecodeError(f"invalid: {self._kind}.{key} is not finite")
        return float(v)

    def opt_number(self, key: str) -> float | None:
        v = self._get(key, None)
        return None if v is None else self.number(key)

    def flag(self, key: str, default: Any = ...) -> bool:
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise self._bad(key, "a boolean")
        return v

    def texts(self, key: str) -> tuple[str, ...]:
        v = self._get(key, [])
        if not isinstance(v, list | tuple) or len(v) > MAX_LIST_ITEMS:
            raise self._bad(key, f"a list of at most {MAX_LIST_ITEMS} strings")
        if not all(isinstance(x, str) and len(x) <= MAX_ID_CHARS for x in v):
            raise self._bad(key, "a list of short strings")
        return tuple(v)

    def ints(self, key: str) -> tuple[int, ...]:
        v = self._get(key, [])
        if not isinstance(v, list | tuple) or len(v) > MAX_LIST_ITEMS:
            raise self._bad(key, f"a list of at most {MAX_LIST_ITEMS} integers")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise self._bad(key, "a list of integers")
        return tuple(v)

    def mapping(self, key: str) -> _Fields:
        v = self._get(key)
        if not isinstance(v, dict):
            raise self._bad(key, "a map")
        return _Fields(v, f"{self._kind}.{key}")


# --- per-record wire layouts ----------------------------------------------------------


def _constraints_to_wire(c: Constraints) -> dict[str, Any]:
    return {"fb": sorted(c.forbidden), "rq": sorted(c.required)}


def _constraints_from_wire(f: _Fields) -> Constraints:
    return Constraints(forbidden=frozenset(f.texts("fb")), required=frozenset(f.texts("rq")))


def _task_to_wire(t: Task) -> dict[str, Any]:
    return {
        "id": t.task_id,
        "p": t.problem_id,
        "src": t.source,
        "c": _constraints_to_wire(t.constraints),
        "nc": t.node_class,
        "run": t.run_id,
        "st": t.step,
        "g": t.group_id,
        "m": t.member,
        "pv": t.policy_version,
        "a": t.attempt,
        "rt": t.reply_to,
        "ts": t.created_at,
    }


def _task_from_wire(f: _Fields) -> Task:
    source = f.text("src", limit=MAX_SOURCE_BYTES)
    task = Task(
        task_id=f.text("id"),
        problem_id=f.text("p"),
        source=source,
        constraints=_constraints_from_wire(f.mapping("c")),
        node_class=f.text("nc"),
        run_id=f.text("run", default=""),
        step=f.integer("st", default=0),
        group_id=f.text("g", default=""),
        member=f.integer("m", default=0),
        policy_version=f.integer("pv", default=0),
        attempt=f.integer("a", default=1),
        reply_to=f.text("rt", default=""),
        created_at=f.number("ts", default=0.0),
    )
    if not task.task_id or not task.problem_id or not task.node_class:
        raise DecodeError("invalid: task needs a task_id, a problem_id and a node_class")
    return task


def _outcome_to_wire(r: EvalResult) -> dict[str, Any]:
    return {
        "s": str(r.status),
        "r": r.reward,
        "msg": r.message[:MAX_TEXT_BYTES],
        "gf": r.gflops,
        "gf0": r.gflops_min,
        "gf1": r.gflops_max,
        "cv": r.cv,
        "pk": r.peak_gflops,
        "tq": list(r.techniques),
        "cs": r.compile_s,
        "rs": r.run_s,
        "n": r.calls,
        "p": r.problem_id,
        "nc": r.node_class,
        "cc": r.compiler[:MAX_TEXT_BYTES],
        "fl": list(r.flags),
        "ca": r.cached,
        "ck": r.cache_key,
    }


def _outcome_from_wire(f: _Fields) -> EvalResult:
    status_text = f.text("s")
    try:
        status = Status(status_text)
    except ValueError as exc:
        raise DecodeError(f"invalid: unknown status {status_text!r}") from exc
    peak = f.opt_number("pk")  # absent in results of consumers older than the field
    if peak is not None and peak <= 0:
        raise DecodeError(f"invalid: result.o.pk (peak_gflops) must be > 0, got {peak:g}")
    return EvalResult(
        status=status,
        reward=f.opt_number("r"),
        message=f.text("msg", limit=MAX_TEXT_BYTES, default=""),
        gflops=f.opt_number("gf"),
        gflops_min=f.opt_number("gf0"),
        gflops_max=f.opt_number("gf1"),
        cv=f.opt_number("cv"),
        peak_gflops=peak,
        techniques=f.texts("tq"),
        compile_s=f.number("cs", default=0.0),
        run_s=f.number("rs", default=0.0),
        calls=f.integer("n", default=0),
        problem_id=f.text("p", default=""),
        node_class=f.text("nc", default=""),
        compiler=f.text("cc", limit=MAX_TEXT_BYTES, default=""),  # absent from older nodes
        flags=f.texts("fl"),  # default: none, from nodes older than the field
        cached=f.flag("ca", default=False),
        cache_key=f.text("ck", limit=MAX_TEXT_BYTES, default=""),
    )


def _result_to_wire(r: Result) -> dict[str, Any]:
    return {
        "id": r.task_id,
        "o": _outcome_to_wire(r.outcome),
        "cn": r.consumer,
        "sl": r.slot,
        "co": list(r.cores),
        "nc": r.node_class,
        "run": r.run_id,
        "g": r.group_id,
        "m": r.member,
        "st": r.step,
        "pv": r.policy_version,
        "a": r.attempt,
        "t0": r.started_at,
        "t1": r.finished_at,
    }


def _result_from_wire(f: _Fields) -> Result:
    return Result(
        task_id=f.text("id"),
        outcome=_outcome_from_wire(f.mapping("o")),
        consumer=f.text("cn"),
        slot=f.integer("sl"),
        cores=f.ints("co"),
        node_class=f.text("nc"),
        run_id=f.text("run", default=""),
        group_id=f.text("g", default=""),
        member=f.integer("m", default=0),
        step=f.integer("st", default=0),
        policy_version=f.integer("pv", default=0),
        attempt=f.integer("a", default=1),
        started_at=f.number("t0", default=0.0),
        finished_at=f.number("t1", default=0.0),
    )


def _stage_to_wire(s: StageUpdate) -> dict[str, Any]:
    return {
        "run": s.run_id,
        "p": s.problem_id,
        "sg": s.stage,
        "sn": s.stage_name,
        "c": _constraints_to_wire(s.constraints),
        "pv": s.policy_version,
        "ts": s.issued_at,
    }


def _stage_from_wire(f: _Fields) -> StageUpdate:
    return StageUpdate(
        run_id=f.text("run"),
        problem_id=f.text("p"),
        stage=f.integer("sg"),
        stage_name=f.text("sn", default=""),
        constraints=_constraints_from_wire(f.mapping("c")),
        policy_version=f.integer("pv", default=0),
        issued_at=f.number("ts", default=0.0),
    )


def _heartbeat_to_wire(h: Heartbeat) -> dict[str, Any]:
    return {
        "cn": h.consumer,
        "nc": h.node_class,
        "sl": h.slots,
        "b": h.busy,
        "d": h.done,
        "dr": h.draining,
        "if": list(h.in_flight),
        "ts": h.sent_at,
    }


def _heartbeat_from_wire(f: _Fields) -> Heartbeat:
    return Heartbeat(
        consumer=f.text("cn"),
        node_class=f.text("nc"),
        slots=f.integer("sl"),
        busy=f.integer("b"),
        done=f.integer("d"),
        draining=f.flag("dr", default=False),
        in_flight=f.texts("if"),
        sent_at=f.number("ts", default=0.0),
    )


_ENCODERS: dict[type[Any], tuple[str, Callable[[Any], dict[str, Any]]]] = {
    Task: ("task", _task_to_wire),
    Result: ("result", _result_to_wire),
    StageUpdate: ("stage", _stage_to_wire),
    Heartbeat: ("heartbeat", _heartbeat_to_wire),
}
_DECODERS: dict[str, Callable[[_Fields], Record]] = {
    "task": _task_from_wire,
    "result": _result_from_wire,
    "stage": _stage_from_wire,
    "heartbeat": _heartbeat_from_wire,
}


# --- public API -----------------------------------------------------------------------


def kind_of(record: Record) -> str:
    """The wire kind ('task', 'result', 'stage', 'heartbeat'), also used as a header."""
    return _ENCODERS[type(record)][0]


def encode(record: Record) -> bytes:
    kind, to_wire = _ENCODERS[type(record)]
    body = to_wire(record)
    body["v"] = SCHEMA_VERSION
    body["k"] = kind
    data: bytes = msgpack.packb(body, use_bin_type=True)
    if len(data) > MAX_MESSAGE_BYTES:
        # Refuse at the sender: the receiver would dead-letter it anyway.
        raise DecodeError(f"oversized: {kind} encodes to {len(data)} bytes > {MAX_MESSAGE_BYTES}")
    return data


def decode(data: bytes) -> Record:
    """Any record; raises DecodeError with a reason code on anything unexpected."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"oversized: {len(data)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        # msgpack signals bad input with several exception types; all mean "not ours".
        raise DecodeError(f"malformed: not a msgpack document ({type(exc).__name__})") from exc
    except Exception as exc:  # msgpack's C unpacker may raise others (e.g. StackError)
        raise DecodeError(f"malformed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DecodeError(f"malformed: top level is {type(obj).__name__}, not a map")
    version = obj.get("v")
    if version != SCHEMA_VERSION:
        raise DecodeError(f"schema_version: got {version!r}, this node speaks {SCHEMA_VERSION}")
    kind = obj.get("k")
    if not isinstance(kind, str) or kind not in _DECODERS:
        raise DecodeError(f"invalid: unknown record kind {kind!r}")
    decoder = _DECODERS[kind]
    return decoder(_Fields(obj, kind))


def _decode_as(data: bytes, cls: type[_R]) -> _R:
    record = decode(data)
    if not isinstance(record, cls):
        raise DecodeError(f"invalid: expected a {cls.__name__}, got a {type(record).__name__}")
    return record


def decode_task(data: bytes) -> Task:
    return _decode_as(data, Task)


def decode_result(data: bytes) -> Result:
    return _decode_as(data, Result)


def decode_heartbeat(data: bytes) -> Heartbeat:
    return _decode_as(data, Heartbeat)


def to_json(record: Record) -> dict[str, Any]:
    """A JSON-ready dict with readable field names (replay dumps), plus `kind`."""
    d = dataclasses.asdict(record)
    d["kind"] = kind_of(record)
    if isinstance(record, Result):
        d["outcome"] = record.outcome.to_dict()
    if isinstance(record, Task | StageUpdate):
        c = record.constraints
        d["constraints"] = {"forbidden": sorted(c.forbidden), "required": sorted(c.required)}
    return d
