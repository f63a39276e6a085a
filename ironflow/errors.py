"""Every error Ironflow raises, under one root.

::

    IronflowError
    ├── DefinitionError (TypeError)      a decorator was used wrongly; fix the code
    ├── ToolInputError (TypeError)       a tool's arguments do not fit its type hints
    ├── NotSerializableError (TypeError) a value cannot be stored as JSON; the path names it
    ├── StepFailedError                  a step raised; runs catch this, not the original
    ├── NonRetryableError                raised by a tool: fail this step now, retries or not
    ├── StepTimeoutError (TimeoutError)  a tool ran past its timeout=
    ├── RunTimeoutError (TimeoutError)   a run ran past its @agent(timeout=...)
    ├── NonDeterminismError              the code no longer makes the calls its record holds
    ├── MissingAwaitError (RuntimeError) an async agent called a step without await
    ├── RunNotFoundError (LookupError)   no run has that id
    ├── LeaseLostError                   another worker now owns the run this worker was executing
    ├── WorkerStoppedError (RuntimeError)  Worker.run() on a worker that has already served
    ├── ConcurrencyError                 a stream or projection moved since it was read; retry
    ├── ProjectionNotFoundError (LookupError)  no projection has that name
    ├── ProjectionTimeoutError (TimeoutError)  a projection did not catch up in time
    ├── WaitTimeoutError (TimeoutError)  a run did not finish while a caller waited for it
    ├── StoreError                       the data directory cannot be used as asked
    │   ├── StoreFormatError             the data directory was written by another format version
    │   ├── StoreLockedError             the data directory cannot be opened (permissions, lock)
    │   ├── StoreCorruptedError          the data directory is not Ironflow's, or is damaged
    │   ├── ServerUnavailableError       the server stayed unreachable for longer than allowed
    │   └── AuthError                    the server refused the request's token
    ├── LlmError                         a model call cannot be made or understood
    │   ├── ProviderNotConfiguredError   ctx.llm has no provider to ask
    │   ├── ScriptExhaustedError         a ScriptedProvider has no reply left for a call
    │   └── ToolLoopLimitError           the model still wanted tools after max_turns calls
    ├── MissingExtraError (ImportError)  an optional integration's package is not installed
    ├── InvalidInputError (ValueError)   an event name, id or limit is unusable
    ├── FilterError (ValueError)         a trigger filter does not parse; the column says where
    └── ConfigError (ValueError)         a command-line flag or environment variable is wrong

Each message names the thing that is wrong and what to do about it. Errors narrow a
built-in where callers already expect one, so ``except TypeError`` keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "ConcurrencyError",
    "ConfigError",
    "DefinitionError",
    "FilterError",
    "InvalidInputError",
    "IronflowError",
    "LeaseLostError",
    "LlmError",
    "MissingAwaitError",
    "MissingExtraError",
    "NonDeterminismError",
    "NonRetryableError",
    "NotSerializableError",
    "ProjectionNotFoundError",
    "ProjectionTimeoutError",
    "ProviderNotConfiguredError",
    "RunNotFoundError",
    "RunTimeoutError",
    "ScriptExhaustedError",
    "ServerUnavailableError",
    "StepFailedError",
    "StepTimeoutError",
    "StoreCorruptedError",
    "StoreError",
    "StoreFormatError",
    "StoreLockedError",
    "ToolInputError",
    "ToolLoopLimitError",
    "WaitTimeoutError",
    "WorkerStoppedError",
]


class IronflowError(Exception):
    """The root of every error Ironflow raises on purpose."""


class DefinitionError(IronflowError, TypeError):
    """``@agent``, ``@tool`` or ``@projection`` was given something it cannot use.

    Raised at decoration time, so it surfaces when the module is imported, not when
    the first run reaches the bad definition.
    """


class ToolInputError(IronflowError, TypeError):
    """A tool was called with an argument that does not match its type hint.

    Raised before the step is recorded, so nothing about the call is stored. Unlike
    :class:`NotSerializableError` the value may be storable; it is simply not what
    the tool declared.
    """

    def __init__(
        self, message: str, *, tool: str = "", argument: str = "", expected: str = ""
    ) -> None:
        self.tool = tool
        self.argument = argument
        self.expected = expected
        super().__init__(message)

    @classmethod
    def mismatch(cls, tool: str, argument: str, expected: str, got: Any) -> ToolInputError:
        """The error for one argument whose value does not fit its hint."""
        shown = repr(got)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return cls(
            f"tool {tool!r}: argument {argument!r} expected {expected}, "
            f"got {type(got).__name__} {shown}",
            tool=tool,
            argument=argument,
            expected=expected,
        )


class NotSerializableError(IronflowError, TypeError):
    """A step input, step output or event payload cannot be stored as JSON.

    ``path`` names the offending value (``data['items'][2]``). The step fails at once
    and nothing half-written is left in the store.
    """

    def __init__(self, what: str, path: str, reason: str, *, hint: str | None = None) -> None:
        self.what = what
        self.path = path
        self.reason = reason
        if hint is None:
            hint = (
                "Stored values must be JSON (str, int, finite float, bool, None, list, dict "
                "with str keys) or attrs/dataclass/pydantic objects made of them."
            )
        super().__init__(f"{what}: the value at {path} cannot be stored: {reason}. {hint}")


class StepFailedError(IronflowError):
    """A step raised an exception, and that failure is now part of the run's record.

    Inside a run, a failing tool raises this (with the original as ``__cause__`` the
    first time) rather than the original exception, so that a replay, which only has
    the record, raises the very same type. ``error_type`` and ``message`` describe the
    original.
    """

    def __init__(self, step_id: str, error_type: str, message: str) -> None:
        self.step_id = step_id
        self.error_type = error_type
        self.message = message
        super().__init__(f"step {step_id!r} failed: {error_type}: {message}")


class NonRetryableError(IronflowError):
    """Raise it in a tool to fail the step at once, however many retries it has left.

    For errors no retry can fix (a malformed request, a refused payment). Exception
    types listed in ``@tool(non_retryable=(...))`` are treated the same way.
    """


class StepTimeoutError(IronflowError, TimeoutError):
    """A step ran longer than its ``timeout=`` and was recorded as failed.

    The step counts as a failed try, so a ``@tool(retries=...)`` tries again. Python
    cannot stop a thread: a sync tool that overran keeps running in the background
    and its result is thrown away, so make long tools idempotent (see
    ``current_step().idempotency_key``). An async tool is cancelled.
    """


class RunTimeoutError(IronflowError, TimeoutError):
    """A run was still going when its ``@agent(timeout=...)`` ran out, counted from its start.

    The run fails at the next step boundary (a sleeping or waiting run is woken for
    it); a step in flight at that moment is cut short and recorded as failed with
    :class:`StepTimeoutError`.
    """


class NonDeterminismError(IronflowError):
    """A replay made a different call than the record holds at the same position.

    The run fails rather than mix two histories. Either the agent's code changed while
    the run was in flight, or it branches on something that is not a step (wall-clock
    time, ``random``, a network read): use ``ctx.now()``, ``ctx.random()``,
    ``ctx.uuid()`` or wrap the read in ``ctx.step``.
    """

    def __init__(
        self,
        run_id: str,
        position: int,
        recorded: str,
        attempted: str,
        *,
        inputs: tuple[Any, Any] | None = None,
    ) -> None:
        self.run_id = run_id
        self.position = position
        self.recorded = recorded
        self.attempted = attempted
        #: The recorded step's input and the new call's, when there is a new call (for a
        #: diff: ``ironflow replay`` prints one); None when the handler returned early.
        self.inputs = inputs
        super().__init__(
            f"run {run_id}: at step position {position} the record holds {recorded}, "
            f"but the code now calls {attempted}. The agent's code no longer matches this "
            "run's history; make the change conditional (`if ctx.patched(\"my-change\"):` "
            "is False for runs recorded before it) or move non-deterministic reads into "
            "steps (ctx.now(), ctx.random(), ctx.step). To finish this run, restore the "
            "old code, or re-run it under the new code from the step at that position: "
            f"`ironflow run resume {run_id} --from-step STEP_ID`."
        )


class MissingAwaitError(IronflowError, RuntimeError):
    """An ``async def`` agent called a step (a ``@tool``, ``ctx.step``, ``ctx.sleep``, a
    wait) without ``await``: the step never ran, so the run fails instead of passing
    for done. Put ``await`` before the call (or gather it).
    """

    def __init__(
        self, run_id: str, step_ids: list[str], raised: BaseException | None = None
    ) -> None:
        self.run_id = run_id
        self.step_ids = step_ids
        names = ", ".join(repr(s) for s in step_ids)
        then = (
            "the handler returned"
            if raised is None
            else f"the handler then raised {type(raised).__name__}: {raised}"
        )
        super().__init__(
            f"run {run_id}: step {names} was called without `await` in an async agent, "
            f"so it never ran, and {then}. Put `await` before the call "
            "(`result = await my_tool(...)`), or pass it to asyncio.gather"
        )


class RunNotFoundError(IronflowError, LookupError):
    """No run with that id exists in this store."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"no run with id {run_id!r}; `ironflow run list` shows the runs this store holds"
        )


