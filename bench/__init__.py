"""`make bench`: Ironflow side by side with DBOS, LangGraph and the raw LMDB floor.

Run it with ``python -m bench`` (``--help`` for the options); docs/benchmarks.md says
what each workload measures and how to read the table.
"""
