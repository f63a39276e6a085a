"""Runs made from other runs' records: a fork of a run, and a history imported.

Both write new runs whose step records are copies, in one transaction, and leave the
runs they copy untouched (a fork adds its id to the original's ``forks``, and that is
all): the same rules for every backend, as the rest of the state machine.
"""

from __future__ import annotations

from typing import Any

import attrs

from ironflow._pure._ids import new_id
from ironflow.errors import InvalidInputError
from ironflow.store._backend import WriteTxn
from ironflow.store._codec import decode_record, encode_record
from ironflow.store._flowctl import FlowControl, spec_of
from ironflow.store._history import History, spawned_children
from ironflow.store._keys import step_key, stream_key
from ironflow.store._records import FINISHED, AgentSpec, Fork, Run, StepRecord
from ironflow.store._runs import STEPS, last_seq, position_of, run_in, steps_of
from ironflow.store._streams import append

__all__ = ["fork", "import_history"]


def fork(
    txn: WriteTxn,
    flow: FlowControl,
    run_id: str,
    from_step: str,
    data: Any,
    now: float,
    fork_id: str,
) -> Run:
    """A new run ``fork_id`` of the same agent holding copies of ``run_id``'s records
    before ``from_step``, with the event's data replaced by ``data`` unless it is None.
    A ``fork_id`` that is already this fork returns it (a retried request).

    The original keeps its records, status and times; only its ``forks`` gains the new
    id. The fork's event is not in the log (no trigger fires for it) and keeps the
    original's log position, so the waits it reaches take the events the original's
    would have. Its copied spawn steps name the original's children, which it shares
    (cancelling the fork does not cancel them).
    """
    existing = txn.get("runs", fork_id.encode())
    if existing is not None:
        done = decode_record(existing, Run)
        if done.forked_from is not None and (
            done.forked_from.run_id,
            done.forked_from.from_step,
        ) == (run_id, from_step):
            return done
        raise InvalidInputError(f"a run with id {fork_id} exists already; fork with another id")
    source = run_in(txn, run_id)
    steps = steps_of(txn, run_id)
    position = position_of(source, steps, from_step)
    raw_spec = txn.get("agents", source.agent.encode())
    spec = spec_of(raw_spec) if raw_spec is not None else AgentSpec(source.agent, ())
    event = attrs.evolve(
        source.event,
        id=new_id("evt_"),
        data=source.event.data if data is None else data,
        ts=now,
        stream=None,
        version=0,
    )
    # A fork is a run of its own, never folded into a debounced burst.
    flow.new_run(txn, spec, event, now, fold=False, run_id=fork_id)
    forked = attrs.evolve(
        run_in(txn, fork_id), forked_from=Fork(source.id, from_step, position, now)
    )
    txn.put("runs", fork_id.encode(), encode_record(forked))
    for step in steps:
        if step.position < position:
            copy = attrs.evolve(step, run_id=fork_id)
            txn.put("steps", step_key(fork_id, step.position), STEPS.encode(copy))
    source = attrs.evolve(source, forks=(*source.forks, fork_id))
    txn.put("runs", source.id.encode(), encode_record(source))
    return forked


def import_history(
    txn: WriteTxn,
    flow: FlowControl,
    history: History,
    new_ids: bool,
    now: float,
    clock_now: float,
) -> Run:
    """Write the history's runs, their step records and child links; return the top run.

    Under the ids they had, or with ``new_ids`` under new ones (their events' too; a
    spawn step's output names the child's new id). A finished run keeps its status; an
    unfinished one is imported ``paused``, so no worker takes it up before ``run
    resume``. The memory
    events each run appended go onto their streams again, each once (keyed by the run
    and its step, as ``ctx.memory.append`` keys them), entering the log as any append
    does; the ``memory.append`` records keep the versions of the store they came from.
    A run id already in this store refuses the whole import.
    """
    tree = list(history.walk())
    ids = {h.run.id: new_id("run_") if new_ids else h.run.id for h in tree}
    for h in tree:
        if txn.get("runs", ids[h.run.id].encode()) is not None:
            raise InvalidInputError(
                f"run {ids[h.run.id]} is already in this store; import the history under "
                "new run ids (ironflow run import FILE --new-id)"
            )
    seq = last_seq(txn)
    for h in tree:
        _import_run(txn, flow, h, ids, seq, now, clock_now)
    return run_in(txn, ids[history.run.id])


def _import_run(
    txn: WriteTxn,
    flow: FlowControl,
    h: History,
    ids: dict[str, str],
    seq: int,
    now: float,
    clock_now: float,
) -> None:
    src = h.run
    rid = ids[src.id]
    finished = src.status in FINISHED
    run = attrs.evolve(
        src,
        id=rid,
        # A parent left out of the history is not in this store: the run stands alone.
        parent_id=ids.get(src.parent_id) if src.parent_id is not None else None,
        # Not in this store's log: its position is the log's end now, as for a spawn. A
        # copy under new ids gets a new event id too.
        event=attrs.evolve(
            src.event,
            id=src.event.id if rid == src.id else new_id("evt_"),
            seq=seq,
            stream=None,
            version=0,
        ),
        status=src.status if finished else "paused",
        suspension=src.suspension if finished else None,
        cancel_requested=src.cancel_requested if finished else False,
        concurrency_key=None,
        forks=tuple(ids[f] for f in src.forks if f in ids),
    )
    key = rid.encode()
    txn.put("runs", key, encode_record(run))
    if not finished:
        txn.put("paused", key, b"")
    for step in h.steps:
        txn.put("steps", step_key(rid, step.position), STEPS.encode(_moved(step, rid, ids)))
    for child in spawned_children(h.steps):
        if child["id"] in ids:
            txn.put("spawns", key + b"\x00" + child["step"].encode(), ids[child["id"]].encode())
    appends = {
        (s.output.get("stream"), s.output.get("version")): s
        for s in h.steps
        if s.id.split("#", 1)[0] == "memory.append" and isinstance(s.output, dict)
    }
    for event in h.memory:
        made_by = appends.get((event.stream, event.version))
        if event.stream is None or made_by is None:
            continue
        idem = stream_key(event.stream) + b"\x00" + f"{rid}/{made_by.id}".encode()
        append(txn, flow, event.stream, event.name, event.data, idem, None, now, clock_now)


def _moved(step: StepRecord, rid: str, ids: dict[str, str]) -> StepRecord:
    """The step as a record of run ``rid``, a spawn's child named by its new id."""
    output = step.output
    if (
        step.id.startswith("spawn.")
        and isinstance(output, dict)
        and isinstance(output.get("run_id"), str)
        and output["run_id"] in ids
    ):
        output = {**output, "run_id": ids[output["run_id"]]}
    return attrs.evolve(step, run_id=rid, output=output)
