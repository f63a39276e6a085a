"""A live worker that lost its lease and runs on: frozen past its TTL, then thawed.

A real worker (``python -m ironflow.run worker tests.process.agents_lost_lease``) is
stopped with SIGSTOP in the middle of a step, and stays stopped past its lease TTL: alive,
so no dead-pid takeover, but silent, so no heartbeat. A second worker takes the run
over once the lease lapses and runs it on. Then the first gets SIGCONT and finishes the
step it was in. From the side-effect log and the store: it runs no further step, records
nothing, finishes nothing, and the run completes once, by the second worker.

This is the path of ``LeaseLostError`` in the engine (stop, write nothing more) and of
the store's fencing (a write by a worker that no longer holds the run is refused).
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from ironflow import LmdbStore
from tests.process._workers import WAIT, Workers, finished, wait_for

pytestmark = pytest.mark.process

MODULE = "tests.process.agents_lost_lease"
#: Short, so the takeover comes soon after the freeze; long enough that a live worker's
#: heartbeat (every TTL/3) keeps it on a loaded machine.
LEASE_TTL = 2.0
STEP_IDS = ["tool.take", "tool.hold", "tool.extend", "tool.publish"]


@attrs.frozen
class Line:
    """One line of the side-effect log: a tool's body ran (``run``), or began/ended."""

    what: str
    run_id: str
    step_id: str
    attempt: int
    pid: int


def executed(workers: Workers) -> list[Line]:
    lines = []
    for text in workers.log.read_text().splitlines():
        what, run_id, step_id, attempt, pid = text.split(" ")
        lines.append(Line(what, run_id, step_id, int(attempt), int(pid)))
    return lines


@pytest.fixture
def racing(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path, MODULE, lease_ttl=LEASE_TTL, concurrency=1)
    try:
        yield w
    finally:
        w.close()  # SIGKILL ends a stopped process too


def stop_and_reap(proc: subprocess.Popen[bytes], workers: Workers) -> None:
    """SIGTERM (a drain) and wait: a worker exits 0 after it."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=WAIT) == 0, workers.describe()


@pytest.mark.parametrize(
    "second_still_running",
    [False, True],
    ids=["thawed-after-the-run-completed", "thawed-while-the-new-holder-runs-it"],
)
def test_a_worker_frozen_past_its_lease_runs_records_and_finishes_nothing_more(
    racing: Workers, tmp_path: Path, second_still_running: bool
) -> None:
    """SIGSTOP mid-step past the TTL, takeover, SIGCONT: the old worker stops where it was."""
    first = racing.start()
    store = LmdbStore(racing.data_dir)
    try:
        run_id = store.emit("lease.race", {"doc": "d1"}).run_ids[0]
        frozen_in = Line("start", run_id, "tool.hold", 1, first.pid)
        wait_for(lambda: frozen_in in executed(racing), "tool.hold to start", racing.describe)
        first.send_signal(signal.SIGSTOP)  # inside tool.hold, at its gate: a step in flight
        try:
            # The second worker's own execution of tool.hold waits at gate2, if set.
            gate2 = tmp_path / "second.gate"
            env = {"IRONFLOW_TEST_GATE2": str(gate2)} if second_still_running else {}
            second = racing.start(**env)
            if second_still_running:
                took_over = Line("start", run_id, "tool.hold", 2, second.pid)
                wait_for(lambda: took_over in executed(racing), "the takeover", racing.describe)
            else:
                wait_for(
                    lambda: finished(store, run_id), "the taken-over run to end", racing.describe
                )
            run_before, steps_before = store.get_run(run_id), store.get_steps(run_id)
            lease_before = store.get_lease(run_id)
            lines_before = executed(racing)
            if second_still_running:
                assert lease_before is not None and lease_before.worker.pid == second.pid
                assert [s.position for s in steps_before] == [0]
            else:
                assert lease_before is None and run_before.status == "completed"
            racing.gate.touch()
        finally:
            first.send_signal(signal.SIGCONT)

        # The thawed worker finishes the step it was in, tries to record it, and stops.
        # (Its heartbeat may say "lease lost" first; the outcome line comes after the step.)
        settled = re.compile(
            rf"run {run_id}: (another worker took it over|completed|failed|handed back|stopped)"
        )
        wait_for(
            lambda: settled.search(racing.stderr(first)),
            "the thawed worker to settle the run",
            racing.describe,
        )
        after_thaw = executed(racing)[len(lines_before) :]
        assert after_thaw == [Line("end", run_id, "tool.hold", 1, first.pid)], (
            f"the thawed worker ran on: {after_thaw}\n{racing.describe()}"
        )
        assert "another worker took it over" in racing.stderr(first), racing.describe()
        assert store.get_run(run_id) == run_before, "the thawed worker wrote the run"
        assert store.get_steps(run_id) == steps_before, "the thawed worker recorded a step"
        lease_after = store.get_lease(run_id)
        if lease_before is None:
            assert lease_after is None
        else:
            assert lease_after is not None
            # The new holder's heartbeat moves the expiry; nothing else may change.
            assert (lease_after.worker, lease_after.attempt) == (
                lease_before.worker,
                lease_before.attempt,
            )

        if second_still_running:
            gate2.touch()
            wait_for(lambda: finished(store, run_id), "the run to end", racing.describe)
        stop_and_reap(first, racing)
        stop_and_reap(second, racing)

        # The run completed once, by the second worker, from its own attempt.
        [run] = store.list_runs(limit=10, agent="lease-race")
        assert run.id == run_id and run.status == "completed", racing.describe()
        assert run.attempt == 2
        assert run.output == {"receipt": {"published": "<D1>!"}, "finished_by": second.pid}
        steps = store.get_steps(run_id)
        assert [(s.position, s.id, s.attempt) for s in steps] == [
            (0, "tool.take", 1),
            (1, "tool.hold", 2),
            (2, "tool.extend", 2),
            (3, "tool.publish", 2),
        ]
        assert store.get_lease(run_id) is None
        by = {
            pid: [(x.what, x.step_id) for x in executed(racing) if x.pid == pid]
            for pid in (first.pid, second.pid)
        }
        assert by[first.pid] == [
            ("run", "tool.take"),
            ("start", "tool.hold"),
            ("end", "tool.hold"),
        ]
        assert by[second.pid] == [
            ("start", "tool.hold"),
            ("end", "tool.hold"),
            ("run", "tool.extend"),
            ("run", "tool.publish"),
        ]
        store.check_valid()
    finally:
        store.close()
