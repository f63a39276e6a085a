"""The soak's audit itself: it must catch what it claims to catch, or its PASS means nothing.

A small soak's data directory is made for real (three runs of the soak agent served to
the end by a worker in this process, with its projection, and the execution log its
tools write), the audit must pass it, and then each test plants one fault the audit
claims to catch, through the store's own API, and checks the audit names it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ironflow import Worker
from ironflow._agent._memory import ProjectionDefinition
from ironflow._worker._identity import this_worker
from ironflow._worker._projections import ProjectionRunner
from ironflow.store import AgentSpec, LmdbStore, StepRecord
from ironflow.store._records import ProjectionWrite
from tests.helpers import serve_until_idle_or_crash
from tests.soak import soak_agent
from tests.soak.harness import EVENT, Report, Soak

RUNS = 3


def soak(tmp_path: Path) -> Soak:
    return Soak(seconds=0, root=tmp_path, log=lambda _: None)


def write_log(s: Soak, pid: int, *lines: bytes) -> None:
    with open(s.exec_dir / f"exec-{pid}.log", "ab") as f:
        for line in lines:
            f.write(line)


@pytest.fixture
def soaked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Soak]:
    """A soak's data directory as it should be after a soak: every run served to its end."""
    s = soak(tmp_path)
    monkeypatch.setenv("IRONFLOW_SOAK_LOG_DIR", str(s.exec_dir))
    monkeypatch.setenv("IRONFLOW_SOAK_TOOL_SLEEP", "0.005")
    monkeypatch.setattr(soak_agent, "_fd", None)  # the log file of this directory
    store = LmdbStore(s.data_dir, sync=False)
    try:
        worker = Worker(
            [soak_agent.soak],
            projections=[soak_agent.soak_count],
            store=store,
            concurrency=2,
            lease_ttl=60,
        )
        for n in range(RUNS):
            event_id = f"soak-{n:07d}"
            s.emitted[event_id] = store.emit(EVENT, {"n": n}, id=event_id).run_ids
        serve_until_idle_or_crash(worker)
    finally:
        store.close()
        if soak_agent._fd is not None:
            os.close(soak_agent._fd)
    yield s


def audited(s: Soak) -> Report:
    s.audit()
    return s.report


def planted(s: Soak) -> LmdbStore:
    """The soak's data directory, to plant a fault in (close it before auditing)."""
    return LmdbStore(s.data_dir, sync=False)


def caught(report: Report, *phrases: str) -> None:
    for phrase in phrases:
        assert any(phrase in p for p in report.problems), (
            f"the audit missed the planted fault ({phrase!r}): {report.problems}"
        )


def catch_up(store: LmdbStore) -> None:
    """Fold what the planted fault appended, as the soak's projection worker would."""
    defn = ProjectionDefinition.must_from_fn(soak_agent.soak_count)
    ProjectionRunner(store, defn, this_worker("audit-runner"), ttl=60).catch_up()


def a_run_by_hand(
    s: Soak,
    store: LmdbStore,
    steps: list[tuple[int, str]],
    *,
    append: bool = True,
) -> str:
    """A soak run whose steps are recorded by hand (leased, recorded, finished through the
    store), each tool step with a logged execution that its record names."""
    event_id = f"soak-by-hand-{len(s.emitted)}"
    s.emitted[event_id] = store.emit(EVENT, {"n": 100}, id=event_id).run_ids
    run_id = s.emitted[event_id][0]
    me = this_worker("by-hand")
    [leased] = store.lease_runs(me, ["soak"], limit=1, ttl=60)
    assert leased.run.id == run_id
    pid = os.getpid()
    for position, step_id in steps:
        nonce = f"hand{position}"
        now = time.time()
        if step_id.startswith("tool."):
            write_log(s, pid, f"X {run_id} {step_id} {pid} {nonce} {now:.6f} .\n".encode())
        if step_id == "memory.append" and append:
            store.append_to_stream(
                soak_agent.STREAM,
                "soak.done",
                {"run": run_id, "n": 100, "score": 0},
                idempotency_key=f"{run_id}/{step_id}",
            )
        output = {"value": 0, "exec": {"pid": pid, "nonce": nonce}}
        record = StepRecord(
            run_id, position, step_id, "completed", {}, output, now, now + 0.001, attempt=1
        )
        store.record_step(me, record)
    store.finish_run(me, run_id, status="completed", output={}, attempt=leased.run.attempt)
    catch_up(store)
    return run_id


