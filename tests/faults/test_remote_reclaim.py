"""A lease retried across a server restart must not hand back a run the worker just finished.

Found by the soak in server mode: the retried lease's reclaim list was computed while a
run was still running; the worker finished it before the reply arrived, and took it
again as if it had been leased by the lost reply, running its last step a second time.
"""

from __future__ import annotations

import time
from typing import Any

from ironflow._worker._identity import this_worker
from ironflow.store import Event, Lease, LeasedRun, RemoteStore, Run
from ironflow.store._codec import converter
from ironflow.store._remotecalls import _Reply

ME = this_worker("reclaim-test")


def leased(run_id: str) -> LeasedRun:
    now = time.time()
    event = Event(id="evt_1", name="go", data={}, ts=now, seq=1)
    run = Run(run_id, "a", "running", event, now, now, attempt=1)
    return LeasedRun(run=run, steps=(), lease=Lease(run_id, ME, now + 30))


def test_a_run_finished_during_a_retried_lease_is_not_taken_again() -> None:
    """Reclaimed: one run finished meanwhile (dropped) and one the lost reply leased (kept)."""
    store = RemoteStore("http://127.0.0.1:9", give_up_after=1.0)
    store._held.add((ME.id, "run_done"))

    def request(*args: Any, **kwargs: Any) -> _Reply:
        store._forget(ME, "run_done")  # the executing thread finished it meanwhile
        reclaimed = converter.unstructure([leased("run_done"), leased("run_lost_reply")])
        return _Reply(200, {"runs": [], "reclaimed": reclaimed}, retried=True)

    store._request = request  # type: ignore[method-assign]
    got = store.lease_runs(ME, ["a"], limit=4, ttl=30)
    assert [r.run.id for r in got] == ["run_lost_reply"]
    assert (ME.id, "run_lost_reply") in store._held
    assert (ME.id, "run_done") not in store._held
    store.close()