class LeaseLostError(IronflowError):
    """This worker no longer holds the lease on a run it was executing.

    Happens when the worker stalled past the lease TTL and another worker took the run
    over. The step result is not recorded, so the run stays with its new owner; nothing
    is recorded twice. A projection runner meets it the same way when another worker
    took its projection over: the batch it folded is not written.
    """


class WorkerStoppedError(IronflowError, RuntimeError):
    """:meth:`ironflow.Worker.run` was called on a worker that has already served.

    A worker serves once: when :meth:`~ironflow.Worker.run` returns it has drained and
    shut its thread pools down, so a second call could lease nothing. Build a new
    ``Worker(...)`` (it may share the first one's ``store``) to serve again.
    """


class ConcurrencyError(IronflowError):
    """An optimistic write lost a race: what it was based on changed since it was read.

    Raised when an entity stream append names an ``expected_version`` that is not the
    stream's version, and when a projection write starts from a position that is no
    longer the stored one. Nothing was written; read again, decide again, retry.
    ``expected`` and ``actual`` hold the two versions (or positions).
    """

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message)


class ProjectionNotFoundError(IronflowError, LookupError):
    """No projection with that name is registered in this store.

    A projection is registered when a worker serving it starts (its module defines the
    ``@projection``, or it is passed as ``Worker(projections=[...])``).
    """

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = (
            f"known projections: {', '.join(sorted(known))}"
            if known
            else "no projection is registered yet"
        )
        super().__init__(
            f"no projection named {name!r} ({hint}); start a worker whose module defines "
            f"@projection(name={name!r}, ...) to register it"
        )