def test_a_clean_soak_passes(soaked: Soak) -> None:
    """The unplanted directory: no problem, every figure as the runs made it."""
    report = audited(soaked)
    assert report.problems == []
    assert (report.events, report.runs, report.completed) == (RUNS, RUNS, RUNS)
    assert report.steps_recorded == RUNS * len(soak_agent.STEP_IDS)
    assert report.tool_executions == RUNS * len(soak_agent.TOOL_STEPS)
    assert report.stream_events == RUNS
    assert report.torn_lines == report.missing_partitions == report.projection_mismatches == 0


def test_a_run_done_by_hand_passes_too(soaked: Soak) -> None:
    """The planting helper itself makes a run the audit accepts: a fault is what is planted."""
    with planted(soaked) as store:
        a_run_by_hand(soaked, store, list(enumerate(soak_agent.STEP_IDS)))
    assert audited(soaked).problems == []


def test_a_lost_run_is_caught(soaked: Soak) -> None:
    """An emit that was answered, but whose event started no run."""
    with planted(soaked) as store:
        soaked.emitted["soak-lost"] = store.emit("soak.nobody", {}, id="soak-lost").run_ids
    report = audited(soaked)
    caught(report, "event soak-lost has no run")
    assert report.lost_runs == 1


def test_a_duplicated_run_is_caught(soaked: Soak) -> None:
    """One event, two runs (a second agent listening to it)."""
    with planted(soaked) as store:
        store.register_agents([AgentSpec(id="soak-twin", triggers=(EVENT,))])
        soaked.emitted["soak-twice"] = store.emit(EVENT, {"n": 7}, id="soak-twice").run_ids
    report = audited(soaked)
    caught(report, "event soak-twice has 2 runs")
    assert report.duplicate_runs == 1


def test_a_run_for_an_event_never_emitted_is_caught(soaked: Soak) -> None:
    """A run whose event the emitter never sent."""
    with planted(soaked) as store:
        store.emit(EVENT, {"n": 8}, id="soak-ghost")
    caught(audited(soaked), "for an event never emitted")


def test_an_emit_answered_with_another_run_is_caught(soaked: Soak) -> None:
    """The store holds another run for the event than the emit answered with."""
    soaked.emitted["soak-0000000"] = ("run_not_this_one",)
    caught(audited(soaked), "emit answered ('run_not_this_one',)")


def test_a_run_that_did_not_complete_is_caught(soaked: Soak) -> None:
    """A run left pending when the soak ended."""
    with planted(soaked) as store:
        soaked.emitted["soak-idle"] = store.emit(EVENT, {"n": 9}, id="soak-idle").run_ids
    caught(audited(soaked), "ended pending")


def test_a_wrong_step_id_is_caught(soaked: Soak) -> None:
    """A run whose steps differ from the agent's at one position."""
    steps = list(enumerate(soak_agent.STEP_IDS))
    steps[2] = (2, "tool.rescore")
    with planted(soaked) as store:
        a_run_by_hand(soaked, store, steps)
    report = audited(soaked)
    caught(report, "'tool.rescore'")
    assert (report.lost_steps, report.duplicate_steps) == (1, 1)


def test_a_wrong_step_position_is_caught(soaked: Soak) -> None:
    """A run whose records skip a position."""
    steps = [(p if p < 5 else p + 1, step_id) for p, step_id in enumerate(soak_agent.STEP_IDS)]
    with planted(soaked) as store:
        a_run_by_hand(soaked, store, steps)
    caught(audited(soaked), "step positions [0, 1, 2, 3, 4, 6]")


