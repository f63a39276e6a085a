"""An execution's step records by position: the leased ones and those it records.

The leased records stay as the store handed them over (a :class:`StepLog`, each
decoded when first read): replay asks :meth:`Recorded.entry` for what it checks at a
position, which for a record not yet decoded is its stored JSON fields. Everyone else
(the saga's undos, ``ctx.version``, the observers, contrib's tool-call bookkeeping)
sees a mapping of position to :class:`StepRecord`, as a dict would give it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ironflow.store import StepRecord
from ironflow.store._steplog import StepLog

__all__ = ["Recorded", "_Slot"]


class Recorded(Mapping[int, StepRecord]):
    """Position to record: the lease's log, and the steps this execution recorded."""

    __slots__ = ("_added", "_log")

    def __init__(self, log: StepLog) -> None:
        self._log = log
        #: Records written by this execution (never at a position the lease held).
        self._added: dict[int, StepRecord] = {}

    def entry(self, position: int) -> StepRecord | dict[str, Any] | None:
        """What replay checks at ``position``: the record, or its stored JSON fields
        (see :meth:`StepLog.fields`); None if nothing is recorded there."""
        added = self._added
        if added and position in added:
            return added[position]
        index = self._log.index_of(position)
        return None if index is None else self._log.fields(index)

    def __getitem__(self, position: int) -> StepRecord:
        added = self._added
        if added and position in added:
            return added[position]
        index = self._log.index_of(position)
        if index is None:
            raise KeyError(position)
        return self._log[index]

    def __setitem__(self, position: int, record: StepRecord) -> None:
        self._added[position] = record

    def __contains__(self, position: object) -> bool:
        if not isinstance(position, int):
            return False
        return position in self._added or self._log.index_of(position) is not None

    def __iter__(self) -> Iterator[int]:
        added = self._added
        for position in self._log.positions:
            if position not in added:
                yield position
        yield from added

    def __len__(self) -> int:
        log = self._log
        return len(log) + sum(1 for p in self._added if log.index_of(p) is None)


class _Slot:
    """One step call: its position, id and input, and what the record holds there.

    ``entry`` is what :meth:`Recorded.entry` gave (None: nothing is recorded there);
    ``record`` decodes it whole from ``recorded``, for whoever needs the record itself.
    """

    __slots__ = ("entry", "input", "position", "recorded", "step_id")

    def __init__(
        self,
        position: int,
        step_id: str,
        input: Any,
        entry: StepRecord | dict[str, Any] | None,
        recorded: Recorded | None = None,
    ) -> None:
        self.position = position
        self.step_id = step_id
        self.input = input
        self.entry = entry
        self.recorded = recorded

    @property
    def record(self) -> StepRecord | None:
        """The step's record, or None if this call is past the record."""
        entry = self.entry
        if entry is None or type(entry) is StepRecord:
            return entry
        assert self.recorded is not None, "a slot with stored fields comes from begin()"
        return self.recorded[self.position]
