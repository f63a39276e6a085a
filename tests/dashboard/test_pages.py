"""What the agents, workers and memory pages read: their JSON, from a real server."""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ironflow.server import BackgroundServer
from ironflow.store import AgentSpec, LmdbStore, WorkerInfo
from ironflow.store._flowspec import ConcurrencyLimit, CronTrigger, FlowSpec

WORKER = WorkerInfo(id="w-dash", host="here", pid=os.getpid())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, LmdbStore]]:
    store = LmdbStore(tmp_path / "data", sync=False)
    with BackgroundServer(store) as url:
        yield url, store
    store.close()


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def test_agents_show_their_next_cron_fire_and_queued_runs_per_key(
    served: tuple[str, LmdbStore],
) -> None:
    """A cron agent's next fire is the schedule's next tick; runs waiting for a
    concurrency slot are counted per key; the worker holding a run is listed."""
    url, store = served
    flow = FlowSpec(
        concurrency=ConcurrencyLimit(limit=1, key="data.customer"),
        crons=(CronTrigger(cron="0 9 * * *", timezone="UTC"),),
    )
    store.register_agents([AgentSpec("billing", ("invoice.due",), flow=flow)])
    store.emit("invoice.due", {"customer": "c1"})
    (held,) = store.lease_runs(WORKER, ["billing"], limit=10, ttl=60)
    for _ in range(2):
        store.emit("invoice.due", {"customer": "c1"})
    store.emit("invoice.due", {"customer": "c2"})

    (agent,) = get(url + "/ui/api/agents")["agents"]
    assert agent["concurrency"] == {"limit": 1, "key": "data.customer"}
    assert agent["queued"] == [{"key": '"c1"', "runs": 2}]
    (cron,) = agent["crons"]
    fire = dt.datetime.fromisoformat(cron["next_fire"].replace("Z", "+00:00"))
    now = dt.datetime.now(dt.UTC)
    assert (fire.hour, fire.minute) == (9, 0) and now < fire <= now + dt.timedelta(days=1)

    (worker,) = get(url + "/ui/api/workers")["workers"]
    assert (worker["id"], worker["host"], worker["pid"]) == ("w-dash", "here", os.getpid())
    assert worker["runs"] == [held.run.id]


def test_memory_shows_streams_and_a_projection_rebuild_request(
    served: tuple[str, LmdbStore],
) -> None:
    """Entity streams list with their version and events; a projection lists its lag."""
    url, store = served
    from ironflow.store._records import ProjectionSpec

    store.register_projections([ProjectionSpec(name="totals", events=("paid",))])
    store.append_to_stream("order-1", "paid", {"amount": 3})
    store.append_to_stream("order-1", "paid", {"amount": 4})
    streams = get(url + "/ui/api/streams")["streams"]
    assert streams == [{"id": "order-1", "version": 2}]
    events = get(url + "/ui/api/streams/order-1")["events"]
    assert [(e["version"], e["data"]) for e in events] == [(1, {"amount": 3}), (2, {"amount": 4})]
    (projection,) = get(url + "/ui/api/projections")["projections"]
    assert projection["position"] == 0 and projection["lag"] == 2
    assert projection["runner_alive"] is False


def test_the_rebuild_button_requests_a_rebuild_like_the_cli(
    served: tuple[str, LmdbStore],
) -> None:
    """POST .../rebuild with the page's CSRF header takes a rebuild ticket, as
    `ironflow projection rebuild` does; the projection then shows a rebuild pending."""
    url, store = served
    from ironflow.store._records import ProjectionSpec

    store.register_projections([ProjectionSpec(name="totals", events=("paid",))])
    csrf = get(url + "/ui/api/session")["csrf"]
    request = urllib.request.Request(
        url + "/ui/api/projections/totals/rebuild",
        data=b"{}",
        method="POST",
        headers={"X-Ironflow-CSRF": csrf, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        ticket = json.load(response)["ticket"]
    assert ticket == store.projection_status("totals").rebuild_requested
    (projection,) = get(url + "/ui/api/projections")["projections"]
    assert projection["rebuild_pending"] is True


def test_an_idle_worker_asking_this_server_for_runs_is_listed(
    served: tuple[str, LmdbStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker through IRONFLOW_URL that holds nothing is listed, idle, with its agents
    (it was not listed at all); one that stopped asking drops out after the window."""
    from ironflow.server import _app
    from ironflow.store import RemoteStore

    url, store = served
    store.register_agents([AgentSpec("billing", ("invoice.due",))])
    idle = WorkerInfo(id="w-idle", host="here", pid=os.getpid())
    with RemoteStore(url, long_poll=0.0) as remote:
        assert remote.lease_runs(idle, ["billing"], limit=1, ttl=60) == []
    (worker,) = get(url + "/ui/api/workers")["workers"]
    assert (worker["id"], worker["agents"], worker["runs"]) == ("w-idle", ["billing"], [])
    assert worker["polling_here"] is True and worker["expires_at"] is None
    monkeypatch.setattr(_app, "POLLER_WINDOW", 0.0)
    assert get(url + "/ui/api/workers")["workers"] == []
