"""Storage: the Store protocol the engine depends on, and its implementations.

The store knows nothing of replay or agents' code: it keeps events, runs, step records
and leases, and hands a worker a run together with every step recorded for it.

The public names are the protocol, its backends, and the records its methods take and
return. The machinery behind them (the codec, the state machine, the route table, the
liveness probe, the argument checks) lives in private modules.
"""

from ironflow._pure._trace import TraceContext
from ironflow.store._base import Store
from ironflow.store._lmdb import LmdbStore
from ironflow.store._postgres import PostgresStore
from ironflow.store._records import (
    FINISHED,
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
    StepTry,
    SuspendResult,
    Suspension,
    WorkerInfo,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ironflow.store._remote import RemoteStore

__all__ = [
    "FINISHED",
    "AgentSpec",
    "EmitResult",
    "ErrorInfo",
    "Event",
    "Lease",
    "LeasedRun",
    "LmdbStore",
    "PostgresStore",
    "ProjectionSpec",
    "ProjectionState",
    "ProjectionStatus",
    "ProjectionWrite",
    "PruneResult",
    "RemoteStore",
    "Run",
    "StepAck",
    "StepRecord",
    "StepTry",
    "Store",
    "SuspendResult",
    "Suspension",
    "TraceContext",
    "WorkerInfo",
]


def __getattr__(name: str) -> object:
    # RemoteStore pulls in the HTTP client stack; a local worker or `import ironflow`
    # should not pay for it.
    if name == "RemoteStore":
        from ironflow.store._remote import RemoteStore

        return RemoteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
