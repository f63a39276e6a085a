"""Drive runs to their end in a test: serve, skip sleeps, answer approvals.

A run that sleeps a week, retries with backoff, waits for a person or for its child
runs finishes in milliseconds: the :class:`Driver` serves the agents until no work is
left, then moves the store's fake clock to the next wake-up and answers approvals with
a callback, and serves again, until the run has finished.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ironflow._agent._dsl import AgentDefinition, definitions_in
from ironflow._agent._memory import ProjectionDefinition, projections_in
from ironflow._agent._primitives import APPROVAL_PREFIX, approval_event
from ironflow._worker._worker import Worker
from ironflow.errors import ConfigError
from ironflow.replay._observer import Observer
from ironflow.store import FINISHED, Run, Store, WorkerInfo
from ironflow.store._history import spawned_children
from ironflow.store._records import SUSPENDED

__all__ = ["Approve", "Driver", "projections_for", "served_agents"]

#: Answers ``ctx.approve(name, payload)`` in a test: True approves, False rejects.
Approve = Callable[[str, Any], bool]


class Driver:
    """Serves ``agents`` (and ``projections``) from ``store`` and drives runs to their end.

    Each agent is served with the agents and projections of its module (see :meth:`add`).

    ``clock``: the store's :class:`~ironflow.testing.FakeClock`, moved to each wake-up
    (sleeps, retry backoff, wait and approval timeouts) once nothing else is left to do;
    without one, the driver waits for real time. ``approve`` answers approvals (True
    approves). ``timeout`` bounds each :meth:`drive` in real seconds.
    """

    def __init__(
        self,
        store: Store,
        agents: Iterable[Any] = (),
        *,
        projections: Iterable[Any] = (),
        clock: Callable[[], float] | None = None,
        approve: Approve | None = None,
        timeout: float = 60.0,
        observers: Iterable[Observer] = (),
        worker_info: WorkerInfo | None = None,
    ) -> None:
        self.store = store
        self.agents: list[AgentDefinition] = []
        self.projections = [ProjectionDefinition.must_from_fn(p) for p in projections]
        self.clock = clock
        self.approve = approve
        self.timeout = timeout
        self.observers = list(observers)
        #: The lease holder the workers present (a StandInWorker's, to crash as it).
        self.worker_info = worker_info
        self._registered = False
        self.add(*agents)

    def add(self, *agents: Any, projections: Iterable[Any] = ()) -> None:
        """Serve these agents too, with the agents and projections of their modules (a
        child run's agent, the memory's projection); a memory projection found nowhere
        raises :class:`AssertionError` saying to pass it."""
        known = {d.id for d in self.agents}
        for defn in _agents(agents):
            for other in served_agents(defn, ()):
                if other.id not in known:
                    known.add(other.id)
                    self.agents.append(other)
        given = [*(p.fn for p in self.projections), *projections]
        have = {p.name for p in self.projections}
        for p in projections_for(self.agents, given):
            if p.name not in have:
                self.projections.append(p)
        self._registered = False

    def register(self) -> None:
        """Make the agents' triggers and projections known to the store (emit needs it)."""
        if not self._registered:
            self.store.register_agents([d.spec() for d in self.agents])
            if self.projections:
                self.store.register_projections([p.spec() for p in self.projections])
            self._registered = True

    def start(self, agent: Any, data: Any = None, *, projections: Iterable[Any] = ()) -> str:
        """Emit ``agent``'s first trigger with ``data``; return the run it started.

        ``agent`` is served with its module's agents and projections, and ``projections``.
        """
        defn = AgentDefinition.must_from_fn(agent)
        self.add(agent, projections=projections)
        self.register()
        if not defn.triggers:
            raise ConfigError(f"agent {defn.id!r} has no event trigger to start it with")
        result = self.store.emit(defn.triggers[0], {} if data is None else data)
        mine = [r for r in result.run_ids if self.store.get_run(r).agent == defn.id]
        if not mine:
            raise ConfigError(
                f"emitting {defn.triggers[0]!r} started no run of {defn.id!r} (its filter?)"
            )
        return mine[0]

    def run(
        self,
        agent: Any,
        data: Any = None,
        *,
        approve: Approve | None = None,
        projections: Iterable[Any] = (),
    ) -> Run:
        """Start a run of ``agent`` with ``data`` and drive it to its end; return it.

        ``approve`` answers its approvals; ``projections``: the memory projections its
        module does not define.
        """
        return self.drive(self.start(agent, data, projections=projections), approve=approve)

    def drive(self, run_id: str, *, approve: Approve | None = None) -> Run:
        """Serve until ``run_id`` has finished; return it as the store holds it then.

        Raises :class:`AssertionError` when it cannot finish: it waits for an event with
        no timeout, for an approval with no ``approve`` callback, or ``timeout`` passed.
        A :class:`~ironflow.testing.SimulatedCrash` of the store is raised as it is.
        """
        answer = approve or self.approve
        self.register()
        deadline = time.monotonic() + self.timeout
        while True:
            self.serve_until_idle(deadline)
            run = self.store.get_run(run_id)
            if run.status in FINISHED:
                return run
            if not self._unblock(run_id, answer, deadline):
                raise AssertionError(self._stuck(run_id))
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"run {run_id} did not finish within {self.timeout:g}s (it is {run.status})"
                )

    def serve_until_idle(self, deadline: float | None = None) -> None:
        """One worker serves until no run is left to do now; a crash of the store is raised."""
        worker = Worker(
            self.agents,
            projections=[p.fn for p in self.projections],
            store=self.store,
            poll_interval=0.01,
            observers=self.observers,
        )
        if self.worker_info is not None:
            worker.info = self.worker_info
        died: list[BaseException] = []

        def serve() -> None:
            try:
                worker.run(until_idle=True, ready_message=False)
            except BaseException as exc:  # a SimulatedCrash, or a bug to raise in the test
                died.append(exc)

        thread = threading.Thread(target=serve, name="ironflow-test-worker", daemon=True)
        thread.start()
        limit = self.timeout if deadline is None else max(0.1, deadline - time.monotonic())
        thread.join(limit)
        if thread.is_alive():
            worker.stop()
            thread.join(30)
            raise AssertionError(f"the worker did not go idle within {limit:.1f}s")
        if died:
            raise died[0]

    # -- what holds a run up ------------------------------------------------------------

    def _tree(self, run_id: str) -> Iterator[Run]:
        """The run and every run it spawned, recursively."""
        todo = [run_id]
        seen: set[str] = set()
        while todo:
            rid = todo.pop()
            if rid in seen:
                continue
            seen.add(rid)
            run = self.store.get_run(rid)
            yield run
            todo.extend(c["id"] for c in spawned_children(self.store.get_steps(rid)))

    def _unblock(self, run_id: str, approve: Approve | None, deadline: float) -> bool:
        """Answer the approvals asked, else move time to the next wake-up; False: stuck."""
        wakes: list[float] = []
        answered = False
        for run in self._tree(run_id):
            s = run.suspension
            if run.status not in SUSPENDED or s is None:
                continue
            if s.kind == "event" and s.event and s.event.startswith(APPROVAL_PREFIX):
                if approve is None:
                    continue
                name = s.event[len(APPROVAL_PREFIX) :]
                payload = s.input.get("payload") if isinstance(s.input, dict) else None
                verdict = bool(approve(name, payload))
                self.store.emit(
                    *approval_event(run.id, name, approved=verdict, approver="ironflow.testing")
                )
                answered = True
            elif s.wakes_at is not None:
                wakes.append(s.wakes_at)
        if answered:
            return True
        if not wakes:
            return False
        due = min(wakes)
        if self.clock is None:
            time.sleep(max(0.0, min(due - time.time(), deadline - time.monotonic())) + 0.005)
            return True
        advance = getattr(self.clock, "advance", None)
        if advance is None:
            raise ConfigError("Driver(clock=...) needs a clock it can move: a FakeClock")
        behind = due - self.clock()
        if behind > 0:
            advance(behind + 1e-3)
        return True

    def _stuck(self, run_id: str) -> str:
        why = []
        for run in self._tree(run_id):
            s = run.suspension
            if run.status in SUSPENDED and s is not None:
                if s.event and s.event.startswith(APPROVAL_PREFIX):
                    why.append(
                        f"run {run.id} ({run.agent}) waits for the approval "
                        f"{s.event[len(APPROVAL_PREFIX) :]!r}: pass approve=lambda name, "
                        "payload: True (or False to reject)"
                    )
                elif s.kind == "event":
                    why.append(
                        f"run {run.id} ({run.agent}) waits for the event {s.event!r} with no "
                        "timeout: emit it from the test"
                    )
            elif run.status not in FINISHED:
                why.append(f"run {run.id} ({run.agent}) is {run.status} and no worker takes it")
        return "; ".join(why) or f"run {run_id} does not progress"


