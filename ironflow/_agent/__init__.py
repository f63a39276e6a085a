"""The agent side: what user code touches inside a run.

Decorators that attach frozen definitions (``_dsl``, ``_flow``), the ``AgentContext``
and its primitives (sleep, waits, approvals, child runs, parallel branches, sagas,
versioning) and agent memory. It sits on the replay engine and sees storage only
through the ``Store`` protocol.
"""
