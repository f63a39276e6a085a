"""The store's HTTP routes, written once: one row per Store method.

A row says everything both ends need: the HTTP method and path, each argument (where it
travels, its wire shape, and the check from ``_checks`` it must pass), the type of the
reply, and whether the call writes something a waiting request may be waiting for.
:class:`~ironflow.store.RemoteStore` builds its requests from a row
(:meth:`StoreRoute.request`) and reads the reply with it (:meth:`StoreRoute.read_reply`);
the server registers one handler per row and turns a request into checked arguments
with it (:meth:`StoreRoute.parse`). So a path, a check or a limit cannot differ between
the client and the server, and a new Store method is a new row.

How each argument travels (its kind, and why the wire is strict) is ``_wire.py``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ironflow._pure._limits import (
    MAX_ATTEMPT,
    MAX_DURATION,
    MAX_LEASE_BATCH,
    MAX_LONG_POLL,
    MAX_PAGE,
    MAX_PROJECTION_WAIT,
    MAX_RUN_WAIT,
    MAX_SEQ,
    MAX_TTL,
    MIN_TTL,
)
from ironflow._pure._trace import TraceContext
from ironflow.errors import InvalidInputError
from ironflow.store import _checks as checks
from ironflow.store._codec import converter, event_data
from ironflow.store._records import (
    AgentSpec,
    EmitResult,
    ErrorInfo,
    Event,
    Lease,
    LeasedRun,
    ProjectionSpec,
    ProjectionState,
    ProjectionStatus,
    ProjectionWrite,
    PruneResult,
    Run,
    StepAck,
    StepRecord,
    SuspendResult,
    Suspension,
    WorkerInfo,
)
from ironflow.store._wire import (
    Checked,
    Data,
    Flag,
    HistoryDocument,
    Int,
    Kind,
    Many,
    Maybe,
    Number,
    Record,
)

__all__ = [
    "ROUTES",
    "STORE_ROUTES",
    "Arg",
    "LeaseReply",
    "StoreRoute",
    "WorkReply",
]

Where = Literal["path", "query", "body"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of an argument that must be given.
REQUIRED: Any = _Required()


@attrs.frozen
class Arg:
    """One argument of a route: a parameter of the Store method, unless ``param`` is
    False (something only the HTTP exchange needs, such as how long to wait)."""

    name: str
    kind: Kind
    at: Where = "body"
    default: Any = REQUIRED
    param: bool = True


# -- replies that are not a Store method's own result ---------------------------------------------


@attrs.frozen
class LeaseReply:
    """A lease request's answer: the runs it leased, and (on a retry after a lost reply)
    the runs this worker already holds, so the client can take back the ones it lost."""

    runs: tuple[LeasedRun, ...]
    reclaimed: tuple[LeasedRun, ...] = ()


@attrs.frozen
class WorkReply:
    """A wait for work's answer: the server's count of writes that may be new work.
    The client sends it back with its next wait, which then returns at once if a write
    came in between."""

    generation: str


# -- the route ---------------------------------------------------------------------------------


@attrs.frozen
class StoreRoute:
    """One Store method over HTTP (see the module docstring)."""

    #: The Store method this route carries.
    name: str
    method: Literal["GET", "POST"]
    #: The path under ``/api/v1``, with ``{arg}`` for each path argument.
    path: str
    args: tuple[Arg, ...] = ()
    #: The type of the method's result (None: nothing).
    reply: Any = None
    #: Whether the call may end a waiting request's wait (new work, a new event, a
    #: projection advanced, a run released or finished).
    wakes: bool = False
    #: Whether the call's work is small and bounded (one run's records, a few keys; no
    #: scan, no history read back): the server may make it on its event loop's thread
    #: when no other store call is running, saving two thread hops (server/_app.py).
    quick: bool = False

    def __attrs_post_init__(self) -> None:
        in_path = {a.name for a in self.args if a.at == "path"}
        named = {p[1:-1] for p in self.path.split("/") if p.startswith("{")}
        if in_path != named:
            raise AssertionError(f"{self.name}: path arguments {in_path} vs path {self.path}")
        if self.method == "GET" and any(a.at == "body" for a in self.args):
            raise AssertionError(f"{self.name}: a GET carries no body")

    @property
    def has_body(self) -> bool:
        return any(a.at == "body" for a in self.args)

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)

    def _what(self, arg: Arg) -> str:
        return f"{self.name} {arg.name}"

    # -- the client ----------------------------------------------------------------------

    def request(self, **values: Any) -> tuple[str, str, dict[str, Any] | None]:
        """``(method, path with query, JSON body or None)`` for a call with ``values``.

        Every value is checked first, with the store's own error for a bad one.
        """
        unknown = set(values) - {a.name for a in self.args}
        if unknown:
            raise TypeError(f"{self.name}: unexpected arguments {sorted(unknown)}")
        path = self.path
        query: list[tuple[str, str]] = []
        body: dict[str, Any] | None = {} if self.has_body else None
        for arg in self.args:
            value = values.get(arg.name, arg.default)
            if value is REQUIRED:
                raise TypeError(f"{self.name}: missing argument {arg.name!r}")
            wire = arg.kind.dump(value, self._what(arg))
            if arg.at == "path":
                path = path.replace("{" + arg.name + "}", urllib.parse.quote(wire, safe=""))
            elif arg.at == "query":
                if wire is not None:
                    query.append((arg.name, str(wire)))
            else:
                assert body is not None
                body[arg.name] = wire
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return self.method, path, body

    def read_reply(self, data: Any) -> Any:
        """The method's result from the server's JSON reply."""
        return None if self.reply is None else converter.structure(data, self.reply)

    # -- the server -------------------------------------------------------------------------

    def parse(
        self,
        path: Mapping[str, str],
        query: Mapping[str, str],
        body: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The checked arguments of a request, by name.

        Raises :class:`~ironflow.errors.InvalidInputError` (or the not-found error of an
        impossible id) naming the argument, for a missing, unknown or bad one.
        """
        given = dict(body or {})
        known = {a.name for a in self.args if a.at == "body"}
        unknown = sorted(k for k in given if k not in known)
        if unknown:
            raise InvalidInputError(
                f"{self.name}: unknown fields {unknown[:5]!r:.200} in the request body; "
                f"it takes {sorted(known)}"
            )
        out: dict[str, Any] = {}
        for arg in self.args:
            what = self._what(arg)
            if arg.at == "path":
                out[arg.name] = arg.kind.load_text(path.get(arg.name, ""), what)
                continue
            source: Mapping[str, Any] = query if arg.at == "query" else given
            if arg.name not in source:
                if arg.default is REQUIRED:
                    raise InvalidInputError(f"{what} is required")
                out[arg.name] = arg.default
            elif arg.at == "query":
                out[arg.name] = arg.kind.load_text(source[arg.name], what)
            else:
                out[arg.name] = arg.kind.load(source[arg.name], what)
        return out

    def reply_json(self, result: Any) -> Any:
        """The method's result as the JSON the client reads back."""
        if self.reply is None:
            return None
        data = converter.unstructure(result, self.reply)
        return sorted(data) if isinstance(data, set | frozenset) else data


