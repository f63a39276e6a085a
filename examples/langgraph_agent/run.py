"""Run the weather graph on a thread, or resume it from its last checkpoint.

::

    python -m examples.langgraph_agent.run --thread weather-oslo --city oslo

The checkpointer is ``IronflowSaver()``: the store the ``ironflow`` command would open
(``IRONFLOW_URL``, else ``IRONFLOW_DATA_DIR``, else ``./.ironflow``), or the data
directory ``--data-dir`` names. A thread without a
checkpoint starts from the question; a thread whose last checkpoint still has nodes to
run resumes there (``graph.invoke(None, config)``), so the same command, run again after
a crash, finishes the graph without running again the nodes that completed. Durable
mode: each node's checkpoint is stored before the next node starts. The last line
printed is the answer as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from examples.langgraph_agent.graph import build, question
from ironflow import LmdbStore
from ironflow.contrib.langgraph import IronflowSaver


def answer(values: dict[str, Any]) -> Any:
    """The graph's answer: the JSON its last message holds."""
    return json.loads(str(values["messages"][-1].content))


def run(saver: IronflowSaver, thread: str, city: str) -> Any:
    """Start the thread, or resume it from its last checkpoint, or read its answer."""
    graph = build(saver)
    config: Any = {"configurable": {"thread_id": thread}}
    state = graph.get_state(config)
    if not state.values:
        print(f"thread {thread}: new, asking about {city}", flush=True)
        inputs: Any = question(city)
    elif state.next:
        done = len(state.values["messages"])
        print(
            f"thread {thread}: resuming before {', '.join(state.next)} "
            f"({done} messages checkpointed)",
            flush=True,
        )
        inputs = None
    else:
        print(f"thread {thread}: already answered", flush=True)
        return answer(state.values)
    return answer(graph.invoke(inputs, config, durability="sync"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.langgraph_agent.run",
        description="Run the LangGraph weather graph on a thread checkpointed by IronflowSaver, "
        "or resume the thread from its last checkpoint.",
    )
    parser.add_argument(
        "--thread", default="weather-oslo", help="the LangGraph thread_id (default weather-oslo)"
    )
    parser.add_argument(
        "--city", default="oslo", help="the question, for a new thread (default oslo)"
    )
    parser.add_argument(
        "--data-dir",
        help="the Ironflow data directory holding the checkpoints (default: the store the "
        "ironflow command would open: IRONFLOW_URL, else IRONFLOW_DATA_DIR, else ./.ironflow)",
    )
    args = parser.parse_args(argv)
    if args.data_dir:
        with LmdbStore(args.data_dir) as store:
            result = run(IronflowSaver(store), args.thread, args.city)
    else:
        with IronflowSaver() as saver:
            result = run(saver, args.thread, args.city)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
