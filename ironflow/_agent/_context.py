"""AgentContext: the only route to time, randomness, tools and memory inside a run."""

from __future__ import annotations

import datetime as _dt
import logging
import random as _random
import time
import uuid as _uuid
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from ironflow._agent import _primitives
from ironflow._agent._dsl import AgentDefinition, ToolDefinition
from ironflow._agent._memory import AgentMemory
from ironflow._agent._parallel import OnError, run_map, run_parallel
from ironflow._agent._saga import Saga
from ironflow._agent._versioning import Patches
from ironflow._pure._durations import Duration
from ironflow.errors import DefinitionError
from ironflow.llm._call import CallCounter, MessagesInput, ToolsInput, llm_step
from ironflow.llm._provider import Provider
from ironflow.replay._engine import Execution
from ironflow.store import Event
from ironflow.store._codec import to_json_value

__all__ = ["AgentContext"]

_log = logging.getLogger("ironflow.agent")


class _RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes the run id, and stays quiet while the handler replays recorded steps,
    so a resumed run does not print its history a second time."""

    def __init__(self, execution: Execution, agent_id: str) -> None:
        super().__init__(_log, {"run_id": execution.run_id, "agent": agent_id})
        self._execution = execution

    def isEnabledFor(self, level: int) -> bool:
        return not self._execution.is_replaying and super().isEnabledFor(level)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{self.extra['agent']} {self.extra['run_id']}] {msg}", kwargs  # type: ignore[index]


def _return_type(fn: Callable[..., Any]) -> Any:
    annotations = getattr(fn, "__annotations__", None)
    if not annotations or "return" not in annotations:
        return Any
    ret = annotations["return"]
    return Any if isinstance(ret, str) else ret


class AgentContext:
    """What an agent's handler receives: its event, and the steps it may take.

    In a ``def`` agent every step method returns its value. In an ``async def`` agent
    every step method returns an awaitable: ``await ctx.now()``, ``await ocr(...)``.
    Each step is recorded before it returns, and replays from its record afterwards.
    """

    def __init__(self, execution: Execution, agent: AgentDefinition) -> None:
        self._execution = execution
        self.agent = agent
        self._memory: AgentMemory | None = None
        self._llm_calls = CallCounter()  # numbers ctx.llm calls (see LlmCall.index)
        self._saga: Saga | None = None
        self._patches: Patches | None = None
        run = execution.run
        #: The triggering event: ``.id``, ``.name``, ``.data``.
        self.event: Event = run.event
        self.run_id: str = run.id
        #: 1 on the first attempt, 2 after one crash, hand-over or suspension, and so on.
        self.attempt: int = run.attempt
        self.logger: logging.LoggerAdapter = _RunLogger(execution, agent.id)  # type: ignore[type-arg]

    @property
    def is_replaying(self) -> bool:
        """True while the handler is re-executing steps that are already recorded."""
        return self._execution.is_replaying

    @property
    def memory(self) -> AgentMemory:
        """The agent's memory: ``append(name, data)``, ``state()``, ``read()``, all steps.

        Declared with ``@agent(..., memory=Memory(stream=..., projection=...))``.
        """
        memory = self.agent.memory
        if memory is None:
            raise DefinitionError(
                f"agent {self.agent.id!r} has no memory; declare it with "
                "@agent(..., memory=Memory(stream=..., projection=...))"
            )
        if self._memory is None:
            self._memory = AgentMemory(self._execution, memory, self.agent.id)
        return self._memory

    def step(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` as the recorded step ``name`` (``name#2`` the second time).

        The arguments are part of the record and must be JSON-storable; to pass a
        client object or the like, close over it (``ctx.step("fetch", lambda: get(c, url))``).
        The result is returned re-typed to ``fn``'s return annotation on replay.
        """
        if not isinstance(name, str) or not name:
            raise DefinitionError(f"ctx.step needs a non-empty step name, not {name!r}")
        if ToolDefinition.from_fn(fn) is not None:
            # A tool passed to ctx.step would otherwise record twice; call it as a tool.
            return fn(*args, **kwargs)
        recorded_input = to_json_value(
            {"args": list(args), "kwargs": kwargs}, f"step {name!r} input", "input"
        )
        return self._execution.step(name, recorded_input, fn, args, kwargs, _return_type(fn))

    def tool(self, tool_fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call a ``@tool`` as a step; the same as calling ``tool_fn(...)`` directly."""
        ToolDefinition.must_from_fn(tool_fn)
        return tool_fn(*args, **kwargs)

    def now(self) -> Any:
        """The current time as an aware UTC datetime, recorded as the step ``now``."""
        return self._execution.step("now", None, _utcnow, (), {}, _dt.datetime)

    def uuid(self) -> Any:
        """A random UUID (version 4), recorded as the step ``uuid``."""
        return self._execution.step("uuid", None, _uuid.uuid4, (), {}, _uuid.UUID)

    def random(self) -> Any:
        """A float in [0, 1), recorded as the step ``random``."""
        return self._execution.step("random", None, _random.random, (), {}, float)

    def llm(
        self,
        *,
        model: str,
        messages: MessagesInput,
        tools: ToolsInput = None,
        name: str | None = None,
        provider: Provider | None = None,
        **params: Any,
    ) -> Any:
        """Ask a model, as the recorded step ``llm.<name>``; returns an ``LlmResponse``.

        ``messages`` is a list of ``ironflow.llm.Message`` (or ``{"role", "content"}``
        dicts), or one string as the user's message; ``tools`` are ``@tool`` functions
        the model may ask for (their JSON schemas are sent; running them is the
        caller's part, or ``ironflow.llm.run_tools_loop``'s). ``params`` (``temperature``,
        ``max_tokens``, ...) go to the provider as they are. ``name`` defaults to the
        model's name with characters other than letters, digits, ``._-`` as ``-``;
        a repeated name becomes ``llm.<name>#2``.

        The request is the step's input and the response (text, tool calls, token
        usage) its output: recorded before this returns, replayed from the record
        afterwards without asking the provider (a changed request is a
        :class:`~ironflow.errors.NonDeterminismError`). The provider is ``provider=``,
        else the one set by ``ironflow.llm.set_default_provider``; with neither,
        :class:`~ironflow.errors.ProviderNotConfiguredError` is raised before anything
        is recorded. A provider error fails the step like a raising tool.
        """
        return llm_step(
            self._execution,
            self._llm_calls,
            model=model,
            messages=messages,
            tools=tools,
            name=name,
            provider=provider,
            params=params,
        )

    # -- steps that wait: the run is suspended in the store meanwhile ------------------

    def sleep(self, duration: Duration) -> Any:
        """Pause the run for ``duration`` (seconds, or ``"500ms"``, ``"5m"``, ``"7d"``).

        The step ``sleep``. The run is suspended in the store (status ``sleeping``),
        holding no worker thread or slot, and continues on time even if every worker
        restarted meanwhile: the wake-up time is durable, counted once from the first
        time the sleep is reached. Returns None.
        """
        return _primitives.sleep(self._execution, duration)

    def sleep_until(self, when: _dt.datetime) -> Any:
        """Pause the run until ``when`` (a timezone-aware datetime), like :meth:`sleep`."""
        return _primitives.sleep_until(self._execution, when)

    def wait_for_event(
        self,
        name: str,
        *,
        match: dict[str, Any] | None = None,
        timeout: Duration | None = None,
    ) -> Any:
        """Wait for an event named ``name`` whose data has every field of ``match``.

        The step ``wait.<name>``; returns the :class:`~ironflow.Event`, or None if
        ``timeout`` passed first. An event emitted after the run started counts even
        if it came before this call (each event is taken by one wait of a run). A key
        of ``match`` may be a dotted path into the data: ``{"order.id": 7}``. The run
        is suspended (status ``waiting``) meanwhile; the store hands it the event in
        the same transaction that appends it, so none is missed.
        """
        return _primitives.wait_for_event(self._execution, name, match=match, timeout=timeout)

    def approve(self, name: str, payload: Any = None, *, ttl: Duration = "7d") -> Any:
        """Ask a person to approve, and wait (status ``waiting``) for the answer.

        The step ``approve.<name>``; returns an :class:`~ironflow.ApproveResult`
        (``approved``, ``approver``, ``reason``, ``payload``, ``timed_out``). The answer
        is an ordinary event, ``agent.approve.<name>`` with data ``{"run_id": <this
        run>, "approved": true|false, "approver": ..., "reason": ...}``, so any emitter
        can give it; ``ironflow approve RUN_ID NAME [--reject] [--reason TEXT]`` and
        ``POST /api/v1/runs/{id}/approvals/{name}`` are shorthands. With no answer
        within ``ttl`` the result has ``timed_out=True`` and ``approved=False``.
        """
        return _primitives.approve(self._execution, name, payload, ttl)

    def spawn(self, agent: Any, data: Any = None) -> Any:
        """Start a child run of ``agent`` (an ``@agent`` function or its id) with ``data``.

        The step ``spawn.<agent id>``; returns a :class:`~ironflow.ChildRun` whose
        ``result()`` waits, suspended, for the child's output. The child is created
        once: a replay or a crash around the spawn never starts a second one. Its
        ``ctx.event.data`` is ``data``; ``ironflow inspect`` shows parent and children.
        """
        return _primitives.spawn(self._execution, agent, data)

    # -- flow control: parallel branches, sagas, versioning ------------------------------

    def parallel(
        self,
        name: str,
        branches: Iterable[Callable[[], Any]],
        *,
        concurrency: int | None = None,
        on_error: OnError = "fail_fast",
    ) -> Any:
        """Run each branch (a function of no arguments) as the step ``parallel.<name>[i]``.

        Returns the branches' results in order (an awaitable of them in an async run).
        At most ``concurrency`` branches run at once (all, by default): sync branches
        on the worker's step pool, async ones on its event loop. Each branch is
        recorded on its own, so after a crash only the unfinished branches run again.
        ``on_error="fail_fast"`` starts no more branches once one failed, lets the
        running ones finish, and raises the lowest-numbered branch's
        :class:`~ironflow.errors.StepFailedError`; ``"collect"`` runs them all and puts
        each failed branch's ``StepFailedError`` in its place in the results. Steps do
        not nest: a tool a branch calls is part of the branch's step.
        """
        return run_parallel(
            self._execution, name, branches, concurrency=concurrency, on_error=on_error
        )

    def map(
        self,
        name: str,
        items: Iterable[Any],
        fn: Callable[[Any], Any],
        *,
        concurrency: int | None = None,
        on_error: OnError = "fail_fast",
    ) -> Any:
        """Call ``fn(item)`` for each item as the step ``map.<name>[i]``, like :meth:`parallel`.

        Each item is the step's recorded input (JSON-storable), so a replay over other
        items fails with :class:`~ironflow.errors.NonDeterminismError`.
        """
        return run_map(
            self._execution, name, items, fn, concurrency=concurrency, on_error=on_error
        )

    def compensate(self, step_id: str, undo: Callable[[], Any]) -> None:
        """Register ``undo`` to take back the completed step ``step_id`` (``"tool.charge"``).

        If the run fails for good (its handler raises), the registered undos run newest
        first, each as the recorded step ``compensate.<step_id>``, before the run is
        marked failed with its own error; an undo that raises is recorded as failed and
        the rest still run. Each undo runs once, however many times the worker crashes
        (the one in flight at a crash runs again, as any step). Not a step itself.
        """
        if self._saga is None:
            self._saga = Saga(self._execution)
        self._saga.register(step_id, undo)

    def patched(self, change_id: str) -> bool:
        """True if this run reaches this point under the new code; False for an older run.

        Wrap a change to an agent's steps in ``if ctx.patched("change-id"): <new> else:
        <old>`` so runs recorded before the change replay the old path. The first time
        a run reaches the call, the marker step ``patch.<change-id>`` is recorded and
        the answer is True; a run whose record holds another step at this point gets
        False. Remove the old branch once no run recorded before the change is left.
        """
        if self._patches is None:
            self._patches = Patches(self._execution)
        return self._patches.patched(change_id)

    def __repr__(self) -> str:
        return f"<AgentContext agent={self.agent.id!r} run_id={self.run_id!r}>"


def _utcnow() -> _dt.datetime:
    return _dt.datetime.fromtimestamp(time.time(), _dt.UTC)
