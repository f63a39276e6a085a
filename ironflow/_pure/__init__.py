"""Pure helpers: ids, durations, cron, filters, argument checks.

The bottom layer. These modules import nothing of Ironflow but ``ironflow.errors``, so
the store, the engine and the agent side can all use them.
"""
