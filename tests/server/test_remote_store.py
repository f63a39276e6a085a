"""RemoteStore keeps the Store protocol: the same calls give the same results as LmdbStore."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

import attrs
import pytest

from ironflow.errors import (
    AuthError,
    ConfigError,
    InvalidInputError,
    LeaseLostError,
    NotSerializableError,
    RunNotFoundError,
    ServerUnavailableError,
    StoreError,
)
from ironflow.server import BackgroundServer
from ironflow.store import (
    AgentSpec,
    ErrorInfo,
    LmdbStore,
    RemoteStore,
    StepRecord,
    Store,
    WorkerInfo,
)
from tests.server.conftest import wait_until

WORKER = WorkerInfo(id="w1", host="elsewhere", pid=4242)
OTHER = WorkerInfo(id="w2", host="elsewhere", pid=4343)
AGENT = AgentSpec(id="doc", triggers=("doc.*",))


def step(run_id: str, position: int, output: Any = None) -> StepRecord:
    return StepRecord(
        run_id=run_id,
        position=position,
        id=f"tool.s{position}",
        status="completed",
        input={"n": position},
        output=output,
        started_at=1.0,
        ended_at=2.0,
    )


def test_emit_lease_record_finish(any_store: Store) -> None:
    """A run goes emit -> lease -> steps -> finish with the same records on both stores."""
    any_store.register_agents([AGENT])
    assert any_store.agents() == [AGENT]
    result = any_store.emit("doc.received", {"docId": "d1"}, id="e1")
    assert result.created and len(result.run_ids) == 1
    again = any_store.emit("doc.received", {"docId": "d1"}, id="e1")
    assert again.run_ids == result.run_ids and not again.created
    run_id = result.run_ids[0]

    [leased] = any_store.lease_runs(WORKER, ["doc"], limit=5, ttl=30)
    assert leased.run.id == run_id and leased.run.status == "running" and leased.steps == ()
    assert leased.lease.worker == WORKER
    assert any_store.lease_runs(OTHER, ["doc"], limit=5, ttl=30) == []

    assert not any_store.record_step(WORKER, step(run_id, 0, {"text": "é"})).cancel_requested
    # A repeated record (a retry after a lost reply) is a no-op, not an error.
    any_store.record_step(WORKER, step(run_id, 0, "ignored"))
    with pytest.raises(LeaseLostError):
        any_store.record_step(OTHER, step(run_id, 1))
    assert any_store.heartbeat(WORKER, [run_id, "run_nope"], ttl=30) == {run_id}
    lease = any_store.get_lease(run_id)
    assert lease is not None and lease.worker == WORKER

    done = any_store.finish_run(
        WORKER, run_id, status="completed", output={"ok": True}, attempt=1
    )
    assert done.status == "completed" and done.output == {"ok": True}
    assert any_store.get_run(run_id) == done
    assert [s.output for s in any_store.get_steps(run_id)] == [{"text": "é"}]
    assert any_store.get_lease(run_id) is None
    assert any_store.list_runs(limit=5) == [done]
    assert any_store.list_runs(status="pending") == []
    assert any_store.list_runs(agent="doc", status="completed") == [done]


def test_release_and_cancel(any_store: Store) -> None:
    """A released run is pending again; cancel stops a pending run now, a running one later."""
    any_store.register_agents([AGENT])
    first, second = (any_store.emit("doc.x", {}).run_ids[0] for _ in range(2))
    leased = any_store.lease_runs(WORKER, ["doc"], limit=1, ttl=30)
    assert [r.run.id for r in leased] == [first]
    any_store.release_run(WORKER, first, attempt=1)
    assert any_store.get_run(first).status == "pending"

    assert any_store.request_cancel(second).status == "cancelled"
    [again] = any_store.lease_runs(WORKER, ["doc"], limit=5, ttl=30)
    assert again.run.id == first and again.run.attempt == 2
    running = any_store.request_cancel(first)
    assert running.status == "running" and running.cancel_requested
    # A step records the attempt it ran in; the lease fences out any other attempt.
    assert any_store.record_step(WORKER, attrs.evolve(step(first, 0), attempt=2)).cancel_requested
    error = ErrorInfo(type="Cancelled", message="the run was cancelled")
    finished = any_store.finish_run(WORKER, first, status="cancelled", error=error, attempt=2)
    assert finished.status == "cancelled" and finished.error == error


def test_errors_are_the_same(any_store: Store) -> None:
    """Unknown runs, bad input and unstorable data raise the same errors on both stores."""
    for bad_id in ("run_nope", "", "x" * 300, "a\x00b", "a/b"):
        with pytest.raises(RunNotFoundError):
            any_store.get_run(bad_id)
    with pytest.raises(RunNotFoundError):
        any_store.request_cancel("run_nope")
    with pytest.raises(InvalidInputError):
        any_store.emit("", {})
    with pytest.raises(InvalidInputError):
        any_store.emit("ok", {}, id="x" * 300)
    with pytest.raises(NotSerializableError, match=r"data\['f'\]"):
        any_store.emit("ok", {"f": object()})
    with pytest.raises(LeaseLostError):
        any_store.finish_run(WORKER, "run_nope", status="completed", attempt=1)
    with pytest.raises(LeaseLostError):
        any_store.release_run(WORKER, "run_nope", attempt=1)


def test_bad_url_is_a_config_error() -> None:
    """IRONFLOW_URL that is not an http URL fails at once, naming the variable."""
    for url in ("localhost:9123", "ftp://x", "http://", "http://h:notaport"):
        with pytest.raises(ConfigError, match="IRONFLOW_URL"):
            RemoteStore(url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gives_up_only_when_told(caplog: pytest.LogCaptureFixture) -> None:
    """With nothing listening, calls retry with backoff, warn once, and raise if told to."""
    store = RemoteStore(f"http://127.0.0.1:{_free_port()}", give_up_after=0.4)
    with (
        caplog.at_level(logging.WARNING, "ironflow.remote"),
        pytest.raises(ServerUnavailableError, match=r"did not answer within 0\.4s"),
    ):
        store.list_runs()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "retrying for up to 0.4s" in warnings[0]


def test_a_worker_waiting_for_its_server_says_how_to_start_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker (no give_up_after) started before `ironflow serve` retries until it
    answers, and its one warning says what to do about it."""
    store = RemoteStore(f"http://127.0.0.1:{_free_port()}")

    def call() -> None:
        with contextlib.suppress(StoreError):  # given up at close()
            store.agents()

    caller = threading.Thread(target=call)
    with caplog.at_level(logging.WARNING, "ironflow.remote"):
        caller.start()
        try:
            wait_until(lambda: caplog.records, what="the call to meet the closed port")
        finally:
            store.close()  # the call still retrying gives up now
            caller.join(timeout=30)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "unreachable, retrying until it answers" in message
    assert "start `ironflow serve` there, or unset IRONFLOW_URL" in message


