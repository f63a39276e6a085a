"""``@tool`` and ``@agent``: validate at decoration, attach a frozen definition.

The decorated function stays an ordinary function. Outside a run, calling a tool just
calls it; inside a run the same call becomes the recorded step ``tool.<name>``.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

import attrs

from ironflow._agent._flow import (
    CancelOn,
    ConcurrencyLimit,
    CronTrigger,
    Debounce,
    cancel_on_option,
    check_filter,
    concurrency_option,
    cron_trigger,
    debounce_option,
)
from ironflow._pure._durations import Duration, parse_duration
from ironflow._pure._limits import MAX_NAME_BYTES, MAX_STEP_NAME_CHARS, is_code_name
from ironflow._pure._validate import Mismatch, check_value
from ironflow.errors import DefinitionError, InvalidInputError, ToolInputError
from ironflow.replay._engine import RetryPolicy, current_execution
from ironflow.store._codec import to_json_value
from ironflow.store._flowspec import FlowSpec
from ironflow.store._records import AgentSpec
from ironflow.store._triggers import validate_trigger

__all__ = [
    "AgentDefinition",
    "Memory",
    "ToolDefinition",
    "agent",
    "definitions_in",
    "tool",
]

F = TypeVar("F", bound=Callable[..., Any])

_TOOL_ATTR = "__ironflow_tool__"
_AGENT_ATTR = "__ironflow_agent__"


def _check_name(kind: str, value: Any, fn: Callable[..., Any]) -> str:
    # A tool's name goes into step ids (``tool.<name>#2``); an agent's or projection's
    # is a key of the store.
    longest = MAX_STEP_NAME_CHARS if kind == "tool" else MAX_NAME_BYTES
    if not is_code_name(value, longest):
        raise DefinitionError(
            f"@{kind} on {getattr(fn, '__qualname__', fn)!r}: the name {value!r} is not usable; "
            "use letters, digits, '.', '_' or '-', starting with a letter or digit, "
            f"at most {longest} characters"
        )
    return value


def _hints(fn: Callable[..., Any], kind: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # a forward reference that does not resolve, a bad annotation
        raise DefinitionError(
            f"@{kind} on {fn.__qualname__!r}: its type hints cannot be resolved ({exc}); "
            "import the names they use at module level"
        ) from exc


@attrs.frozen
class Memory:
    """Where an agent's memory lives: an entity stream and the projection that reads it."""

    stream: str
    projection: str | None = None


