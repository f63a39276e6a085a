"""Integrations with other frameworks and tools, each behind its own extra.

Each integration wraps a framework's own objects through the framework's public
extension points (a model wrapper, a toolset or tool wrapper), so the user's agent
code stays as it is: inside an Ironflow run its model requests and tool calls become
recorded steps; outside one the wrapped object behaves as the original.

- ``ironflow.contrib.langgraph``: ``IronflowSaver`` (``pip install 'ironflow[langgraph]'``)
- ``ironflow.contrib.pydantic_ai``: ``IronflowAgent`` (``pip install 'ironflow[pydantic-ai]'``)
- ``ironflow.contrib.openai_agents``: ``IronflowRunner`` (``pip install 'ironflow[openai-agents]'``)
- ``ironflow.contrib.otel``: ``Tracing``, traces of runs (``pip install 'ironflow[otel]'``)
- ``ironflow.contrib.prometheus``: ``Metrics``, ``StoreMetrics``
  (``pip install 'ironflow[prometheus]'``)

Nothing here is imported by ``import ironflow``.
"""
