"""Versioning: ``ctx.patched("change-id")`` for changing an agent's code under live runs.

The Temporal approach. The first time a run reaches ``ctx.patched(id)`` under the new
code, the marker step ``patch.<id>`` is recorded (durably, before ``patched`` returns)
and the answer is True. On replay the record at that position decides: the marker
means the run took the new path (True, and the marker's position is consumed);
anything else means the run was recorded by the old code before the change (False,
and no position is taken, so the old path replays against its own record).
"""

from __future__ import annotations

import re

from ironflow.errors import DefinitionError
from ironflow.replay._engine import Execution

__all__ = ["Patches"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _true() -> bool:
    return True


class Patches:
    """The answers ``ctx.patched`` gave in this execution: one per change id."""

    def __init__(self, execution: Execution) -> None:
        self._execution = execution
        self._answers: dict[str, bool] = {}

    def patched(self, change_id: str) -> bool:
        """True if this run reaches this point under the new code; see the module doc.

        Asking again for the same id returns the first answer and takes no position.
        """
        self._execution.refuse_nesting(f"ctx.patched({change_id!r})")
        answer = self._answers.get(change_id)
        if answer is not None:
            return answer
        if not isinstance(change_id, str) or not _ID.match(change_id):
            raise DefinitionError(
                f"ctx.patched needs a change id of letters, digits, '.', '_' or '-', "
                f"not {change_id!r}"
            )
        execution = self._execution
        marker = f"patch.{change_id}"
        # The engine's next position: where the marker is, if this run has one here.
        position: int = execution._next_position
        record = execution.recorded.get(position)
        later = any(p > position for p in execution.recorded)
        if record is not None and record.id == marker:
            execution.replayed(execution.begin(marker, None), bool)
            answer = True
        elif record is None and not later:
            # Past the end of the history: new code reaches this point first.
            slot = execution.begin(marker, None)
            execution.run_blocking(slot, _true, (), {}, bool)
            answer = True
        else:
            # The old code recorded something else here (or a step in flight at a crash
            # left a hole; a marker is never one, being durable before anything after it).
            answer = False
        self._answers[change_id] = answer
        return answer