class WaitTimeoutError(IronflowError, TimeoutError):
    """A run did not finish within the time a caller waited for it (``runs.wait``,
    ``ironflow invoke --timeout``). The run itself goes on; ``run`` is it as last seen.

    Unlike :class:`RunTimeoutError`, nothing failed: only the wait ended.
    """

    def __init__(self, message: str, run: Any = None) -> None:
        super().__init__(message)
        self.run = run


class ProjectionTimeoutError(IronflowError, TimeoutError):
    """A projection did not reach the position asked for within the time allowed.

    ``memory.append.wait`` raises it when the agent's projection has not applied the
    event it just appended, typically because no worker serves that projection or its
    fold function keeps failing (the worker's log says which).
    """


class StoreError(IronflowError):
    """The data directory or server cannot be used as asked."""


class StoreFormatError(StoreError):
    """The data directory was written by a different storage format version."""


class StoreLockedError(StoreError):
    """The data directory cannot be opened: wrong permissions, not ours, or locked.

    Also raised when this process already has the directory open (LMDB allows one open
    per process): reuse that store, e.g. ``Client(store=worker.store)``, or close it first.
    """


class StoreCorruptedError(StoreError):
    """The data directory holds something Ironflow cannot read: not its data, or damaged.

    Raised when the file is not an LMDB database, holds another program's LMDB
    databases, or a page or record in it no longer decodes. Unlike
    :class:`StoreFormatError` (a valid directory of another version), no Ironflow
    version can read it: restore a backup or start a new data directory.
    """


