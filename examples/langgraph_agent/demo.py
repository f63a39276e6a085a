"""``make demo-langgraph``: the LangGraph weather graph, killed with ``kill -9`` mid-graph
and resumed from its IronflowSaver checkpoint.

1. runs the graph in a process (``python -m examples.langgraph_agent.run``) on a fresh
   data directory; the ``convert`` tool, in the graph's fourth node, holds at a gate file;
2. when the process prints that ``convert`` started (``agent``, ``tools``, ``agent``
   completed and checkpointed), ``kill -9``s it by its pid, and reads the thread's last
   checkpoint: the messages up to the second model turn, ``tools`` next;
3. opens the gate and runs the same command again: it resumes from the checkpoint;
4. checks, from the side-effect log every node and tool appends to (with its process id):
   the second process ran only the node in flight (``tools``: ``convert``) and the one
   after it; over both processes every completed node ran once;
5. runs the graph uncrashed on another thread and checks that both threads end in the
   same checkpointed state and that the uncrashed run logged the same executions.
Any failed check exits non-zero.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from langchain_core.messages import ToolMessage

from examples._kill9 import DemoFailed, Process, check
from examples.langgraph_agent.graph import build
from ironflow import LmdbStore
from ironflow.contrib.langgraph import IronflowSaver

MODULE = "examples.langgraph_agent.run"
#: What each node and tool of an uncrashed run logs (lookup and forecast run in parallel).
UNCRASHED = Counter(
    [
        "[agent] ai-1",
        "[lookup] oslo",
        "[forecast] oslo",
        "[agent] ai-2",
        "[convert] start 12",
        "[convert] done 12",
        "[agent] ai-3",
    ]
)


def _graph_state(data_dir: Path, thread: str) -> Any:
    """The thread's last checkpoint, read through a saver of our own (no child is running)."""
    with LmdbStore(data_dir) as store:
        return build(IronflowSaver(store)).get_state({"configurable": {"thread_id": thread}})


def _plain(messages: list[Any]) -> list[dict[str, Any]]:
    """The messages as data; a tool message's id is a random uuid ``add_messages`` gives it."""
    return [m.model_dump(exclude={"id"} if isinstance(m, ToolMessage) else None) for m in messages]


def _logged(log: Path, pid: int | None = None) -> list[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [text for p, text in (line.split(" ", 1) for line in lines) if pid in (None, int(p))]


def _finish(label: str, process: Process) -> Any:
    code = process.wait()
    if code != 0:
        raise DemoFailed(f"{label} exited with {code}")
    return json.loads(process.lines[-1])


def main() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ironflow-langgraph-demo-"))
    data_dir, gate, log = tmp / "data", tmp / "gate", tmp / "nodes.log"
    argv = [MODULE, "--data-dir", str(data_dir), "--city", "oslo"]
    env = {"DEMO_LOG": str(log)}
    processes: list[Process] = []
    try:
        print(f"==> process 1 runs the graph, thread weather-oslo, checkpoints in {data_dir}")
        first = Process("process 1", [*argv, "--thread", "weather-oslo"], gate, env)
        processes.append(first)
        first.wait_for_line("[convert] start")
        print(f"==> kill -9 {first.proc.pid} (process 1), in the graph's fourth node", flush=True)
        first.kill9()
        state = _graph_state(data_dir, "weather-oslo")
        ids = [m.id for m in state.values.get("messages", [])]
        check(
            state.next == ("tools",) and ids[-1:] == ["ai-2"],
            f"its last checkpoint: {len(ids)} messages, the last {ids[-1:]}, next {state.next}",
        )
        before = _logged(log, first.proc.pid)

        gate.touch()  # the next convert goes through
        print("==> process 2: the same command, resuming from the checkpoint", flush=True)
        second = Process("process 2", [*argv, "--thread", "weather-oslo"], gate, env)
        processes.append(second)
        result = _finish("process 2", second)
        check(any("resuming before tools" in line for line in second.lines), "it resumed")
        again = _logged(log, second.proc.pid)
        check(
            again == ["[convert] start 12", "[convert] done 12", "[agent] ai-3"],
            f"process 2 ran only the node in flight and the one after: {again}",
        )
        total = Counter(before + again)
        check(
            total - Counter(["[convert] start 12"]) == UNCRASHED,
            "over both processes every node that completed ran once "
            "(only convert, killed in flight, started twice)",
        )

        print("==> process 3 runs the graph uncrashed, thread weather-oslo-uncrashed", flush=True)
        third = Process("process 3", [*argv, "--thread", "weather-oslo-uncrashed"], gate, env)
        processes.append(third)
        uncrashed = _finish("process 3", third)
        check(Counter(_logged(log, third.proc.pid)) == UNCRASHED, "it ran each node once")
        crashed_state = _graph_state(data_dir, "weather-oslo")
        clean_state = _graph_state(data_dir, "weather-oslo-uncrashed")
        check(
            _plain(crashed_state.values["messages"]) == _plain(clean_state.values["messages"])
            and crashed_state.next == clean_state.next == (),
            f"the crashed thread's final state equals the uncrashed one's "
            f"({len(clean_state.values['messages'])} messages)",
        )
        check(result == uncrashed, f"the same answer: {result}")
        shutil.rmtree(tmp, ignore_errors=True)  # kept when a check fails, to look at
        return dict(result)
    finally:
        for process in processes:
            process.stop()


if __name__ == "__main__":
    try:
        print(main())
    except DemoFailed as failed:
        sys.exit(f"demo failed: {failed}")
