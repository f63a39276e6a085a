"""The seed tutorial as one command: ``make demo-agent-crash-resume``.

1. starts ``ironflow serve --dev`` in the background on a free port, with its own data dir;
2. starts the doc-processor worker through it (``IRONFLOW_URL``);
3. emits ``doc.received`` for doc-2 and ``kill -9``s the worker 1.5 s later, mid-OCR;
4. restarts the worker, waits for the run to finish, and checks the record: every step
   completed once, and the memory projection holds doc-2 as published;
5. does it again for doc-3, killing the worker once OCR has finished, and checks that
   the restarted worker does not run OCR again: it comes back from the record;
6. tears everything down. Any failed check exits non-zero.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
IRONFLOW = str(Path(sys.executable).with_name("ironflow"))
WORKER_MODULE = "examples.doc_processor.worker"
EXPECTED_STEPS = [
    "tool.ocr",
    "tool.classify",
    "tool.publish",
    "memory.append",
    "memory.append.wait",
]


class DemoFailed(Exception):
    pass


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)
    print(f"    ✓ {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise DemoFailed(f"timed out after {timeout:.0f}s waiting for {what}")


class Process:
    """A child process whose output is echoed with a prefix and kept for assertions."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str]) -> None:
        self.label = label
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            print(f"    {self.label} | {line}", flush=True)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def cli(env: dict[str, str], *argv: str) -> str:
    proc = subprocess.run(
        [IRONFLOW, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise DemoFailed(f"`ironflow {' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def emit(env: dict[str, str], doc_id: str, image: str) -> str:
    data = json.dumps({"docId": doc_id, "imageUrl": f"https://example.com/{image}"})
    print(f"    $ ironflow emit doc.received --data '{data}'", flush=True)
    out = cli(env, "emit", "doc.received", "--data", data)
    print("    " + out.strip().replace("\n", "\n    "), flush=True)
    run_ids = [line.split()[1] for line in out.splitlines() if line.startswith("run ")]
    check(len(run_ids) == 1, f"the event started one run ({run_ids[0] if run_ids else 'none'})")
    return run_ids[0]


def run_state(base: str, run_id: str) -> dict[str, Any]:
    return http_json(f"{base}/api/v1/runs/{run_id}")  # type: ignore[no-any-return]


def crash_and_resume(
    base: str,
    env: dict[str, str],
    doc_id: str,
    image: str,
    kill_when: Callable[[Process], bool],
    kill_note: str,
) -> tuple[Process, Process, dict[str, Any]]:
    worker = Process(
        "worker A", [sys.executable, "-m", "ironflow.run", "worker", WORKER_MODULE], env
    )
    wait_until("the worker to be ready", lambda: worker.saw("worker ready"), 30)
    run_id = emit(env, doc_id, image)
    wait_until(kill_note, lambda: kill_when(worker), 30)
    say(f"kill -9 the worker ({kill_note})")
    worker.kill9()
    print(f"    [1] + {worker.proc.pid} killed", flush=True)
    listing = json.loads(cli(env, "run", "list", "--limit", "1", "--json"))[0]
    check(
        listing["id"] == run_id and listing["status"] == "running" and listing["orphaned"],
        f"ironflow run list shows {run_id} as running (orphaned)",
    )
    say("restart the worker")
    resumed = Process(
        "worker B", [sys.executable, "-m", "ironflow.run", "worker", WORKER_MODULE], env
    )
    final = wait_until(
        "the run to finish",
        lambda: (lambda r: r if r["status"] in ("completed", "failed") else None)(
            run_state(base, run_id)
        ),
        60,
    )
    resumed.stop()
    return worker, resumed, final


def main() -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="ironflow-demo-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "IRONFLOW_URL": base,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    env.pop("IRONFLOW_DATA_DIR", None)
    children: list[Process] = []
    try:
        say(f"ironflow serve --dev on {base} (data in {data_dir})")
        server = Process(
            "serve",
            [IRONFLOW, "serve", "--dev", "--port", str(port), "--data-dir", str(data_dir)],
            env,
        )
        children.append(server)

        def healthy() -> bool:
            try:
                http_json(f"{base}/api/v1/health")
                return True
            except OSError:
                return False

        wait_until("the server's health check", healthy, 30)

        say("doc-2: emit, then kill -9 the worker 1.5 s in, during the 3-second OCR")
        emitted_at: list[float] = []

        def mid_ocr(worker: Process) -> bool:
            if not worker.saw("[ocr] extracting"):
                return False
            emitted_at.append(emitted_at[0] if emitted_at else time.monotonic())
            return time.monotonic() - emitted_at[0] >= 1.4

        first, second, final = crash_and_resume(
            base, env, "doc-2", "receipt.png", mid_ocr, "mid-OCR"
        )
        children += [first, second]
        check(final["status"] == "completed", f"the run completed: {final['output']}")
        check(
            [s["id"] for s in final["steps"]] == EXPECTED_STEPS,
            "steps " + ", ".join(EXPECTED_STEPS) + " recorded once each, in order",
        )
        check(all(s["status"] == "completed" for s in final["steps"]), "every step completed")
        check(
            first.count("[classify]") == 0 and second.count("[ocr]") == 1,
            "OCR was in flight when the worker died, so it ran again, once",
        )
        check(
            second.count("[classify]") == 1 and second.count("[publish]") == 1,
            "classify and publish ran once each",
        )

        say("doc-3: this time kill -9 the worker once OCR is done, as classify starts")
        first, second, final = crash_and_resume(
            base, env, "doc-3", "invoice.png", lambda w: w.saw("[classify]"), "after OCR"
        )
        children += [first, second]
        check(final["status"] == "completed", f"the run completed: {final['output']}")
        check(
            [s["id"] for s in final["steps"]] == EXPECTED_STEPS,
            "steps recorded once each, in order",
        )
        check(
            first.count("[ocr]") == 1 and second.count("[ocr]") == 0,
            "the restarted worker did not run OCR again: it replayed from the record",
        )
        check(first.count("[publish]") + second.count("[publish]") == 1, "publish ran exactly once")

        say(f"curl -s {base}/api/v1/projections/doc-processor-memory | jq '.state.state'")
        memory = http_json(f"{base}/api/v1/projections/doc-processor-memory")["state"]["state"]
        print("    " + json.dumps(memory, indent=2).replace("\n", "\n    "), flush=True)
        check(
            memory.get("doc-2", {}).get("status") == "published",
            "the projection holds doc-2 as published",
        )
        check(memory.get("doc-3", {}).get("category") == "invoice", "and doc-3 as an invoice")
        stream = http_json(f"{base}/api/v1/streams/agent-memory")
        events = stream["events"] if isinstance(stream, dict) else stream
        check(len(events) == 2, "the agent-memory stream holds exactly one event per run")
        say("demo passed: the runs survived kill -9 and resumed from the last completed step")
        return 0
    except DemoFailed as exc:
        print(f"\n\033[31mdemo FAILED: {exc}\033[0m", file=sys.stderr, flush=True)
        return 1
    finally:
        for child in reversed(children):
            child.stop()


if __name__ == "__main__":
    sys.exit(main())
