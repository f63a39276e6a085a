"""One worker process of the PostgreSQL worker curve: ``python -m bench._pg_worker URL``.

Opens a PostgresStore on URL, prints ``READY``, waits for a line on stdin, serves the
3-step agent (concurrency 1) until no run is left, prints ``DONE``.
"""

from __future__ import annotations

import sys

from bench import _agents
from ironflow import Worker
from ironflow._agent._dsl import AgentDefinition
from ironflow.store._postgres import PostgresStore


def main() -> int:
    agent = AgentDefinition.must_from_fn(_agents.three_steps)
    with PostgresStore(sys.argv[1]) as store:
        worker = Worker([agent], store=store, concurrency=1)
        print("READY", flush=True)
        sys.stdin.readline()
        worker.run(until_idle=True, ready_message=False)
        print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
