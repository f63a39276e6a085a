"""Every limit is written once, in ``ironflow/_pure/_limits.py``, and holds where it is used."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import orjson
import pytest

import ironflow
from ironflow._pure import _limits
from ironflow._pure._limits import MAX_DEPTH, MAX_NAME_BYTES, MAX_STEP_ID_BYTES
from ironflow.errors import InvalidInputError, NotSerializableError
from ironflow.store import AgentSpec, LmdbStore, WorkerInfo
from ironflow.store._codec import to_json_value
from ironflow.store._records import StepRecord

PACKAGE = Path(ironflow.__file__).parent

#: Values of limits that once were typed out in many places (200 in 29 of them).
LIMIT_VALUES = {
    _limits.MAX_STEP_NAME_CHARS,
    _limits.MAX_NAME_BYTES,
    _limits.MAX_PARTITION_BYTES,
    _limits.MAX_STEP_ID_BYTES,
    _limits.MAX_REASON_BYTES,
    _limits.MAX_FILTER_CHARS,
    _limits.MAX_PAGE,
    _limits.MAX_PID,
    _limits.MAX_POSITION,
    _limits.MAX_SEQ,
    _limits.MAX_INT,
    _limits.MIN_INT,
    _limits.MAX_TTL,
}


def _number(node: ast.expr) -> Any:
    """The value of a constant expression (``2**63 - 1``), or None."""
    try:
        value = eval(compile(ast.Expression(node), "<limit>", "eval"), {"__builtins__": {}})
    except Exception:
        return None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


#: Values no code has a reason to type out for anything but the limit itself: flagged
#: wherever they appear, not only in comparisons (``_q_int(..., 0, 2**63 - 1)``).
UNMISTAKABLE = {
    _limits.MAX_SEQ,
    _limits.MIN_INT,
    _limits.MAX_POSITION,
    _limits.MAX_PID,
    _limits.MAX_REASON_BYTES,
}


def test_no_limit_is_typed_out_twice() -> None:
    """No comparison in the package (but in _limits) against a limit's value as a literal:
    a check says ``len(key) > MAX_NAME_BYTES``, never ``len(key) > 200``."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_limits.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant | ast.BinOp | ast.UnaryOp):
                if _number(node) in UNMISTAKABLE:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
                continue
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            # HTTP statuses (200 <= status < 300) are not limits.
            if any("status" in ast.unparse(side) for side in sides):
                continue
            if any(_number(side) in LIMIT_VALUES for side in sides):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "limits typed out; import them from ironflow._pure._limits:\n" + "\n".join(
        found
    )


def test_a_value_as_deep_as_allowed_is_stored_and_one_deeper_is_refused(
    store: LmdbStore,
) -> None:
    """MAX_DEPTH levels go through the stored format's encoder (which stops at 255, with
    the record's own levels on top); one more is refused before anything is written."""

    def nested(depth: int) -> Any:
        value: Any = 0
        for _ in range(depth):
            value = [value]
        return value

    store.register_agents([AgentSpec("a", ("a.*",))])
    store.emit("a.go", {"v": nested(MAX_DEPTH - 1)})  # the object is a level too
    worker = WorkerInfo(id="w", host="h", pid=1)
    [leased] = store.lease_runs(worker, ["a"], limit=1, ttl=60)
    assert leased.run.event.data == {"v": nested(MAX_DEPTH - 1)}
    step = StepRecord(
        leased.run.id, 0, "tool.x", "completed", nested(MAX_DEPTH), nested(MAX_DEPTH), 1.0, 2.0
    )
    store.record_step(worker, step)
    assert store.get_steps(leased.run.id)[0].output == nested(MAX_DEPTH)
    orjson.dumps({"a": {"b": {"c": nested(MAX_DEPTH)}}})  # room to spare in the encoder
    with pytest.raises(NotSerializableError, match=f"more than {MAX_DEPTH} levels deep"):
        to_json_value({"ok": nested(MAX_DEPTH)}, "event data", "data")
    with pytest.raises(NotSerializableError, match=r"data\['v'\]\[0\]\[0\]"):
        store.emit("a.go", {"v": nested(MAX_DEPTH)})
    store.check_valid()


def test_name_limits_are_bytes_and_the_same_for_every_store_key(store: LmdbStore) -> None:
    """An id of MAX_NAME_BYTES bytes is taken, one byte more is refused, in UTF-8 bytes."""
    longest = "é" * (MAX_NAME_BYTES // 2)
    # An agent id is a name chosen in code (letters, digits, '.', '_', '-'): bytes = chars.
    store.register_agents([AgentSpec("a" * MAX_NAME_BYTES, ("a.*",))])
    store.emit("a." + "x" * (MAX_NAME_BYTES - 2), {}, id=longest)
    store.append_to_stream(longest, "a.b", {}, idempotency_key=longest)
    for call in (
        lambda: store.register_agents([AgentSpec("a" * (MAX_NAME_BYTES + 1), ("a.*",))]),
        lambda: store.emit("a." + "x" * (MAX_NAME_BYTES - 1), {}),
        lambda: store.emit("a.go", {}, id=longest + "x"),
        lambda: store.append_to_stream(longest + "x", "a.b", {}),
        lambda: store.append_to_stream("s", "a.b", {}, idempotency_key=longest + "x"),
    ):
        with pytest.raises(InvalidInputError, match=f"{MAX_NAME_BYTES} bytes"):
            call()
    # A step id has room for a prefix and a name of MAX_NAME_BYTES: wait.<event name>.
    assert len("spawn.") + MAX_NAME_BYTES + len("#99999") <= MAX_STEP_ID_BYTES
    # And a key of run id, separator and step id fits LMDB's 511 bytes.
    assert MAX_NAME_BYTES + 1 + MAX_STEP_ID_BYTES <= 511
