"""``python -m bench.dashboard``: the dashboard's three targets, measured.

1. The runs page's first render with 100,000 runs stored: the server time of its JSON
   (``server_ms``, measured inside the handler) and the wall time of the request, for
   the first page, a rare status and a search; target under 200 ms of server time.
2. A run with 1,000 steps opens: server time of its JSON, and in Chromium the time
   from navigation until its 1,000 timeline rows are on the page; target under 1 s.
3. A status change reaches an open page: a run is cancelled in the store, and the time
   until the runs page in Chromium shows it cancelled; target within 1 s.

The store is filled with fsync off (setting up is not what is measured); the server
reads it as ``ironflow serve`` would. Chromium is Debian's (``/usr/bin/chromium``),
driven by Playwright; without them only the server-side numbers are taken.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from ironflow.server import BackgroundServer
from ironflow.store import AgentSpec, ErrorInfo, LmdbStore, StepRecord, WorkerInfo

WORKER = WorkerInfo(id="bench-worker", host="bench", pid=os.getpid())
RESULTS = Path(__file__).parent / "results" / "dashboard.json"


def fill(store: LmdbStore, runs: int, steps: int) -> str:
    """``runs`` runs (most completed, one in 500 failed, the newest 1,000 pending) and
    one run with ``steps`` steps; returns that run's id."""
    store.register_agents(
        [
            AgentSpec("doc-processor", ("doc.received",)),
            AgentSpec("mailer", ("mail.send",)),
            AgentSpec("pager", ("pages.scan",)),
        ]
    )
    started = time.perf_counter()
    for i in range(runs - 1):
        name = "mail.send" if i % 4 == 0 else "doc.received"
        store.emit(name, {"docId": f"doc-{i}", "imageUrl": f"https://example.com/{i}.png"})
        if i % 10_000 == 0:
            print(f"  {i:,} runs emitted", flush=True)
    finished = 0
    while finished < runs - 1_000:
        leased = store.lease_runs(
            WORKER, ["doc-processor", "mailer"], limit=min(1000, runs - 1_000 - finished), ttl=600
        )
        if not leased:
            break
        for lr in leased:
            failed = finished % 500 == 0
            store.finish_run(
                WORKER,
                lr.run.id,
                status="failed" if failed else "completed",
                output=None if failed else {"ok": True},
                error=ErrorInfo("RuntimeError", "boom") if failed else None,
                attempt=lr.lease.attempt,
            )
            finished += 1
    big = store.emit("pages.scan", {"docId": "the-big-one"}).run_ids[0]
    (leased,) = store.lease_runs(WORKER, ["pager"], limit=1, ttl=600)
    now = time.time()
    for p in range(steps):
        store.record_step(
            WORKER,
            StepRecord(
                run_id=big,
                position=p,
                id=f"tool.ocr#{p + 1}" if p else "tool.ocr",
                status="completed",
                input={"page": p},
                output={"text": f"page {p} text", "words": p * 3},
                started_at=now + p * 0.01,
                ended_at=now + p * 0.01 + 0.008,
                attempt=leased.lease.attempt,
            ),
        )
    store.finish_run(
        WORKER, big, status="completed", output={"pages": steps}, attempt=leased.lease.attempt
    )
    print(f"  filled in {time.perf_counter() - started:.1f} s", flush=True)
    return big


def get(url: str) -> tuple[float, Any]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = json.load(response)
    return (time.perf_counter() - started) * 1000, body


def median_of(url: str, reps: int) -> dict[str, float]:
    walls, servers = [], []
    for _ in range(reps):
        wall, body = get(url)
        walls.append(wall)
        servers.append(float(body["server_ms"]))
    return {
        "server_ms": round(statistics.median(servers), 2),
        "wall_ms": round(statistics.median(walls), 2),
        "server_ms_max": round(max(servers), 2),
    }


