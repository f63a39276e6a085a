"""The Worker's lifecycle as a user drives it from Python."""

from __future__ import annotations

from typing import Any

import pytest

from ironflow import AgentContext, LmdbStore, Worker, WorkerStoppedError, agent


@agent(id="lifecycle-echo", triggers=["echo"])
def echo(ctx: AgentContext) -> Any:
    return ctx.event.data


def test_run_twice_raises_instead_of_leaving_runs_pending(store: LmdbStore) -> None:
    """A second Worker.run() says a worker serves once; a new Worker on the store serves."""
    worker = Worker([echo], store=store)
    worker.run(until_idle=True, ready_message=False)
    run_id = store.emit("echo", {"n": 1}).run_ids[0]
    with pytest.raises(WorkerStoppedError, match="new Worker") as caught:
        worker.run(until_idle=True, ready_message=False)
    assert isinstance(caught.value, RuntimeError)
    assert store.get_run(run_id).status == "pending"
    Worker([echo], store=worker.store).run(until_idle=True, ready_message=False)
    assert store.get_run(run_id).status == "completed"
