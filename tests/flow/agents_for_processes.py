"""The agent two real worker processes serve in ``test_flow_processes.py``.

Its one step appends ``start``/``end`` lines with the key and the wall-clock time to the
file named by ``IRONFLOW_TEST_LOG``, so the test can see whether two runs of one key
ever ran at the same time, across processes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ironflow import AgentContext, agent


def _mark(what: str, key: str) -> None:
    with open(os.environ["IRONFLOW_TEST_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{what} {key} {time.time():.6f} {os.getpid()}\n")
        log.flush()


def _work(key: str) -> str:
    _mark("start", key)
    time.sleep(0.1)  # long enough that an unlimited second run would overlap
    _mark("end", key)
    return key


@agent(id="one-per-key", triggers=["job"], concurrency={"limit": 1, "key": "data.k"})
def one_per_key(ctx: AgentContext) -> Any:
    return ctx.step("work", _work, ctx.event.data["k"])