def test_a_missing_step_is_caught(soaked: Soak) -> None:
    """A run that completed with a step never recorded."""
    with planted(soaked) as store:
        a_run_by_hand(soaked, store, list(enumerate(soak_agent.STEP_IDS[:-1])))
    report = audited(soaked)
    caught(report, "expected")
    assert report.lost_steps == 1


def test_a_stray_execution_is_caught(soaked: Soak) -> None:
    """An execution of a step the run never recorded."""
    run_id = soaked.emitted["soak-0000001"][0]
    pid = os.getpid()
    write_log(soaked, pid, f"X {run_id} tool.fetch#2 {pid} stray 99.0 .\n".encode())
    caught(audited(soaked), f"1 execution(s) of {run_id} tool.fetch#2, which has no record")


def test_a_lost_stream_event_is_caught_and_the_projection_counted_apart(soaked: Soak) -> None:
    """A run whose memory append reached no stream: the stream lacks it, and the projection,
    though it agrees with the stream, lacks the run too."""
    with planted(soaked) as store:
        run_id = a_run_by_hand(soaked, store, list(enumerate(soak_agent.STEP_IDS)), append=False)
    report = audited(soaked)
    caught(report, "1 runs without their event", "1 run(s) without a partition")
    assert (report.lost_stream_events, report.missing_partitions) == (1, 1)
    assert not any("fresh fold" in p for p in report.problems), "the fold agrees: no mismatch"
    assert run_id in next(p for p in report.problems if "without a partition" in p)


def test_a_duplicated_stream_event_is_caught(soaked: Soak) -> None:
    """A run's memory event appended twice (and folded twice)."""
    run_id = soaked.emitted["soak-0000002"][0]
    with planted(soaked) as store:
        store.append_to_stream(soak_agent.STREAM, "soak.done", {"run": run_id, "n": 2, "score": 0})
        catch_up(store)
    report = audited(soaked)
    caught(report, "1 events too many", "counts per run {1: 2, 2: 1}")
    assert report.duplicate_stream_events == 1


def test_a_gap_in_the_stream_versions_is_caught(soaked: Soak) -> None:
    """A stream event taken out of the middle (version 2 of 3): the versions have a gap."""
    with planted(soaked) as store:
        assert store.delete_stream_events(soak_agent.STREAM, versions=[2]) == 1
    caught(audited(soaked), "versions not 1..2 without a gap (missing [2]")


def test_a_projection_mismatch_is_caught(soaked: Soak) -> None:
    """A projection whose stored state is not the fold of the stream."""
    run_id = soaked.emitted["soak-0000000"][0]
    with planted(soaked) as store:
        name = soak_agent.PROJECTION
        me = this_worker("planter")
        assert store.lease_projection(me, name, ttl=60)
        at = store.projection_status(name).position
        wrong = {run_id: {"count": 1, "n": 12345}}
        store.write_projection(me, ProjectionWrite(name, at, at, partitions=wrong))
    report = audited(soaked)
    caught(report, "differs from a fresh fold of the stream in 1 partition(s)")
    assert report.projection_mismatches == 1


def test_a_missing_partition_is_caught(soaked: Soak) -> None:
    """A projection rebuilt without one run's partition, its stream event still there."""
    dropped = soaked.emitted["soak-0000001"][0]
    with planted(soaked) as store:
        name = soak_agent.PROJECTION
        me = this_worker("planter")
        assert store.lease_projection(me, name, ttl=60)
        ticket = store.request_projection_rebuild(name)
        status = store.projection_status(name)
        kept = {k: v for k, v in store.get_projection(name).state.items() if k != dropped}
        write = ProjectionWrite(
            name, status.position, status.position, partitions=kept, rebuild_ticket=ticket
        )
        store.write_projection(me, write)
    report = audited(soaked)
    caught(report, "1 run(s) without a partition", "differs from a fresh fold")
    assert report.missing_partitions == 1


