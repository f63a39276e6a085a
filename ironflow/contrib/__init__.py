"""Integrations with other frameworks and tools, each behind its own extra.

- ``ironflow.contrib.langgraph``: ``IronflowSaver`` (``pip install 'ironflow[langgraph]'``)

Nothing here is imported by ``import ironflow``.
"""
