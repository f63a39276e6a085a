"""The hot paths' shortcuts agree with the slow paths they skip (issue 13).

Records are written by one codec per class (orjson, nested records by their own codec)
instead of cattrs + ``json.dumps``; plain values are checked and copied in one pass
without paths; a recorded output already of its annotated type skips cattrs; ids are
encoded ten bits a lookup; LmdbStore's group commit waits a moment for writers when
the last commit was shared. Each shortcut must give what the slow path gives, and
refuse what it refuses.
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironflow._pure._ids import _ALPHABET, new_id
from ironflow._pure._limits import MAX_DEPTH
from ironflow._pure._trace import TraceContext
from ironflow.errors import NotSerializableError, StoreCorruptedError
from ironflow.store import (
    AgentSpec,
    EmitResult,
    ErrorInfo,
    Event,
    LmdbStore,
    Run,
    StepRecord,
    StepTry,
)
from ironflow.store._codec import (
    NOT_JSON,
    _walk,
    codec_of,
    converter,
    decode_record,
    encode_record,
    exact_json,
    structure,
    to_json_value,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def _stdlib(record: Any) -> bytes:
    """How records were written before the codec: cattrs, then the standard library."""
    return json.dumps(
        converter.unstructure(record), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


_TRACE = TraceContext("00-" + "a" * 32 + "-" + "b" * 16 + "-01")
_EVENT = Event(id="evt_1", name="order.placed", data={"n": [1, 2.5, "é"]}, ts=1.25, seq=3)
_RECORDS: list[Any] = [
    _EVENT,
    Event(id="e", name="n", data={}, ts=2.0, stream="s", version=2, trace=_TRACE),
    EmitResult(event_id="evt_1", run_ids=("run_a", "run_b"), created=True, seq=3),
    Run(id="run_a", agent="a", status="pending", event=_EVENT, created_at=1.0, updated_at=2.0),
    Run(
        id="run_b",
        agent="a",
        status="failed",
        event=_EVENT,
        created_at=1.0,
        updated_at=2.0,
        error=ErrorInfo("ValueError", "bad", traceback="tb", step_id="tool.x"),
        attempt=2,
    ),
    StepRecord("run_a", 0, "tool.x", "completed", {"i": 1}, {"ok": True}, 1.0, 1.5, worker="w"),
    StepRecord(
        "run_a",
        1,
        "tool.y",
        "failed",
        {},
        None,
        1.0,
        1.5,
        error=ErrorInfo("E", "m"),
        tries=(StepTry(error=ErrorInfo("E", "first"), started_at=0.5, ended_at=0.6),),
    ),
    AgentSpec(id="a", triggers=("x.*", "y"), description="d"),
]


@pytest.mark.parametrize("record", _RECORDS, ids=lambda r: type(r).__name__)
def test_records_read_back_equal_and_as_the_old_encoder_wrote_them(record: Any) -> None:
    raw = encode_record(record)
    assert decode_record(raw, type(record)) == record
    # Same JSON as cattrs + json.dumps wrote (so old and new records read alike), and
    # records written the old way still read back.
    assert json.loads(raw) == json.loads(_stdlib(record))
    assert decode_record(_stdlib(record), type(record)) == record


def test_a_run_record_keeps_the_head_the_census_matches() -> None:
    raw = encode_record(_RECORDS[3])
    assert raw.startswith(b'{"id":"run_a","agent":"a","status":"pending"')


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_float_field_that_is_not_finite_is_refused_not_written_as_null(bad: float) -> None:
    with pytest.raises(ValueError):
        encode_record(StepRecord("r", 0, "s", "completed", None, None, 1.0, bad))
    with pytest.raises(ValueError):
        encode_record(_EVENT.__class__(id="e", name="n", data={}, ts=bad))


def test_unknown_keys_are_ignored_and_a_missing_one_is_named() -> None:
    data = json.loads(encode_record(_EVENT))
    data["added_later"] = 1
    assert decode_record(json.dumps(data).encode(), Event) == _EVENT
    del data["name"]
    with pytest.raises(StoreCorruptedError, match="Event record"):
        decode_record(json.dumps(data).encode(), Event)


def test_unknown_keys_beside_nested_records_are_ignored() -> None:
    # The nested event was already built when the unknown key sent the run to the
    # converter, which then failed on it: the record read as damaged.
    data = json.loads(encode_record(_RECORDS[4]))
    data["added_later"] = 1
    data["event"]["added_later"] = 2
    assert decode_record(json.dumps(data).encode(), Run) == _RECORDS[4]


@pytest.mark.parametrize("extra", [{}, {"added_later": 1}], ids=["own codec", "converter"])
def test_a_record_decoded_with_changes_is_what_evolve_gives(extra: dict[str, Any]) -> None:
    data = {**json.loads(encode_record(_RECORDS[3])), **extra}
    changes = {
        "status": "failed",
        "error": ErrorInfo("ValueError", "bad", step_id="tool.x"),
        "output": {"n": 1},
        "updated_at": 9.0,
    }
    got = decode_record(json.dumps(data).encode(), Run, **changes)
    assert got == attrs.evolve(_RECORDS[3], **changes)
    assert decode_record(json.dumps(data).encode(), Run) == _RECORDS[3]


def test_a_scalar_tuple_field_holding_other_values_goes_through_the_converter() -> None:
    raw = b'{"event_id":"e","run_ids":["a",7],"created":true,"seq":1}'
    assert decode_record(raw, EmitResult) == converter.structure(json.loads(raw), EmitResult)
    with pytest.raises(StoreCorruptedError, match="EmitResult record"):
        decode_record(b'{"run_ids":["a",7],"created":true}', EmitResult)
    assert codec_of(EmitResult).decode(
        b'{"event_id":"e","run_ids":[],"created":true,"seq":1}'
    ) == EmitResult("e", (), True, 1)


@given(json_values)
def test_the_one_pass_check_gives_what_the_full_walk_gives(value: Any) -> None:
    assert to_json_value(value) == _walk(value, "value", "value", set(), 0)


def test_the_one_pass_copy_is_a_copy() -> None:
    inner = {"b": [1, 2]}
    value = {"a": inner, "t": (1, 2)}
    stored = to_json_value(value)
    assert stored == {"a": {"b": [1, 2]}, "t": [1, 2]}
    inner["b"].append(3)
    assert stored["a"]["b"] == [1, 2]


@given(json_values)
def test_the_orjson_check_takes_exactly_the_values_stored_unchanged(value: Any) -> None:
    # exact_json (one orjson encode and decode) answers a copy only for a value the walk
    # would store as an equal value of the same types; anything else (here a tuple)
    # is left to the walk, which converts it.
    copy = exact_json(value)
    walked = _walk(value, "value", "value", set(), 0)
    if copy is NOT_JSON:
        assert walked != value or _has_tuple(value)
    else:
        assert copy == walked == value
        assert orjson.dumps(copy) == orjson.dumps(walked)


def _has_tuple(value: Any) -> bool:
    if isinstance(value, tuple):
        return True
    if isinstance(value, list):
        return any(_has_tuple(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tuple(v) for v in value.values())
    return False


class _Color(enum.Enum):
    RED = 1


class _Text(str):
    pass


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        [math.inf],
        (1, 2),
        {"a": (1,)},
        _Color.RED,
        [uuid.UUID(int=1)],
        {"k": _Text("x")},
        {_Text("k"): 1},
        {1: "x"},
        2**64,
        -(2**63) - 1,
        "\udcff",
        _nested(MAX_DEPTH + 1),
        [datetime.datetime(2026, 1, 1)],
        [object()],
    ],
)
def test_the_orjson_check_leaves_what_json_would_change_to_the_walk(value: Any) -> None:
    assert exact_json(value) is NOT_JSON


def test_the_orjson_check_answers_a_copy_up_to_the_depth_limit() -> None:
    value = {"a": [1, 2.5, None, True, "é"], "b": {"c": -0.0}}
    copy = exact_json(value)
    assert copy == value and copy is not value and copy["a"] is not value["a"]
    deepest = {"deep": _nested(MAX_DEPTH - 1)}  # MAX_DEPTH levels, as the walk allows
    assert exact_json(deepest) == to_json_value(deepest) == deepest
    assert exact_json(2**64 - 1) == 2**64 - 1 and exact_json(-(2**63)) == -(2**63)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": [1, {"b": math.nan}]}, "value['a'][1]['b']"),
        ({"a": [2**64]}, "value['a'][0]"),
        ({"a": {1: "x"}}, "value['a'][1]"),
        ({"a": ["\udcff"]}, "value['a'][0]"),
        ({"a": [object()]}, "value['a'][0]"),
    ],
)
def test_a_value_the_one_pass_check_refuses_is_named_by_the_full_walk(
    value: Any, path: str
) -> None:
    with pytest.raises(NotSerializableError) as caught:
        to_json_value(value)
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        ({"i": 1, "ok": 1}, dict[str, int], {"i": 1, "ok": 1}),
        (["a", "b"], list[str], ["a", "b"]),
        (3, int, 3),
        (3, float, 3.0),  # the converter converts an int where a float is asked
        ({"x": 3}, dict[str, float], {"x": 3.0}),
        (True, int, 1),
        ("7", int, 7),
    ],
)
def test_structure_shortcut_agrees_with_cattrs(value: Any, tp: Any, expected: Any) -> None:
    got = structure(value, tp)
    assert got == expected and type(got) is type(expected)
    assert got == converter.structure(value, tp)
    if isinstance(value, dict | list):
        assert got is not value  # a copy, as cattrs gives: the record stays as it was


def _old_id_text(n: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(chars))


def test_ids_are_encoded_as_before() -> None:
    from ironflow._pure import _ids

    for _ in range(2000):
        n = int.from_bytes(os.urandom(16), "big")
        text = "".join([_ids._PAIRS[(n >> s) & 1023] for s in range(120, -1, -10)])
        assert text == _old_id_text(n)
    ids = [new_id("run_") for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(len(i) == 30 and i.startswith("run_") for i in ids)


def test_group_commit_shares_commits_between_overlapping_writers(tmp_path: Path) -> None:
    """Sixteen threads emitting at once share a few commits, and every emit is in the
    store when its call returns (each one read back at once by its own thread)."""
    store = LmdbStore(tmp_path / "data")
    try:
        store.register_agents([AgentSpec(id="a", triggers=("go",))])
        batches: list[int] = []
        store.commit_observer = lambda seconds, n: batches.append(n)
        start = threading.Barrier(16)
        missing: list[str] = []

        def emit(i: int) -> None:
            start.wait()
            for j in range(5):
                [run_id] = store.emit("go", {"i": i, "j": j}).run_ids
                if store.get_run(run_id).status != "pending":
                    missing.append(run_id)

        threads = [threading.Thread(target=emit, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not missing
        assert sum(batches) == 80
        assert len(batches) < 80 and max(batches) > 1
        assert len(store.list_runs(limit=100)) == 80
        store.check_valid()
    finally:
        store.close()


def test_a_lone_writer_after_a_shared_commit_stops_waiting(tmp_path: Path) -> None:
    """After one shared commit, one writer alone pays the gathering wait once at most:
    its next commit carried only its op, so the one after does not wait."""
    from ironflow.store import _lmdb

    store = LmdbStore(tmp_path / "data", sync=False)
    try:
        committer = store.backend._committer
        committer._last_batch = 16  # as after sixteen writers shared a commit
        store.register_agents([AgentSpec(id="a", triggers=("go",))])
        assert committer._last_batch == 1
        store.emit("go", {})
        assert committer._last_batch == 1
        assert _lmdb._GATHER_S <= 100e-6
    finally:
        store.close()
