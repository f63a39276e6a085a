"""A run's step records as a lease hands them over: each decoded when first read.

Leasing a run reads every step it has recorded, and a long run's replay meets each of
them once, needing of most no more than the step id, the input and the output. Turning
all of them into :class:`StepRecord` objects inside the lease's write transaction cost
about half of a 10,000-step replay, and left that many objects for the garbage
collector to walk (issue 13 target 6). A :class:`StepLog` keeps the stored bytes
instead (which the collector never walks) and decodes a record when someone reads it;
the engine reads only the fields it checks (:meth:`StepLog.fields`). Whoever reads
the records sees exactly the ones the store holds, in position order, as a tuple would
give them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

import orjson

from ironflow.errors import StoreCorruptedError

if TYPE_CHECKING:
    from ironflow.store._codec import RecordCodec
    from ironflow.store._records import StepRecord

__all__ = ["StepLog", "step_log_of"]

_STATUSES = frozenset({"completed", "failed"})
#: The fields replay reads, and those that say the record is the one asked for.
_NEEDED = frozenset({"run_id", "position", "id", "status", "input", "output"})


class StepLog(Sequence["StepRecord"]):
    """A run's step records in position order; a read-only sequence of :class:`StepRecord`.

    Built by the store from each record's position and stored bytes
    (:meth:`from_stored`), or from records already decoded (:meth:`of`: a remote
    store's answer, a history file). Compares equal to a tuple or list of the same
    records.
    """

    __slots__ = ("_codec", "_index", "_positions", "_raw", "_records", "_run_id")

    def __init__(
        self,
        positions: list[int],
        records: list[StepRecord | None],
        raw: list[bytes] | None = None,
        codec: RecordCodec | None = None,
        run_id: str = "",
    ) -> None:
        self._run_id = run_id
        self._positions = positions
        self._records = records
        self._raw = raw
        self._codec = codec
        # Positions are almost always 0..n-1, and then a position is its own index.
        contiguous = not positions or positions[-1] == len(positions) - 1
        self._index: dict[int, int] | None = (
            None if contiguous else {p: i for i, p in enumerate(positions)}
        )

    @classmethod
    def of(cls, steps: Iterable[StepRecord]) -> StepLog:
        """``steps`` (records in position order) as a log; a log is returned as it is."""
        if isinstance(steps, StepLog):
            return steps
        records: list[StepRecord | None] = list(steps)
        return cls([s.position for s in records if s is not None], records)

    @classmethod
    def from_stored(
        cls, run_id: str, positions: list[int], stored: list[bytes], codec: RecordCodec
    ) -> StepLog:
        """The run's stored records (``stored[i]`` at ``positions[i]``, ascending)."""
        return cls(positions, [None] * len(stored), stored, codec, run_id)

    # -- by position (the engine's view) -----------------------------------------------

    @property
    def positions(self) -> Sequence[int]:
        """The recorded positions, ascending."""
        return self._positions

    def index_of(self, position: int) -> int | None:
        """Where the record of ``position`` is in this sequence, or None if there is none."""
        index = self._index
        if index is None:
            return position if 0 <= position < len(self._positions) else None
        return index.get(position)

    def fields(self, index: int) -> StepRecord | dict[str, Any]:
        """The record at ``index``, or, not decoded yet, its stored JSON fields.

        The fields are a JSON object holding at least ``id`` (a string), ``input``,
        ``status`` (``completed`` or ``failed``) and ``output``, as stored; whatever
        lacks them is decoded whole (which names what is wrong). Nothing is kept: a
        replay reads each position once, and the garbage collector never sees them.
        """
        record = self._records[index]
        if record is not None:
            return record
        assert self._raw is not None
        try:
            data = orjson.loads(self._raw[index])
        except orjson.JSONDecodeError:
            return self[index]  # raises, naming the record
        if (
            type(data) is dict
            and data.keys() >= _NEEDED
            and data["position"] == self._positions[index]
            and data["run_id"] == self._run_id
            and type(data["id"]) is str
            and data["status"] in _STATUSES
        ):
            return data
        return self[index]

    # -- as a sequence of records --------------------------------------------------------

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, index: int) -> StepRecord: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[StepRecord, ...]: ...

    def __getitem__(self, index: int | slice) -> StepRecord | tuple[StepRecord, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        record = self._records[index]
        if record is None:
            record = self._records[index] = self._decode(index)
        return record

    def _decode(self, index: int) -> StepRecord:
        assert self._raw is not None and self._codec is not None
        position = self._positions[index]
        where = f"run {self._run_id}: the stored record of its step at position {position}"
        try:
            record: StepRecord = self._codec.decode(self._raw[index])
        except StoreCorruptedError as exc:
            raise StoreCorruptedError(f"{where} cannot be read: {exc}") from exc
        if record.position != position or record.run_id != self._run_id:
            raise StoreCorruptedError(
                f"{where} cannot be read: it says it is run {record.run_id}'s step at "
                f"position {record.position}"
            )
        return record

    def __iter__(self) -> Iterator[StepRecord]:
        for i in range(len(self._positions)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StepLog | tuple | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"StepLog({list(self)!r})"


def step_log_of(steps: Iterable[StepRecord]) -> StepLog:
    """``steps`` as a :class:`StepLog` (``LeasedRun.steps``'s converter: a function,
    since mypy's attrs plugin takes no classmethod as a converter)."""
    return StepLog.of(steps)