def test_carries_on_when_the_server_comes_back(
    backend: LmdbStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A call made while the server is down completes once it starts; one warning each way."""
    port = _free_port()
    store = RemoteStore(f"http://127.0.0.1:{port}", give_up_after=20)
    backend.register_agents([AGENT])
    results: list[Any] = []

    def call() -> None:
        try:
            results.append(store.emit("doc.x", {"a": 1}))
        except BaseException as exc:  # kept for the assertion, not raised in the thread
            results.append(exc)

    with caplog.at_level(logging.WARNING, "ironflow.remote"):
        caller = threading.Thread(target=call)
        caller.start()
        try:
            wait_until(lambda: caplog.records, what="the call to meet the closed port")
            with BackgroundServer(backend, port=port):
                # Its retries back off to 2 s; the join bound is only for a hung call.
                caller.join(timeout=30)
                assert not caller.is_alive(), "the call did not complete once the server was up"
        finally:
            store.close()  # a call still retrying gives up now
            caller.join(timeout=30)
        assert results and not isinstance(results[0], BaseException), results
        assert results[0].created and len(results[0].run_ids) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "unreachable" in messages[0] and "reachable again" in messages[1]
    assert backend.get_run(results[0].run_ids[0]).event.data == {"a": 1}


class _LoseReplies:
    """Make the next request to a path reach the server but lose its reply."""

    def __init__(self, store: RemoteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real = store._send

        def send(method: str, path: str, payload: bytes | None, timeout: float) -> Any:
            reply = real(method, path, payload, timeout)
            for fragment in self.paths:
                if fragment in path:
                    self.paths.remove(fragment)
                    raise ConnectionResetError("reply lost (test)")
            return reply

        monkeypatch.setattr(store, "_send", send)


def test_retries_after_lost_replies_do_nothing_twice(
    remote: RemoteStore, backend: LmdbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request repeated after its reply was lost never emits, leases or records twice."""
    lose = _LoseReplies(remote, monkeypatch)
    remote.register_agents([AGENT])

    lose.paths.append("/events")
    emitted = remote.emit("doc.x", {})
    assert emitted.created and len(backend.list_runs()) == 1
    run_id = emitted.run_ids[0]

    lose.paths.append("/store/leases")
    [leased] = remote.lease_runs(WORKER, ["doc"], limit=5, ttl=30)
    assert leased.run.id == run_id and leased.run.attempt == 1
    # Handed out once: a later lease does not give the worker its own run again.
    lose.paths.append("/store/leases")
    assert remote.lease_runs(WORKER, ["doc"], limit=5, ttl=30) == []

    lose.paths.append("/steps")
    remote.record_step(WORKER, step(run_id, 0, "first"))
    assert [s.output for s in backend.get_steps(run_id)] == ["first"]

    lose.paths.append("/release")
    remote.release_run(WORKER, run_id, attempt=1)
    assert backend.get_run(run_id).status == "pending"

    [leased] = remote.lease_runs(WORKER, ["doc"], limit=5, ttl=30)
    lose.paths.append("/finish")
    finished = remote.finish_run(WORKER, run_id, status="completed", output=1, attempt=2)
    assert finished.status == "completed" and finished.output == 1


def test_a_finish_and_lease_retried_after_a_lost_reply_hands_over_its_runs(
    remote: RemoteStore, backend: LmdbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lost reply finished the run and leased the next: the retry, refused (the run
    is finished), hands over the run that transaction leased, once."""
    lose = _LoseReplies(remote, monkeypatch)
    remote.register_agents([AGENT])
    first, second = (remote.emit("doc.x", {"i": i}).run_ids[0] for i in range(2))
    [leased] = remote.lease_runs(WORKER, ["doc"], limit=1, ttl=30)
    assert leased.run.id == first
    lose.paths.append("/finish-and-lease")
    [following] = remote.finish_and_lease(
        WORKER, first, status="completed", output=1, attempt=1, agents=["doc"], limit=1, ttl=30
    )
    assert following.run.id == second and following.run.attempt == 1
    assert backend.get_run(first).status == "completed"
    # Handed out once: a later lease does not give the worker its own run again.
    lose.paths.append("/store/leases")
    assert remote.lease_runs(WORKER, ["doc"], limit=5, ttl=30) == []
    nothing = remote.finish_and_lease(
        WORKER, second, status="completed", attempt=1, agents=["doc"], limit=1, ttl=30
    )
    assert nothing == [] and backend.get_run(second).status == "completed"


def test_token(backend: LmdbStore) -> None:
    """A server with a token refuses a client without it (AuthError) and serves one with it."""
    with BackgroundServer(backend, token="s3cret") as url:
        with RemoteStore(url, token="wrong") as wrong, pytest.raises(AuthError, match="TOKEN"):
            wrong.list_runs()
        with RemoteStore(url, token="") as none, pytest.raises(AuthError):
            none.list_runs()
        with RemoteStore(url, token="s3cret") as right:
            assert right.list_runs() == []


def test_token_from_environment(backend: LmdbStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """RemoteStore sends IRONFLOW_TOKEN when no token is given."""
    monkeypatch.setenv("IRONFLOW_TOKEN", "from-env")
    with BackgroundServer(backend, token="from-env") as url, RemoteStore(url) as store:
        assert store.list_runs() == []


class _Watched:
    """A store that says when the server looked for ``worker``'s work and found none:
    from then on that lease request is parked at the server, waiting to be woken."""

    def __init__(self, inner: LmdbStore, worker: WorkerInfo) -> None:
        self._inner = inner
        self._worker = worker
        self.found_nothing = threading.Event()

    def lease_runs(self, worker: WorkerInfo, *args: Any, **kwargs: Any) -> Any:
        leased = self._inner.lease_runs(worker, *args, **kwargs)
        if worker == self._worker and not leased:
            self.found_nothing.set()
        return leased

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_long_poll_wakes_on_emit(backend: LmdbStore) -> None:
    """A lease parked at the server returns the run an emit creates, well before its wait ends."""
    watched = _Watched(backend, WORKER)
    with BackgroundServer(watched) as url, RemoteStore(url) as remote:  # type: ignore[arg-type]
        remote.register_agents([AGENT])
        waiting = RemoteStore(url, long_poll=30.0)  # the server's longest
        got: list[Any] = []
        thread = threading.Thread(
            target=lambda: got.extend(waiting.lease_runs(WORKER, ["doc"], limit=1, ttl=30))
        )
        thread.start()
        try:
            # The server looked, found nothing, and parked the request: not woken yet.
            assert watched.found_nothing.wait(30)
            time.sleep(0.1)
            assert thread.is_alive() and got == [], "the lease returned before any emit"
            run_id = remote.emit("doc.x", {}).run_ids[0]
            thread.join(timeout=20)  # well within the 30 s wait: the emit woke it
            assert not thread.is_alive()
            assert [r.run.id for r in got] == [run_id]
        finally:
            # Never leave it parked at a server about to stop.
            thread.join(timeout=60)
            waiting.close()


def test_records_round_trip_exactly(remote: RemoteStore, backend: LmdbStore) -> None:
    """Records read through the server equal the ones the LmdbStore holds, field by field."""
    remote.register_agents([AGENT])
    run_id = remote.emit("doc.x", {"nested": [1, 2.5, None, {"k": "ü"}]}).run_ids[0]
    remote.lease_runs(WORKER, ["doc"], limit=1, ttl=30)
    failed = attrs.evolve(
        step(run_id, 0),
        status="failed",
        output=None,
        error=ErrorInfo(type="ValueError", message="bad", traceback="tb", step_id="tool.s0"),
    )
    remote.record_step(WORKER, failed)
    assert remote.get_run(run_id) == backend.get_run(run_id)
    assert remote.get_steps(run_id) == backend.get_steps(run_id) == [failed]
    assert remote.get_lease(run_id) == backend.get_lease(run_id)


def test_a_run_lost_and_orphaned_comes_back_to_the_same_worker(
    remote: RemoteStore, backend: LmdbStore
) -> None:
    """A worker that lost a run to another can lease it again once that one's lease lapses."""
    remote.register_agents([AGENT])
    run_id = remote.emit("doc.x", {}).run_ids[0]
    assert [r.run.id for r in remote.lease_runs(WORKER, ["doc"], limit=1, ttl=0.05)] == [run_id]
    time.sleep(0.1)
    assert [r.run.id for r in backend.lease_runs(OTHER, ["doc"], limit=1, ttl=0.05)] == [run_id]
    with pytest.raises(LeaseLostError):
        remote.record_step(WORKER, step(run_id, 0))
    time.sleep(0.1)
    [again] = remote.lease_runs(WORKER, ["doc"], limit=1, ttl=30)
    assert again.run.id == run_id and again.run.attempt == 3


def test_a_token_that_cannot_be_a_header_is_a_config_error() -> None:
    """A token with a line break or space is refused up front, naming IRONFLOW_TOKEN."""
    for token in ("two words", "line\nbreak", "é"):
        with pytest.raises(ConfigError, match="IRONFLOW_TOKEN"):
            RemoteStore("http://127.0.0.1:1", token=token)


def test_a_stream_append_retried_after_a_lost_reply_appends_once(
    remote: RemoteStore, backend: LmdbStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append without an idempotency key of its own still appends once when retried."""
    lose = _LoseReplies(remote, monkeypatch)
    lose.paths.append("/store/streams/")
    event = remote.append_to_stream("orders-1", "order.placed", {"n": 1})
    assert event.version == 1
    assert [e.version for e in backend.read_stream("orders-1")] == [1]