def test_a_torn_last_line_of_a_killed_process_is_ignored_and_counted(tmp_path: Path) -> None:
    """A line cut short by kill -9 (no trailing ' .') neither counts nor breaks parsing."""
    s = soak(tmp_path)
    s.killed_pids.add(11)
    write_log(s, 11, b"X run_a tool.fetch 11 aaa 99.5 .\n", b"X run_a tool.fetch 11 bb")
    assert s.executions() == {("run_a", "tool.fetch"): [(11, "aaa", 99.5)]}
    assert s.report.torn_lines == 1
    assert s.report.problems == []


def test_a_torn_line_of_a_process_never_killed_is_caught(tmp_path: Path) -> None:
    """Only kill -9 may cut a line short: a live process's torn line is a problem."""
    s = soak(tmp_path)
    write_log(s, 12, b"X run_a tool.fetch 12 aaa 99.5 .\n", b"X run_a tool.fetch 12 bb")
    s.executions()
    caught(s.report, "a torn line from process 12, which was never killed")


def test_a_torn_line_before_the_end_is_caught(tmp_path: Path) -> None:
    """A killed process tears at most its last line: one in the middle is a problem."""
    s = soak(tmp_path)
    s.killed_pids.add(11)
    write_log(s, 11, b"X run_a tool.fetch 11 bb\n", b"X run_a tool.fetch 11 aaa 99.5 .\n")
    s.executions()
    caught(s.report, "a torn line before the end of the log")


def step(nonce: str, ended_at: float = 100.0) -> StepRecord:
    output = {"value": 1, "exec": {"pid": 1, "nonce": nonce}}
    return StepRecord("run_a", 0, "tool.fetch", "completed", {}, output, 99.0, ended_at)


def audit_step(s: Soak, record: StepRecord) -> Report:
    found = s.executions().get(("run_a", "tool.fetch"), [])
    s._audit_step(s.report, "run_a", record, found)
    return s.report


def test_a_rerun_in_a_killed_process_is_allowed_and_counted(tmp_path: Path) -> None:
    """The in-flight execution of a killed worker plus the recorded one: passes, 1 extra."""
    s = soak(tmp_path)
    s.killed_pids.add(11)
    write_log(s, 11, b"X run_a tool.fetch 11 aaa 99.1 .\n")
    write_log(s, 12, b"X run_a tool.fetch 12 bbb 99.5 .\n")
    report = audit_step(s, step("bbb"))
    assert report.problems == []
    assert (report.steps_reexecuted, report.extra_executions) == (1, 1)


def test_a_rerun_by_a_live_process_is_caught(tmp_path: Path) -> None:
    """A second execution by a worker that was never killed is a completed step run again."""
    s = soak(tmp_path)
    write_log(s, 12, b"X run_a tool.fetch 12 aaa 99.1 .\n", b"X run_a tool.fetch 12 bbb 99.5 .\n")
    caught(audit_step(s, step("bbb")), "never killed", "more than once")


def test_an_execution_after_the_record_is_caught(tmp_path: Path) -> None:
    """An execution that started after the step was recorded ran a completed step again."""
    s = soak(tmp_path)
    s.killed_pids.add(11)
    write_log(s, 11, b"X run_a tool.fetch 11 aaa 100.5 .\n")
    write_log(s, 12, b"X run_a tool.fetch 12 bbb 99.5 .\n")
    caught(audit_step(s, step("bbb")), "after it was recorded")


def test_a_record_no_execution_produced_is_caught(tmp_path: Path) -> None:
    """A recorded output whose execution was never logged means the audit lost track."""
    s = soak(tmp_path)
    write_log(s, 12, b"X run_a tool.fetch 12 aaa 99.5 .\n")
    caught(audit_step(s, step("zzz")), "no logged execution")
    assert os.listdir(s.exec_dir) == ["exec-12.log"]
