"""Every size, name and number limit, written once.

The decorators, the replay engine, every store backend, the server's routes and
:class:`~ironflow.store.RemoteStore` import these names; none of them writes a limit's
value again. A limit that changes here changes everywhere at once, and an error
message built from it can never disagree with the check.

Why these values: a store keys its records by ids and names, and LMDB keys hold at
most 511 bytes, so a key made of a run id, a separator and a step id must fit
(200 + 1 + 300). JSON readers hold integers in 64 bits. Everything else bounds what one
request or one value may cost the server.
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard

__all__ = [
    "CODE_NAME",
    "MAX_ATTEMPT",
    "MAX_DEPTH",
    "MAX_DURATION",
    "MAX_ERROR_TYPE_CHARS",
    "MAX_FILTER_CHARS",
    "MAX_FILTER_DEPTH",
    "MAX_HOST_BYTES",
    "MAX_INT",
    "MAX_LEASE_BATCH",
    "MAX_LONG_POLL",
    "MAX_NAME_BYTES",
    "MAX_PAGE",
    "MAX_PARTITION_BYTES",
    "MAX_PID",
    "MAX_PID_START_CHARS",
    "MAX_POSITION",
    "MAX_PROJECTION_WAIT",
    "MAX_REASON_BYTES",
    "MAX_RUN_WAIT",
    "MAX_SEQ",
    "MAX_STEP_ID_BYTES",
    "MAX_STEP_NAME_CHARS",
    "MAX_TIMESTAMP",
    "MAX_TRACESTATE_CHARS",
    "MAX_TTL",
    "MIN_INT",
    "MIN_TTL",
    "is_code_name",
    "utf8_size",
]

# -- ids and names ------------------------------------------------------------------------

#: Run, agent, event, worker, stream and projection ids; event names and triggers;
#: idempotency keys. In UTF-8 bytes, without NUL (a key separator).
MAX_NAME_BYTES = 200
#: A step id: a kind and a name (``tool.<name>``, ``wait.<event name>``,
#: ``spawn.<agent id>``) and a ``#N`` suffix for a repeated call. In UTF-8 bytes.
MAX_STEP_ID_BYTES = 300
#: The name in a step id chosen in code (a tool, an approval, an LLM call): short enough
#: that its step id and its event (``agent.approve.<name>``) stay within the id limits.
MAX_STEP_NAME_CHARS = 150
#: A partition key of a partitioned projection, in UTF-8 bytes ('' is the whole state).
MAX_PARTITION_BYTES = 250
#: Names chosen in code (agents, tools, projections, approvals, LLM calls): letters,
#: digits, '.', '_' and '-', starting with a letter or digit. So they read the same in a
#: step id, a URL and a shell.
CODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

# -- values -------------------------------------------------------------------------------

#: How deeply a stored value (event data, a step's input or output, a projection's state)
#: may nest lists and objects. The stored format's JSON encoder stops at 255 levels, and
#: a record wraps a value in a few of its own.
MAX_DEPTH = 200
#: Integers JSON readers (ours included) hold without turning them into floats.
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
#: A step's position in its run (four bytes of a key; the largest value is kept free).
MAX_POSITION = 2**32 - 2
#: How many times a run may be leased.
MAX_ATTEMPT = 2**31 - 1
#: Positions in the event log, stream versions, projection positions, rebuild tickets.
MAX_SEQ = 2**63 - 1
#: The type name of a recorded exception, in characters.
MAX_ERROR_TYPE_CHARS = 1000
#: The reason given with an approval, in UTF-8 bytes.
MAX_REASON_BYTES = 4000
#: A W3C ``tracestate`` header kept with an event, in characters.
MAX_TRACESTATE_CHARS = 512
#: A flow filter expression, in characters.
MAX_FILTER_CHARS = 4096
#: How deeply a filter expression may nest (refused when parsed, so never a stack overflow).
MAX_FILTER_DEPTH = 64

# -- time -----------------------------------------------------------------------------------

#: The longest duration anything takes (a sleep, a timeout, a retry delay, an age to prune
#: at), in seconds: 100 years. Longer ones are a mistake, and a wake-up past year 9999
#: cannot be shown as a date.
MAX_DURATION = 100 * 365.25 * 86400.0
#: The latest time a record may hold, in seconds since the epoch: the end of year 9999.
MAX_TIMESTAMP = 253_402_300_799.0
#: A lease's time to live, in seconds.
MIN_TTL = 0.001
MAX_TTL = 86400.0
#: The longest one request waits at the server for work, in seconds.
MAX_LONG_POLL = 30.0
#: The longest one request waits at the server for a projection to advance, in seconds.
MAX_PROJECTION_WAIT = 30.0
#: The longest one request waits at the server for a run to finish, in seconds.
MAX_RUN_WAIT = 30.0

# -- counts -----------------------------------------------------------------------------------

#: The most items one read returns (runs, events, stream events, partitions asked for).
MAX_PAGE = 10_000
#: The most runs one lease request takes.
MAX_LEASE_BATCH = 1000

# -- who holds a lease --------------------------------------------------------------------------

#: A host name, in UTF-8 bytes (DNS allows 253).
MAX_HOST_BYTES = 255
#: A process id (a store probes a same-host holder with ``kill(pid, 0)``).
MAX_PID = 2**31 - 1
#: The process start time a worker reports from /proc, in characters.
MAX_PID_START_CHARS = 64


def utf8_size(value: Any) -> int | None:
    """The size of ``value`` in UTF-8 bytes; None if it is not a str UTF-8 can hold."""
    if not isinstance(value, str):
        return None
    if value.isascii():
        return len(value)
    try:
        return len(value.encode())
    except UnicodeEncodeError:  # a lone surrogate
        return None


def is_code_name(value: Any, max_chars: int = MAX_NAME_BYTES) -> TypeGuard[str]:
    """Whether ``value`` is a name chosen in code (:data:`CODE_NAME`) of at most ``max_chars``."""
    return isinstance(value, str) and len(value) <= max_chars and CODE_NAME.match(value) is not None
