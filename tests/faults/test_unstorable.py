"""Values JSON cannot carry, end to end: refused at emit and at the step, nothing half-stored.

Through the real HTTP path: an in-process server, a RemoteStore, a Worker over it.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow import AgentContext, NotSerializableError, Worker, agent, tool
from ironflow.errors import InvalidInputError
from ironflow.server import BackgroundServer
from ironflow.store import LmdbStore, RemoteStore
from ironflow.store._codec import MAX_DEPTH


def _nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def _recursive() -> Any:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    return loop


#: name -> (a factory of the value, the path the error names, words of its reason)
UNSTORABLE: dict[str, tuple[Any, str, str]] = {
    "nan": (lambda: {"score": math.nan}, "['score']", "not a finite number"),
    "inf": (lambda: [1.0, -math.inf], "[1]", "not a finite number"),
    "bytes": (lambda: {"blob": b"\x00\xff"}, "['blob']", "bytes is not a JSON type"),
    "set": (lambda: {"tags": {"a", "b"}}, "['tags']", "set is not a JSON type"),
    "recursive": (_recursive, "['self']", "contains itself"),
    "int keys": (lambda: {1: "one"}, "[1]", "dict keys must be str"),
    # What bytes that are not UTF-8 become when decoded with errors="surrogateescape".
    "lone surrogate": (lambda: {"name": "x\udc80y"}, "['name']", "a lone surrogate"),
    "lone surrogate key": (lambda: {"k\udcff": 1}, "['k\\udcff']", "a lone surrogate"),
    # Past MAX_DEPTH levels: the encoder refuses values about 255 deep, and before
    # they were refused here a too-deep step output re-ran its tool forever.
    "too deep": (lambda: _nested(300), "[0]" * MAX_DEPTH, f"more than {MAX_DEPTH} levels deep"),
}


@tool
def produce(kind: str) -> Any:
    return UNSTORABLE[kind][0]()


@tool
def consume(value: Any) -> str:
    return "never reached"


@agent(id="unstorable-out", triggers=["unstorable.out"])
def returns_unstorable(ctx: AgentContext) -> Any:
    return produce(kind=ctx.event.data["kind"])


@agent(id="unstorable-in", triggers=["unstorable.in"])
def passes_unstorable(ctx: AgentContext) -> Any:
    return consume(value=UNSTORABLE[ctx.event.data["kind"]][0]())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LmdbStore, RemoteStore, str]]:
    local = LmdbStore(tmp_path / "data", sync=False)
    with BackgroundServer(local) as url:
        remote = RemoteStore(url, long_poll=0.1, give_up_after=5.0)
        yield local, remote, url
        remote.close()
    local.close()


@pytest.mark.parametrize("kind", sorted(UNSTORABLE))
def test_emitting_an_unstorable_payload_is_refused_and_stores_nothing(
    served: tuple[LmdbStore, RemoteStore, str], kind: str
) -> None:
    """emit() with NaN, bytes, a set, a cycle or int keys: NotSerializableError, no event."""
    local, remote, _ = served
    make, path, reason = UNSTORABLE[kind]
    for store in (local, remote):
        with pytest.raises(NotSerializableError) as info:
            store.emit("unstorable.out", make())
        assert info.value.path == "data" + path
        assert reason in str(info.value)
    assert local.events() == [] and local.list_runs() == []
    local.check_valid()


@pytest.mark.parametrize("body", ['{"name": "x", "data": NaN}', '{"name": "x", "data": -Infinity}'])
def test_the_http_api_refuses_non_json_numbers_with_400(
    served: tuple[LmdbStore, RemoteStore, str], body: str
) -> None:
    """NaN and Infinity are not JSON: POST /events answers 400 bad_json and stores nothing."""
    local, _, url = served
    request = urllib.request.Request(
        url + "/api/v1/events", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    assert json.load(info.value)["error"]["code"] == "bad_json"
    assert local.events() == []


def test_the_http_api_refuses_too_deep_data_with_422_naming_the_path(
    served: tuple[LmdbStore, RemoteStore, str],
) -> None:
    """Data nested past the limit: POST /events answers 422 with the path, stores nothing."""
    local, _, url = served
    body = json.dumps({"name": "x", "data": {"deep": _nested(300)}}).encode()
    request = urllib.request.Request(
        url + "/api/v1/events", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 422
    error = json.load(info.value)["error"]
    assert error["code"] == "invalid_input"
    assert (
        "data['deep'][0][0]" in error["message"] and f"{MAX_DEPTH} levels deep" in error["message"]
    )
    assert local.events() == [] and local.list_runs() == []


@pytest.mark.parametrize(
    ("data", "kind"), [([1, 2], "an array"), ("text", "a string"), (3, "a number"), (None, "null")]
)
def test_event_data_that_is_not_an_object_is_refused_everywhere(
    served: tuple[LmdbStore, RemoteStore, str], data: Any, kind: str
) -> None:
    """Handlers read ctx.event.data[...]: data that is not an object is refused at emit
    (InvalidInputError; 422 over HTTP), naming it, and stores nothing."""
    local, remote, url = served
    for store in (local, remote):
        with pytest.raises(InvalidInputError, match=f"data must be a JSON object, not {kind}"):
            store.emit("unstorable.out", data)
    body = json.dumps({"name": "unstorable.out", "data": data}).encode()
    request = urllib.request.Request(
        url + "/api/v1/events", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 422
    assert f"not {kind}" in json.load(info.value)["error"]["message"]
    assert local.events() == [] and local.list_runs() == []


@pytest.mark.parametrize("kind", sorted(UNSTORABLE))
def test_a_tool_returning_an_unstorable_value_fails_its_step_clearly(
    served: tuple[LmdbStore, RemoteStore, str], kind: str
) -> None:
    """Through the server: the step is recorded failed, naming output<path>; the run fails."""
    local, remote, _ = served
    _, path, reason = UNSTORABLE[kind]
    worker = Worker([returns_unstorable], store=remote)  # registers the agent's trigger
    run_id = remote.emit("unstorable.out", {"kind": kind}).run_ids[0]
    worker.run(until_idle=True, ready_message=False)
    run = local.get_run(run_id)
    assert run.status == "failed"
    assert run.error is not None and run.error.type == "NotSerializableError"
    assert f"output{path}" in run.error.message and reason in run.error.message
    [step] = local.get_steps(run_id)
    assert (step.id, step.status, step.output) == ("tool.produce", "failed", None)
    local.check_valid()


@pytest.mark.parametrize("kind", sorted(UNSTORABLE))
def test_a_tool_given_an_unstorable_argument_fails_before_it_runs(
    served: tuple[LmdbStore, RemoteStore, str], kind: str
) -> None:
    """An argument JSON cannot carry is refused before the tool runs; the run fails clearly."""
    local, remote, _ = served
    _, path, reason = UNSTORABLE[kind]
    worker = Worker([passes_unstorable], store=remote)  # registers the agent's trigger
    run_id = remote.emit("unstorable.in", {"kind": kind}).run_ids[0]
    worker.run(until_idle=True, ready_message=False)
    run = local.get_run(run_id)
    assert run.status == "failed"
    assert run.error is not None and run.error.type == "NotSerializableError"
    if kind == "too deep":
        path = path[3:]  # the argument sits one level down, in the input's dict
    assert reason in run.error.message and f"input['value']{path} " in run.error.message
    assert all(s.output != "never reached" for s in local.get_steps(run_id))
    local.check_valid()