def served_agents(
    defn: AgentDefinition, more: Iterable[Callable[..., Any]]
) -> list[AgentDefinition]:
    """The agent, the agents of its module (its children, likely) and those given."""
    import sys

    found = {defn.id: defn}
    module = sys.modules.get(getattr(defn.fn, "__module__", ""), None)
    if module is not None:
        for other in definitions_in(vars(module)):
            found.setdefault(other.id, other)
    for fn in more:
        other = AgentDefinition.must_from_fn(fn)
        found[other.id] = other
    return list(found.values())


def projections_for(
    served: list[AgentDefinition], given: Iterable[Callable[..., Any]]
) -> list[ProjectionDefinition]:
    """The projections the served agents' memory needs: given, or found in their modules."""
    import sys

    found = {p.name: p for p in (ProjectionDefinition.must_from_fn(fn) for fn in given)}
    for defn in served:
        module = sys.modules.get(getattr(defn.fn, "__module__", ""), None)
        if module is not None:
            for p in projections_in(vars(module)):
                found.setdefault(p.name, p)
    for defn in served:
        wanted = defn.memory.projection if defn.memory is not None else None
        if wanted is not None and wanted not in found:
            raise AssertionError(
                f"agent {defn.id!r} appends to memory that the projection {wanted!r} folds, "
                f"which is not defined in its module: pass projections=[<the @projection "
                f"function named {wanted!r}>]"
            )
    return list(found.values())


def _agents(agents: Iterable[Any]) -> list[AgentDefinition]:
    return [
        a if isinstance(a, AgentDefinition) else AgentDefinition.must_from_fn(a) for a in agents
    ]