# -- the table -------------------------------------------------------------------------------------


_RUN = Arg("run_id", Checked(checks.run_id), "path")
_PROJECTION = Arg("name", Checked(checks.projection_name), "path")
_STREAM = Arg("stream_id", Checked(checks.stream_id), "path")
_WORKER = Arg("worker", Record(WorkerInfo, checks.worker))
_NAME = Checked(checks.name)
_TTL = Arg("ttl", Number(MIN_TTL, MAX_TTL))
# Writes on behalf of a run are fenced by its lease: the worker and the run's attempt.
_ATTEMPT = Arg("attempt", Int(0, MAX_ATTEMPT))
# The W3C trace context an event or a child run is created in (None: none).
_TRACE = Arg("trace", Maybe(Record(TraceContext, checks.trace)), default=None)
_LIMIT = Int(1, MAX_PAGE)
# A run's finish: finish_run's arguments, and the first of finish_and_lease's.
_FINISH = (
    _WORKER,
    _RUN,
    Arg("status", Checked(checks.finish_status)),
    Arg("output", Data("output"), default=None),
    Arg("error", Maybe(Record(ErrorInfo, checks.error_info)), default=None),
    _ATTEMPT,
)

STORE_ROUTES: tuple[StoreRoute, ...] = (
    # -- agents and events
    StoreRoute(
        "register_agents",
        "POST",
        "/store/agents",
        (Arg("agents", Record(list[AgentSpec], checks.agent_specs)),),
    ),
    StoreRoute("agents", "GET", "/store/agents", reply=list[AgentSpec]),
    StoreRoute(
        "emit",
        "POST",
        "/store/events",
        (
            Arg("name", Checked(checks.event_name)),
            Arg("data", Checked(event_data)),
            Arg("id", Maybe(Checked(checks.key)), default=None),
            _TRACE,
        ),
        EmitResult,
        wakes=True,
    ),
    StoreRoute(
        "events",
        "GET",
        "/store/events",
        (
            Arg("after_seq", Int(0, MAX_SEQ), "query", 0),
            Arg("limit", _LIMIT, "query", 1000),
        ),
        list[Event],
    ),
    # -- leasing
    StoreRoute(
        "lease_runs",
        "POST",
        "/store/leases",
        (
            _WORKER,
            Arg("agents", Many(_NAME)),
            Arg("limit", Int(1, MAX_LEASE_BATCH)),
            _TTL,
            # How long to wait at the server for work, and whether this is a retry whose
            # first reply may have been lost (then the runs it holds come back too).
            Arg("wait", Number(0.0, MAX_LONG_POLL), default=0.0, param=False),
            Arg("reclaim", Flag(), default=False, param=False),
        ),
        LeaseReply,
    ),
    StoreRoute(
        "wait_for_work",
        "POST",
        "/store/wait",
        (
            Arg("after", Maybe(_NAME), default=None, param=False),
            Arg("timeout", Number(0.0, MAX_LONG_POLL)),
        ),
        WorkReply,
    ),
    StoreRoute(
        "heartbeat",
        "POST",
        "/store/heartbeat",
        (_WORKER, Arg("run_ids", Many(_NAME)), _TTL),
        set[str],
        quick=True,
    ),
    # -- steps and runs
    StoreRoute(
        "record_step",
        "POST",
        "/store/steps",
        (_WORKER, Arg("step", Record(StepRecord, checks.step))),
        StepAck,
        quick=True,
    ),
    StoreRoute(
        "finish_run",
        "POST",
        "/store/runs/{run_id}/finish",
        _FINISH,
        Run,
        wakes=True,
        quick=True,
    ),
    StoreRoute(
        "finish_and_lease",
        "POST",
        "/store/runs/{run_id}/finish-and-lease",
        (
            *_FINISH,
            Arg("agents", Many(_NAME)),
            Arg("limit", Int(1, MAX_LEASE_BATCH)),
            _TTL,
        ),
        # Not quick: the lease hands out the runs' recorded steps, of any size.
        list[LeasedRun],
        wakes=True,
    ),
    StoreRoute(
        "release_run",
        "POST",
        "/store/runs/{run_id}/release",
        (_WORKER, _RUN, _ATTEMPT),
        wakes=True,
        quick=True,
    ),
    StoreRoute("get_run", "GET", "/store/runs/{run_id}", (_RUN,), Run, quick=True),
    StoreRoute(
        "wait_for_run",
        "GET",
        "/store/runs/{run_id}/wait",
        # One request waits at most this long; the client asks again for longer.
        (_RUN, Arg("timeout", Number(0.0, MAX_RUN_WAIT), "query")),
        Run,
    ),
    StoreRoute("get_steps", "GET", "/store/runs/{run_id}/steps", (_RUN,), list[StepRecord]),
    StoreRoute("get_lease", "GET", "/store/runs/{run_id}/lease", (_RUN,), Lease | None),
    StoreRoute(
        "list_runs",
        "GET",
        "/store/runs",
        (
            Arg("limit", _LIMIT, "query", 20),
            Arg("status", Maybe(Checked(checks.any_text)), "query", None),
            Arg("agent", Maybe(Checked(checks.any_text)), "query", None),
        ),
        list[Run],
    ),
    StoreRoute("request_cancel", "POST", "/store/runs/{run_id}/cancel", (_RUN,), Run, wakes=True),
    StoreRoute("pause_run", "POST", "/store/runs/{run_id}/pause", (_RUN,), Run),
    StoreRoute(
        "resume_run",
        "POST",
        "/store/runs/{run_id}/resume",
        (_RUN, Arg("from_step", Maybe(Checked(checks.step_id)), default=None)),
        Run,
        wakes=True,
    ),
    StoreRoute(
        "fork_run",
        "POST",
        "/store/runs/{run_id}/fork",
        (
            _RUN,
            Arg("from_step", Checked(checks.step_id)),
            Arg("data", Maybe(Checked(event_data)), default=None),
            Arg("id", Maybe(Checked(checks.new_run_id)), default=None),
        ),
        Run,
        wakes=True,
    ),
    StoreRoute(
        "import_history",
        "POST",
        "/store/runs/import",
        (Arg("history", HistoryDocument()), Arg("new_ids", Flag(), default=False)),
        Run,
        wakes=True,
    ),
    # -- suspended runs and child runs
    StoreRoute(
        "suspend_run",
        "POST",
        "/store/runs/{run_id}/suspend",
        (_WORKER, _RUN, Arg("suspension", Record(Suspension, checks.suspension)), _ATTEMPT),
        SuspendResult,
        wakes=True,
    ),
    StoreRoute(
        "spawn_run",
        "POST",
        "/store/runs/{parent_id}/spawn",
        (
            _WORKER,
            Arg("parent_id", Checked(checks.run_id), "path"),
            Arg("step_id", Checked(checks.step_id)),
            Arg("agent", _NAME),
            Arg("data", Checked(event_data)),
            _ATTEMPT,
            _TRACE,
        ),
        Run,
        wakes=True,
    ),
    # -- entity streams
    StoreRoute(
        "append_to_stream",
        "POST",
        "/store/streams/{stream_id}/events",
        (
            _STREAM,
            Arg("name", Checked(checks.event_name)),
            Arg("data", Data("data")),
            Arg("expected_version", Maybe(Int(0, MAX_SEQ)), default=None),
            Arg("idempotency_key", Maybe(Checked(checks.key)), default=None),
            _TRACE,
        ),
        Event,
        wakes=True,
    ),
    StoreRoute(
        "read_stream",
        "GET",
        "/store/streams/{stream_id}/events",
        (
            _STREAM,
            Arg("from_version", Int(0, MAX_SEQ), "query", 0),
            Arg("limit", _LIMIT, "query", 1000),
        ),
        list[Event],
    ),
    StoreRoute(
        "delete_stream_events",
        "POST",
        "/store/streams/{stream_id}/delete",
        (_STREAM, Arg("versions", Maybe(Many(Checked(checks.stream_version))), default=None)),
        int,
    ),
    # -- projections
    StoreRoute(
        "register_projections",
        "POST",
        "/store/projections",
        (Arg("specs", Record(list[ProjectionSpec], checks.projection_specs)),),
        wakes=True,
    ),
    StoreRoute("list_projections", "GET", "/store/projections", reply=list[ProjectionStatus]),
    StoreRoute(
        "projection_status", "GET", "/store/projections/{name}", (_PROJECTION,), ProjectionStatus
    ),
    StoreRoute(
        "get_projection",
        "POST",
        "/store/projections/{name}/read",
        (_PROJECTION, Arg("partitions", Maybe(Many(Checked(checks.any_text))), default=None)),
        ProjectionState,
    ),
    StoreRoute(
        "lease_projection",
        "POST",
        "/store/projections/{name}/lease",
        (_WORKER, _PROJECTION, _TTL),
        bool,
    ),
    StoreRoute(
        "release_projection",
        "POST",
        "/store/projections/{name}/release",
        (_WORKER, _PROJECTION),
        wakes=True,
    ),
    StoreRoute(
        "write_projection",
        "POST",
        "/store/projection-writes",
        (_WORKER, Arg("write", Record(ProjectionWrite, checks.projection_write))),
        ProjectionStatus,
        wakes=True,
    ),
    StoreRoute(
        "request_projection_rebuild",
        "POST",
        "/store/projections/{name}/rebuild",
        (_PROJECTION,),
        int,
        wakes=True,
    ),
    StoreRoute(
        "wait_for_projection",
        "POST",
        "/store/projections/{name}/wait",
        (
            _PROJECTION,
            Arg("position", Int(0, MAX_SEQ)),
            # One request waits at most this long; the client asks again for longer.
            Arg("timeout", Number(0.0, MAX_PROJECTION_WAIT)),
        ),
        int,
    ),
    # -- retention
    StoreRoute(
        "prune_runs",
        "POST",
        "/store/prune",
        (
            Arg("older_than", Number(0.0, MAX_DURATION)),
            Arg("statuses", Maybe(Many(_NAME)), default=None),
            Arg("dry_run", Flag(), default=False),
        ),
        PruneResult,
    ),
)

#: The routes by Store method name.
ROUTES: Mapping[str, StoreRoute] = {r.name: r for r in STORE_ROUTES}