class ServerUnavailableError(StoreError):
    """The Ironflow server at ``IRONFLOW_URL`` could not be reached in the time allowed.

    A remote store retries a server that is down with backoff; this is raised only
    when it was told to give up after a while. Unlike :class:`AuthError`, the server
    never answered at all.
    """


class AuthError(StoreError):
    """The server answered 401: the request carried no token, or the wrong one.

    Set ``IRONFLOW_TOKEN`` to the token the server was started with (``--token`` or
    its own ``IRONFLOW_TOKEN``). Retrying does not help, so nothing is retried.
    """


class LlmError(IronflowError):
    """A model call cannot be made as asked, or its answer cannot be understood.

    Raised inside an ``llm`` step it is recorded as that step's failure, like any
    provider error; raised before the step (see the subclasses) nothing is recorded.
    """


class ProviderNotConfiguredError(LlmError):
    """``ctx.llm`` was called with no ``provider=`` and no default provider set.

    Raised before the step is recorded, so the run can succeed once a provider is
    configured. Replayed ``llm`` steps never need a provider.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"ctx.llm(model={model!r}) has no provider to ask. Pass provider=... to the call, "
            "or set one for the whole process where your agents are defined: "
            "ironflow.llm.set_default_provider(ironflow.llm.OpenAIProvider()) "
            "(or AnthropicProvider(), or ScriptedProvider([...]) to run offline)"
        )


class ScriptExhaustedError(LlmError, LookupError):
    """A :class:`~ironflow.llm.ScriptedProvider` was asked for more replies than it holds."""

    def __init__(self, index: int, length: int) -> None:
        self.index = index
        self.length = length
        super().__init__(
            f"ScriptedProvider: model call #{index + 1} of this run has no scripted reply "
            f"(the script holds {length}); add replies, or pass repeat_last=True"
        )


class ToolLoopLimitError(LlmError):
    """``run_tools_loop`` made ``max_turns`` model calls and the model still asked for tools.

    The model and tool calls made until then stay recorded; the run fails unless the
    caller catches this.
    """

    def __init__(self, max_turns: int, pending: list[str]) -> None:
        self.max_turns = max_turns
        self.pending = pending
        super().__init__(
            f"run_tools_loop: the model still asked for tools ({', '.join(pending)}) after "
            f"max_turns={max_turns} model calls; raise max_turns or tell the model to answer"
        )


class MissingExtraError(IronflowError, ImportError):
    """An optional integration was used but its package is not installed."""

    def __init__(self, what: str, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{what} needs the {package!r} package, which is not installed; "
            f"install it with: pip install 'ironflow[{extra}]'"
        )


class InvalidInputError(IronflowError, ValueError):
    """A value handed to Ironflow's API (an event name, an id, a limit) cannot be used.

    Unlike :class:`ToolInputError`, this is about Ironflow's own parameters, not a
    tool's arguments.
    """


#: A filter longer than this is not repeated in its error message.
_SHOWN = 200


class FilterError(IronflowError, ValueError):
    """A trigger filter (``@agent(filter=...)``) is not a valid expression.

    Raised when the filter is parsed: at decoration, so a bad filter surfaces when the
    module is imported. ``column`` (from 1) is where the problem is.
    """

    def __init__(self, text: str | None, column: int, problem: str) -> None:
        self.text = text
        self.column = column
        self.problem = problem
        shown = f" in filter {text!r}" if text is not None and len(text) <= _SHOWN else ""
        super().__init__(
            f"{problem} at column {column}{shown}; filters look like "
            "'data.customer.tier == \"gold\" and data.amount > 100'"
        )


class ConfigError(IronflowError, ValueError):
    """A flag, environment variable or setting has a value Ironflow cannot use."""
