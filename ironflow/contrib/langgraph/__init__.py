"""LangGraph on Ironflow: ``IronflowSaver``, a checkpointer whose checkpoints are Ironflow
records (``pip install 'ironflow[langgraph]'``).

::

    from ironflow.contrib.langgraph import IronflowSaver

    graph = builder.compile(checkpointer=IronflowSaver())
    graph.invoke(inputs, {"configurable": {"thread_id": "order-42"}})

Each thread is the entity stream ``langgraph/thread/<thread_id>``; see
``ironflow/contrib/langgraph/_saver.py`` for how checkpoints map onto its events.
"""

from ironflow.contrib.langgraph._saver import IronflowSaver

__all__ = ["IronflowSaver"]
