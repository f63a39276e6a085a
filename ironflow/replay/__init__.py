"""Replay: run a handler against its recorded steps.

The engine sees storage only through the :class:`~ironflow.store.Store` protocol and
knows nothing of decorators; the DSL and the worker sit on top of it. Its machinery
(``Execution``, outcomes, retry policies) is private, imported from
``replay/_engine.py``, which builds ``Execution`` on the package's other modules; what
a user's code may ask of it is the step it is in.
"""

from ironflow.replay._engine import StepInfo, current_step

__all__ = ["StepInfo", "current_step"]