def browser_numbers(url: str, big: str, steps: int, store: LmdbStore, reps: int) -> dict[str, Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    if not os.path.exists("/usr/bin/chromium"):
        return {"skipped": "no /usr/bin/chromium (apt-get install chromium)"}
    from tests.dashboard.conftest import CHROMIUM_FLAGS

    out: dict[str, Any] = {}
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path="/usr/bin/chromium",
            headless=True,
            args=CHROMIUM_FLAGS,
            bypass_csp=True,  # the measuring scripts below are evaluated strings
        )
        page = context.new_page()
        opens = []
        for _ in range(reps):
            page.goto("about:blank")
            started = time.perf_counter()
            page.goto(f"{url}/#/runs/{big}")
            page.wait_for_function(
                f"document.querySelectorAll('#timeline .step-row:not(.head)').length >= {steps}",
                timeout=60_000,
            )
            opens.append((time.perf_counter() - started) * 1000)
        out["run_big_open_ms"] = round(statistics.median(opens), 1)
        page.goto(f"{url}/#/runs?status=pending")
        page.wait_for_selector("body[data-ready='1'] #runs-body tr[data-run-id]")
        latencies = []
        for _ in range(reps):
            run_id = page.get_attribute("#runs-body tr[data-status='pending']", "data-run-id")
            page.evaluate(
                """(id) => { window.__seen = null; const watch = new MutationObserver(() => {
                     const row = document.querySelector(`tr[data-run-id="${id}"]`);
                     if (!row || row.dataset.status === "cancelled") {
                       window.__seen = Date.now(); watch.disconnect(); } });
                   watch.observe(document.body, {subtree: true, childList: true,
                                                 attributes: true}); }""",
                run_id,
            )
            changed = time.time()
            store.request_cancel(run_id)
            page.wait_for_function("window.__seen !== null", timeout=30_000)
            latencies.append(page.evaluate("window.__seen") - changed * 1000)
        out["status_change_to_page_ms"] = round(statistics.median(latencies), 1)
        out["status_change_to_page_ms_max"] = round(max(latencies), 1)
        context.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="runs to store (100,000)")
    parser.add_argument("--steps", type=int, default=1000, help="steps of the big run (1,000)")
    parser.add_argument("--reps", type=int, default=10, help="repetitions per number (10)")
    parser.add_argument("--data-dir", help="keep the filled store here (reused if present)")
    parser.add_argument("--json", default=str(RESULTS), help=f"write results here ({RESULTS})")
    args = parser.parse_args(argv)
    workdir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp()) / "data"
    reuse = (workdir / "big-run").exists()
    store = LmdbStore(workdir, sync=False)
    try:
        if reuse:
            big = (workdir / "big-run").read_text()
        else:
            print(f"filling a store with {args.runs:,} runs ...", flush=True)
            big = fill(store, args.runs, args.steps)
            (workdir / "big-run").write_text(big)
        results: dict[str, Any] = {"runs": args.runs, "steps": args.steps}
        with BackgroundServer(store) as url:
            api = f"{url}/ui/api/runs"
            results["runs_first_page"] = median_of(f"{api}?limit=50", args.reps)
            results["runs_rare_status"] = median_of(f"{api}?limit=50&status=failed", args.reps)
            results["runs_search_value"] = median_of(f"{api}?limit=50&q=doc-4242", args.reps)
            results["runs_page_10"] = _deep_page(api, args.reps)
            results["run_big_json"] = median_of(f"{api}/{big}", args.reps)
            reps = max(3, args.reps // 2)
            results["browser"] = browser_numbers(url, big, args.steps, store, reps)
    finally:
        store.close()
    print(json.dumps(results, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _deep_page(api: str, reps: int) -> dict[str, float]:
    """The tenth page of 50, reached by following next_before as the page does."""
    before = ""
    for _ in range(9):
        _, body = get(f"{api}?limit=50{'&before=' + before if before else ''}")
        before = body["next_before"]
    return median_of(f"{api}?limit=50&before={before}", reps)


if __name__ == "__main__":
    raise SystemExit(main())