@attrs.frozen
class ToolDefinition:
    """What ``@tool`` learned about a function. Found again with :meth:`from_fn`."""

    name: str
    description: str
    fn: Callable[..., Any]
    is_async: bool
    signature: inspect.Signature
    hints: Mapping[str, Any]
    return_type: Any

    @staticmethod
    def from_fn(fn: Any) -> ToolDefinition | None:
        """The definition attached to a ``@tool`` function, or None."""
        return getattr(fn, _TOOL_ATTR, None)

    @staticmethod
    def must_from_fn(fn: Any) -> ToolDefinition:
        """Like :meth:`from_fn`, raising a clear error for an undecorated function."""
        defn = ToolDefinition.from_fn(fn)
        if defn is None:
            raise DefinitionError(
                f"{getattr(fn, '__qualname__', fn)!r} is not a tool; was it decorated with @tool?"
            )
        return defn

    #: For keyword-only calls naming every parameter (the common case), the names in
    #: signature order; None when the signature has *args, **kwargs or positional-only.
    keyword_names: tuple[str, ...] | None = None
    #: How a failing call is tried again (``@tool(retries=...)``); None: never.
    retry: RetryPolicy | None = None
    #: Seconds one try may run (``@tool(timeout=...)``); None: no limit.
    timeout: float | None = None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Match a call to the signature and check each argument against its hint."""
        names = self.keyword_names
        if not args and names is not None and len(kwargs) == len(names):
            # The hot path of a step: skip Signature.bind, which costs more than the check.
            try:
                arguments = {name: kwargs[name] for name in names}
            except KeyError:
                pass
            else:
                for name, value in arguments.items():
                    hint = self.hints.get(name)
                    if hint is not None and type(value) is not hint:
                        try:
                            check_value(value, hint, name)
                        except Mismatch as bad:
                            raise ToolInputError.mismatch(
                                self.name, bad.path, bad.expected, bad.got
                            ) from None
                return arguments
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ToolInputError(
                f"tool {self.name!r}: {exc}; its signature is {self.name}{self.signature}",
                tool=self.name,
            ) from None
        bound.apply_defaults()
        for pname, value in bound.arguments.items():
            hint = self.hints.get(pname)
            if hint is None:
                continue
            param = self.signature.parameters[pname]
            try:
                if param.kind is inspect.Parameter.VAR_POSITIONAL:
                    for i, item in enumerate(value):
                        check_value(item, hint, f"{pname}[{i}]")
                elif param.kind is inspect.Parameter.VAR_KEYWORD:
                    for key, item in value.items():
                        check_value(item, hint, key)
                else:
                    check_value(value, hint, pname)
            except Mismatch as bad:
                raise ToolInputError.mismatch(self.name, bad.path, bad.expected, bad.got) from None
        return dict(bound.arguments)


def _duration_option(where: str, option: str, value: Any) -> float:
    try:
        return parse_duration(value, f"{where}: {option}")
    except InvalidInputError as exc:
        raise DefinitionError(str(exc)) from None


def _retry_policy(
    where: str,
    retries: int,
    backoff: Duration,
    max_backoff: Duration,
    non_retryable: Sequence[type[BaseException]],
) -> RetryPolicy | None:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise DefinitionError(f"{where}: retries must be a whole number from 0, not {retries!r}")
    classes = tuple(non_retryable)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise DefinitionError(
                f"{where}: non_retryable must list exception classes, not {cls!r}"
            )
    if retries == 0:
        return None
    return RetryPolicy(
        retries=retries,
        backoff=_duration_option(where, "backoff", backoff),
        max_backoff=_duration_option(where, "max_backoff", max_backoff),
        non_retryable=classes,
    )


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    retries: int = 0,
    backoff: Duration = 1.0,
    max_backoff: Duration = 300.0,
    non_retryable: Sequence[type[BaseException]] = (),
    timeout: Duration | None = None,
) -> Callable[[F], F]: ...


def tool(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    retries: int = 0,
    backoff: Duration = 1.0,
    max_backoff: Duration = 300.0,
    non_retryable: Sequence[type[BaseException]] = (),
    timeout: Duration | None = None,
) -> F | Callable[[F], F]:
    """Make a function a tool: a recorded step ``tool.<name>`` when called inside a run.

    ``retries=N`` tries a raising call up to N more times before the step fails; the
    wait before try n+1 is ``backoff * 2**(n-1)`` (at most ``max_backoff``), with
    jitter, and the run sleeps in the store meanwhile, holding no worker. Every failed
    try is kept (``StepRecord.tries``, shown by ``ironflow inspect``). An
    :class:`~ironflow.errors.NonRetryableError`, or an exception of a class in
    ``non_retryable``, fails the step at once. ``timeout`` (seconds, or ``"30s"``)
    fails a try that runs longer with :class:`~ironflow.errors.StepTimeoutError`.

    Guarantees inside a run: the arguments are checked against the type hints before
    anything is recorded (:class:`~ironflow.errors.ToolInputError`); the result is
    durably recorded before the call returns; once recorded, later replays return the
    recorded result re-typed to the return annotation without calling the function.
    A raising tool is recorded as failed and raises
    :class:`~ironflow.errors.StepFailedError`. In an ``async def`` agent the call
    returns an awaitable; a sync tool then runs on a bounded thread pool.
    Outside a run the function is called as it is.
    """

    def decorate(f: F) -> F:
        if not callable(f) or inspect.isclass(f):
            raise DefinitionError(f"@tool needs a function, not {f!r}")
        tool_name = _check_name("tool", name if name is not None else f.__name__, f)
        hints = _hints(f, "tool")
        where = f"@tool {tool_name!r}"
        policy = _retry_policy(where, retries, backoff, max_backoff, non_retryable)
        limit = None if timeout is None else _duration_option(where, "timeout", timeout)
        defn = ToolDefinition(
            name=tool_name,
            description=description if description is not None else inspect.getdoc(f) or "",
            fn=f,
            is_async=inspect.iscoroutinefunction(f),
            signature=inspect.signature(f),
            hints={k: v for k, v in hints.items() if k != "return"},
            return_type=hints.get("return", Any),
            retry=policy,
            timeout=limit,
        )
        step_id = f"tool.{tool_name}"
        what = f"tool {tool_name!r} input"
        kinds = {p.kind for p in defn.signature.parameters.values()}
        if kinds <= {inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY}:
            defn = attrs.evolve(defn, keyword_names=tuple(defn.signature.parameters))

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            execution = current_execution()
            if execution is None:
                return f(*args, **kwargs)
            arguments = defn.bind(args, kwargs)
            recorded_input = to_json_value(arguments, what, "input")
            return execution.step(
                step_id,
                recorded_input,
                f,
                args,
                kwargs,
                defn.return_type,
                retry=policy,
                timeout=limit,
            )

        setattr(wrapper, _TOOL_ATTR, defn)
        return typing.cast(F, wrapper)

    if fn is not None:
        return decorate(fn)
    return decorate


@attrs.frozen
class AgentDefinition:
    """What ``@agent`` learned about a handler. Found again with :meth:`from_fn`."""

    id: str
    fn: Callable[..., Any]
    is_async: bool
    triggers: tuple[str, ...]
    description: str = ""
    memory: Memory | None = None
    recording: bool = True
    #: Seconds a run may take from its start, sleeps and waits included; None: no limit.
    timeout: float | None = None
    #: Flow control (see ``ironflow._agent._flow``): a filter expression on the trigger event,
    #: runs at once per key, debouncing, events that cancel runs, cron schedules.
    filter: str | None = None
    concurrency: ConcurrencyLimit | None = None
    debounce: Debounce | None = None
    cancel_on: tuple[CancelOn, ...] = ()
    crons: tuple[CronTrigger, ...] = ()
    #: The code version new runs are stamped with (``@agent(version=...)``).
    version: str | None = None

    def spec(self) -> AgentSpec:
        """What the store needs of this agent: its triggers and its flow control."""
        flow = FlowSpec(
            filter=self.filter,
            concurrency=self.concurrency,
            debounce=self.debounce,
            cancel_on=self.cancel_on,
            crons=self.crons,
            version=self.version,
        )
        return AgentSpec(
            id=self.id,
            triggers=self.triggers,
            description=self.description,
            flow=None if flow == FlowSpec() else flow,
        )

    @staticmethod
    def from_fn(fn: Any) -> AgentDefinition | None:
        """The definition attached to an ``@agent`` function, or None."""
        return getattr(fn, _AGENT_ATTR, None)

    @staticmethod
    def must_from_fn(fn: Any) -> AgentDefinition:
        """Like :meth:`from_fn`, raising a clear error for an undecorated function."""
        defn = AgentDefinition.from_fn(fn)
        if defn is None:
            raise DefinitionError(
                f"{getattr(fn, '__qualname__', fn)!r} is not an agent; "
                "was it decorated with @agent(id=..., triggers=[...])?"
            )
        return defn


def _trigger_names(agent_id: str, triggers: Any) -> tuple[str, ...]:
    if isinstance(triggers, str):
        triggers = [triggers]
    if not isinstance(triggers, Sequence):
        raise DefinitionError(
            f"@agent(id={agent_id!r}): triggers must be a list of event names, not {triggers!r}"
        )
    names: list[str] = []
    for t in triggers:
        # The TypeScript SDK's shape, {"event": "doc.received"}, is accepted too.
        event: Any = t.get("event") if isinstance(t, Mapping) else t
        problem = validate_trigger(event)
        if problem is not None:
            raise DefinitionError(f"@agent(id={agent_id!r}): {problem} (got {t!r})")
        names.append(typing.cast(str, event))
    return tuple(names)


def agent(
    *,
    id: str,
    triggers: Sequence[str | Mapping[str, Any]] = (),
    description: str = "",
    memory: Memory | None = None,
    recording: bool = True,
    timeout: Duration | None = None,
    filter: str | None = None,
    concurrency: int | Mapping[str, Any] | None = None,
    debounce: Mapping[str, Any] | None = None,
    cancel_on: Sequence[Mapping[str, Any] | str] | None = None,
    version: str | None = None,
) -> Callable[[F], F]:
    """Make a function an agent: a durable handler started by the events it triggers on.

    The handler (``def`` or ``async def``) takes one argument, the run's context
    (:class:`~ironflow.AgentContext`). It re-executes from the top on every attempt,
    so everything non-deterministic it does must be a step: a tool call,
    ``ctx.step``, ``ctx.now()``, ``ctx.uuid()``, ``ctx.random()``.

    ``timeout`` (seconds, or ``"1h"``) bounds a run from its start, sleeps and waits
    included: past it the run fails with ``RunTimeoutError`` at its next step boundary
    (a suspended run is woken for it, a step in flight is cut short).

    Flow control: ``filter`` is an expression an event must satisfy to start a run
    (``'data.amount > 100 and data.tier == "gold"'``); ``concurrency={"limit": N,
    "key": "data.customerId"}`` lets at most N runs per key value run at once (the
    rest are ``queued``); ``debounce={"period": "5s", "key": ..., "max_wait": "1m"}``
    starts one run per burst of events, with the last; ``cancel_on=[{"event": ...,
    "match": "data.orderId"}]`` cancels unfinished runs when a matching event comes; a
    trigger ``{"cron": "0 9 * * *", "timezone": "UTC"}`` fires on a schedule.
    ``version`` is stamped on each new run, so ``ironflow inspect`` shows which code
    started it.
    """

    def decorate(fn: F) -> F:
        if not callable(fn) or inspect.isclass(fn):
            raise DefinitionError(f"@agent(id={id!r}) needs a function, not {fn!r}")
        agent_id = _check_name("agent", id, fn)
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(params) != 1:
            raise DefinitionError(
                f"@agent(id={agent_id!r}): the handler {fn.__qualname__!r} must take exactly "
                f"one argument, the run context (def handler(ctx): ...); it takes {len(params)}"
            )
        if memory is not None and not isinstance(memory, Memory):
            raise DefinitionError(
                f"@agent(id={agent_id!r}): memory must be ironflow.Memory(stream=..., "
                f"projection=...), not {memory!r}"
            )
        defn = AgentDefinition(
            id=agent_id,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            triggers=_trigger_names(agent_id, _events_only(triggers)),
            description=description or inspect.getdoc(fn) or "",
            memory=memory,
            recording=recording,
            timeout=None
            if timeout is None
            else _duration_option(f"@agent(id={agent_id!r})", "timeout", timeout),
            filter=check_filter(agent_id, filter),
            concurrency=concurrency_option(agent_id, concurrency),
            debounce=debounce_option(agent_id, debounce),
            cancel_on=cancel_on_option(agent_id, cancel_on),
            crons=tuple(cron_trigger(agent_id, t) for t in _crons_only(triggers)),
            version=_version(agent_id, version),
        )
        setattr(fn, _AGENT_ATTR, defn)
        return fn

    return decorate


def _is_cron(trigger: Any) -> bool:
    return isinstance(trigger, Mapping) and "cron" in trigger


def _events_only(triggers: Any) -> Any:
    """The event triggers; anything malformed is left for _trigger_names to report."""
    if isinstance(triggers, Sequence) and not isinstance(triggers, str):
        return [t for t in triggers if not _is_cron(t)]
    return triggers


def _crons_only(triggers: Any) -> list[Mapping[str, Any]]:
    if isinstance(triggers, Sequence) and not isinstance(triggers, str):
        return [t for t in triggers if _is_cron(t)]
    return []


def _version(agent_id: str, version: Any) -> str | None:
    if version is not None and (not isinstance(version, str) or not version.strip()):
        raise DefinitionError(
            f"@agent(id={agent_id!r}): version must be a non-empty string like '2024-06-01' "
            f"or 'v2', not {version!r}"
        )
    return version


def definitions_in(namespace: Mapping[str, Any]) -> list[AgentDefinition]:
    """The agents defined in a module's namespace, in definition order, without repeats."""
    found: dict[str, AgentDefinition] = {}
    for value in namespace.values():
        defn = AgentDefinition.from_fn(value)
        if defn is not None:
            other = found.get(defn.id)
            if other is not None and other.fn is not defn.fn:
                raise DefinitionError(
                    f"two agents share the id {defn.id!r} ({other.fn.__qualname__} and "
                    f"{defn.fn.__qualname__}); give each a unique id"
                )
            found[defn.id] = defn
    return list(found.values())
