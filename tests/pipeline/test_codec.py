"""The codec: round trips, and every kind of bad input refused with a reason code."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcq.errors import DecodeError
from hpcq.outcome import Constraints, EvalResult, Status
from hpcq.pipeline import codec
from hpcq.pipeline.messages import SCHEMA_VERSION, Heartbeat, Result, StageUpdate, Task

names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
constraints = st.builds(
    Constraints,
    forbidden=st.frozensets(names, max_size=4),
    required=st.frozensets(names, max_size=4),
)
tasks = st.builds(
    Task,
    task_id=names,
    problem_id=names,
    source=st.text(max_size=2000),
    constraints=constraints,
    node_class=names,
    run_id=st.text(max_size=30),
    step=st.integers(0, 10**9),
    group_id=st.text(max_size=30),
    member=st.integers(0, 1000),
    policy_version=st.integers(0, 10**6),
    attempt=st.integers(1, 10),
    reply_to=st.text(max_size=30),
    created_at=finite,
)
outcomes = st.builds(
    EvalResult,
    status=st.sampled_from(list(Status)),
    reward=st.none() | finite,
    message=st.text(max_size=200),
    gflops=st.none() | finite,
    techniques=st.lists(names, max_size=5).map(tuple),
    calls=st.integers(0, 1000),
    cached=st.booleans(),
)
results = st.builds(
    Result,
    task_id=names,
    outcome=outcomes,
    consumer=names,
    slot=st.integers(0, 64),
    cores=st.lists(st.integers(0, 255), max_size=8).map(tuple),
    node_class=names,
    attempt=st.integers(1, 5),
    started_at=finite,
)


@given(tasks)
def test_task_round_trip(task: Task) -> None:
    assert codec.decode_task(codec.encode(task)) == task


@given(results)
def test_result_round_trip(result: Result) -> None:
    assert codec.decode_result(codec.encode(result)) == result


def test_control_records_round_trip() -> None:
    stage = StageUpdate("run", "dgemm-256", 2, "blocking", Constraints(frozenset({"simd"})), 7, 1.5)
    beat = Heartbeat("host:1", "x86_64-avx512", 4, 2, 10, True, ("a", "b"), 3.0)
    assert codec.decode(codec.encode(stage)) == stage
    assert codec.decode_heartbeat(codec.encode(beat)) == beat


def _reason(data: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        codec.decode_task(data)
    return str(info.value).split(":")[0]


def _wire(**changes: object) -> bytes:
    task = Task("t1", "dgemm-256", "void f(void){}", node_class="x86_64-avx512")
    body = msgpack.unpackb(codec.encode(task))
    body.update(changes)
    return msgpack.packb(body)


def test_malformed_inputs() -> None:
    assert _reason(b"\xc1\x00garbage") == "malformed"
    assert _reason(b"") == "malformed"
    assert _reason(msgpack.packb([1, 2, 3])) == "malformed"
    assert _reason(msgpack.packb({1: 2})) == "malformed"  # non-string keys


def test_schema_version_is_checked() -> None:
    assert _reason(_wire(v=SCHEMA_VERSION + 1)) == "schema_version"
    assert _reason(_wire(v="1")) == "schema_version"


def test_sizes_are_bounded() -> None:
    assert _reason(b"\x00" * (codec.MAX_MESSAGE_BYTES + 1)) == "oversized"
    assert _reason(_wire(src="x" * (codec.MAX_SOURCE_BYTES + 1))) == "oversized"
    assert _reason(_wire(id="x" * 500)) == "oversized"
    with pytest.raises(DecodeError, match="oversized"):
        codec.encode(Task("t", "p", "x" * (codec.MAX_MESSAGE_BYTES + 10), node_class="c"))


@pytest.mark.parametrize(
    "changes",
    [
        {"id": 5},
        {"src": b"bytes, not text"},
        {"st": "3"},
        {"a": True},
        {"ts": float("nan")},
        {"c": {"fb": "simd", "rq": []}},
        {"c": [1]},
        {"k": "nonsense"},
        {"id": ""},
    ],
)
def test_wrong_types_are_invalid(changes: dict[str, object]) -> None:
    assert _reason(_wire(**changes)) == "invalid"


def test_missing_field_and_wrong_kind() -> None:
    body = msgpack.unpackb(_wire())
    del body["p"]
    assert _reason(msgpack.packb(body)) == "invalid"
    beat = Heartbeat("h:1", "x", 1, 0, 0)
    assert _reason(codec.encode(beat)) == "invalid"  # a heartbeat is not a task


def test_result_carries_compiler_and_flags_and_older_results_decode() -> None:
    import dataclasses

    import msgpack

    from hpcq.outcome import EvalResult, Status
    from hpcq.pipeline.codec import decode_result, encode
    from hpcq.pipeline.messages import Result

    o = EvalResult(Status.OK, 1.0, gflops=2.0, compiler="gcc (Debian 12.2.0) 12.2.0",
                   flags=("-O3", "-march=native"))  # fmt: skip
    r = Result("t1", o, "h:1", 0, (0,), node_class="x86")
    back = decode_result(encode(r))
    assert back.outcome.compiler == o.compiler and back.outcome.flags == o.flags
    wire = msgpack.unpackb(encode(r))
    del wire["o"]["cc"], wire["o"]["fl"]  # a consumer older than the fields
    old = decode_result(msgpack.packb(wire))
    assert old.outcome == dataclasses.replace(o, compiler="", flags=())
