"""The Ironflow workloads, all on an LmdbStore with fsync on (its default, ``sync=True``).

How runs are executed: events are emitted, then a :class:`~ironflow.Worker` in this
process serves them with ``run(until_idle=True)``, which returns once no run is left.
Both the emits and the worker are inside the timed span, so a run's cost is the whole
of it: the event and its run created (one commit), the run leased (one commit), each
step recorded (one commit each), the run finished (one commit).
"""

from __future__ import annotations

import concurrent.futures
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any, cast

from bench import _agents
from bench._proc import Lines, free_port
from ironflow import AgentContext, LmdbStore, Store, Worker
from ironflow._agent._dsl import AgentDefinition, definitions_in
from ironflow._worker._identity import this_worker
from ironflow.replay._engine import Execution
from ironflow.store import AgentSpec, WorkerInfo

_DEFS = definitions_in(vars(_agents))
_SPECS = [AgentSpec(id=d.id, triggers=d.triggers, description=d.description) for d in _DEFS]
_THREE = AgentDefinition.must_from_fn(_agents.three_steps)
_STEPS = AgentDefinition.must_from_fn(_agents.k_steps)


def _fresh(workdir: str, prefix: str) -> str:
    os.makedirs(workdir, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=workdir)


def _open(path: str, *, sync: bool = True) -> LmdbStore:
    store = LmdbStore(path, sync=sync)
    # Emits before the first Worker.run must already create runs.
    store.register_agents(_SPECS)
    return store


def _serve(store: Store, agent: AgentDefinition, concurrency: int = 1) -> None:
    Worker([agent], store=store, concurrency=concurrency).run(until_idle=True, ready_message=False)


def _emit_all(store: Store, event: str, datas: list[Any], clients: int) -> list[str]:
    """Emit one event per item of ``datas`` from ``clients`` threads at once (as that many
    web requests would), each emit durable before its thread goes on; the run ids."""
    if clients <= 1:
        return [rid for data in datas for rid in store.emit(event, data).run_ids]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda data: store.emit(event, data), datas))
    return [rid for result in results for rid in result.run_ids]


def _timed_runs(
    store: Store,
    agent: AgentDefinition,
    event: str,
    datas: list[Any],
    concurrency: int = 1,
    observers: Callable[[], list[Any]] | None = None,
    cpu: list[float] | None = None,
) -> float:
    """Seconds to emit one event per item of ``datas`` and serve every run to completion.

    With ``concurrency`` above 1 the events are emitted by that many clients at once.
    ``cpu``, if given, gets the process's CPU seconds (user and system) over the span.
    """
    watching = observers() if observers is not None else []
    worker = Worker([agent], store=store, concurrency=concurrency, observers=watching)
    c0 = _cpu_s()
    t0 = time.perf_counter()
    run_ids = _emit_all(store, event, datas, concurrency)
    worker.run(until_idle=True, ready_message=False)
    dt = time.perf_counter() - t0
    if cpu is not None:
        cpu.append(_cpu_s() - c0)
    not_done = [r for r in run_ids if store.get_run(r).status != "completed"]
    if not_done or len(run_ids) != len(datas):
        raise RuntimeError(f"{len(not_done)} of {len(run_ids)} runs did not complete")
    return dt


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def three_step_runs_per_s(workdir: str, n_runs: int) -> float:
    """Sequential 3-step runs (worker concurrency 1), emit to finish, in runs/s.

    One untimed warm-up run first, as for the peers.
    """
    store = _open(_fresh(workdir, "if-three-"))
    try:
        _timed_runs(store, _THREE, "bench.three", [{"i": -1}])
        dt = _timed_runs(store, _THREE, "bench.three", [{"i": i} for i in range(n_runs)])
    finally:
        store.close()
    return n_runs / dt


def _per_step_us(
    store: Store, steps: int, reps: int, observers: Callable[[], list[Any]] | None = None
) -> float:
    _timed_runs(store, _STEPS, "bench.steps", [{"n": 1}], observers=observers)
    samples = []
    for _ in range(reps):
        t_many = _timed_runs(store, _STEPS, "bench.steps", [{"n": steps}], observers=observers)
        t_one = _timed_runs(store, _STEPS, "bench.steps", [{"n": 1}], observers=observers)
        samples.append((t_many - t_one) / (steps - 1) * 1e6)
    return statistics.median(samples)


def per_step_us(workdir: str, steps: int, reps: int) -> float:
    """Marginal cost of one recorded step, in µs: median over ``reps`` of (t_n - t_1)/(n - 1).

    Differencing a run of ``steps`` steps against a 1-step run cancels the per-run
    costs (emit, lease, finish, worker start).
    """
    store = _open(_fresh(workdir, "if-steps-"))
    try:
        return _per_step_us(store, steps, reps)
    finally:
        store.close()


def _tracing() -> list[Any]:
    """A Tracing observer as a worker runs it: spans batched to an exporter (one that
    drops them here, so the row measures Ironflow's side, not a collector's)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from ironflow.contrib.otel import Tracing

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    return [Tracing(tracer_provider=provider)]


def observed_step_us(workdir: str, steps: int, reps: int, observe: str) -> float | dict[str, str]:
    """Per-step cost with fsync off (the engine's own CPU path, which an observer adds to),
    with no observer (``none``: what a worker without the extras pays) or with tracing."""
    factory: Callable[[], list[Any]] | None = None
    if observe == "tracing":
        try:
            import opentelemetry.sdk  # noqa: F401
        except ImportError:
            return {"skipped": "the otel extra is not installed"}
        factory = _tracing
    store = _open(_fresh(workdir, f"if-observe-{observe}-"), sync=False)
    try:
        return _per_step_us(store, steps, reps, factory)
    finally:
        store.close()


def observer_off_ns(loops: int) -> float:
    """What the engine's observer hooks cost an executed step when no observer is
    configured, in ns: ``Execution.run_blocking`` (the hooks, then the step) less its
    body ``_execute_blocking`` alone, both on a store that records in no time, best of
    the median over rounds of 1,000 steps (``loops`` steps in all)."""
    from ironflow.replay._recorded import _Slot
    from ironflow.store import Event, Lease, LeasedRun, Run, StepAck, StepRecord

    class Instant:
        def record_step(self, worker: WorkerInfo, step: StepRecord) -> StepAck:
            return StepAck()

    me = this_worker()
    run = Run("run_x", "a", "running", Event("e", "n", {}, 0.0), 0.0, 0.0, attempt=1)
    execution = Execution(cast(Store, Instant()), me, LeasedRun(run, (), Lease("run_x", me, 0.0)))
    slot = _Slot(0, "tool.x", None, None)

    def step() -> int:
        return 1

    hooked, bare = execution.run_blocking, execution._execute_blocking
    rounds = max(1, loops // 1000)
    differences = []
    for _ in range(rounds):  # short rounds, interleaved: noise lands on both sides
        t0 = time.perf_counter_ns()
        for _ in range(1000):
            hooked(slot, step, (), {}, int)
        t1 = time.perf_counter_ns()
        for _ in range(1000):
            bare(slot, step, (), {}, int, None, None)
        t2 = time.perf_counter_ns()
        differences.append(((t1 - t0) - (t2 - t1)) / 1000)
    return statistics.median(differences)


def _concurrent(workdir: str, runs: int) -> tuple[float, float]:
    """Seconds and process CPU seconds to serve ``runs`` 3-step runs at once."""
    store = _open(_fresh(workdir, "if-conc-"))
    try:
        _timed_runs(store, _THREE, "bench.three", [{"i": -1}])
        cpu: list[float] = []
        dt = _timed_runs(
            store,
            _THREE,
            "bench.three",
            [{"i": i} for i in range(runs)],
            concurrency=runs,
            cpu=cpu,
        )
    finally:
        store.close()
    return dt, cpu[0]


def concurrent_steps_per_s(workdir: str, runs: int) -> float:
    """``runs`` 3-step runs served at once (worker concurrency = runs): durable steps/s.

    The emits are inside the timed span, by ``runs`` clients at once; LmdbStore
    group-commits the concurrent emits and step records, each still on disk before its
    caller continues.
    """
    dt, _ = _concurrent(workdir, runs)
    return runs * 3 / dt


def concurrent_cpu_ms_per_run(workdir: str, runs: int) -> float:
    """The same span as :func:`concurrent_steps_per_s`: the process's CPU (user and
    system, every thread) per run, in ms. On 2 cores, above about 2 x the span per run
    the row is bound by CPU, not by the disk."""
    _, cpu = _concurrent(workdir, runs)
    return cpu / runs * 1e3


def _worker_argv(data_dir: str, *options: str) -> list[str]:
    """``ironflow worker bench._agents`` on ``data_dir``, ``options`` (``--processes 2``...)
    before ``--data-dir``, which stays last: the serve rows cut it off."""
    argv = [sys.executable, "-m", "ironflow.run", "worker", "bench._agents", *options]
    return [*argv, "--data-dir", data_dir]


def _served_batch(store: Store, runs: int, timeout: float) -> float:
    """Seconds from emitting ``runs`` 3-step runs (``runs`` clients at once) until a live
    worker process has completed every one; this process waits through the store's
    wake-ups, which a finish written by another process into the data directory sets."""
    deadline = time.monotonic() + timeout
    t0 = time.perf_counter()
    run_ids = _emit_all(store, "bench.three", [{"i": i} for i in range(runs)], runs)
    for run_id in run_ids:
        run = store.wait_for_run(run_id, timeout=max(0.0, deadline - time.monotonic()))
        if run.status != "completed":
            raise RuntimeError(f"run {run_id} is {run.status} after {timeout:g} s")
    dt = time.perf_counter() - t0
    if len(run_ids) != runs:
        raise RuntimeError(f"{runs} emits started {len(run_ids)} runs")
    return dt


def processes_steps_per_s(
    workdir: str, runs: int, processes: int, concurrency: int, timeout: float = 60.0
) -> float:
    """``runs`` 3-step runs at once, served by a live ``ironflow worker --processes
    N --concurrency C`` command (N worker processes, so N GILs, on one data directory,
    fsync on): durable steps/s.

    Timed as :func:`concurrent_steps_per_s` is, from the ``runs`` emits (``runs``
    clients at once, in this process) until every run is completed, after one untimed
    warm-up batch; the worker's start-up is outside the span, as a deployed worker's is.
    """
    data_dir = _fresh(workdir, "if-procs-")
    store = _open(data_dir)
    worker = None
    try:
        options = ("--processes", str(processes), "--concurrency", str(concurrency))
        worker = Lines(_worker_argv(data_dir, *options))
        worker.wait_for("bench-", timeout)  # "... worker ready (pid N)": every child serves
        _served_batch(store, runs, timeout)
        dt = _served_batch(store, runs, timeout)
    finally:
        if worker is not None:
            worker.kill(signal.SIGTERM)  # the supervisor's pid: it drains its children
        store.close()
    return runs * 3 / dt


def resume_s(workdir: str, timeout: float = 60.0) -> float:
    """Seconds from spawning a fresh worker process to the first resumed step beginning.

    A first worker runs the resume agent and is killed with SIGKILL while step 2
    executes (step 1 recorded). The clock starts just before the second worker is
    spawned, so interpreter start, imports, opening the store, finding the orphan and
    replaying step 1 are all inside it; step 2 prints ``time.time()`` when it begins.
    """
    data_dir = _fresh(workdir, "if-resume-")
    store = _open(data_dir)
    try:
        run_id = store.emit("bench.resume", {"tag": "r"}).run_ids[0]
    finally:
        store.close()
    first = second = None
    try:
        first = Lines(_worker_argv(data_dir))
        first.wait_for("HOLD_BEGIN attempt=1", timeout)
        first.kill(signal.SIGKILL)

        t0 = time.time()
        second = Lines(_worker_argv(data_dir))
        line = second.wait_for("HOLD_BEGIN attempt=2", timeout)
        elapsed = float(line.rsplit("t=", 1)[1]) - t0

        # The run must finish, with step 1 taken from the record, not run again.
        store = LmdbStore(data_dir)
        try:
            deadline = time.monotonic() + timeout
            while store.get_run(run_id).status != "completed":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run {run_id} did not complete after resuming")
                store.wait_for_work(0.02)
        finally:
            store.close()
        if any(s.startswith("FIRST_RAN") for s in second.seen()):
            raise RuntimeError("step 1 ran again on resume instead of replaying its record")
        return elapsed
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill(signal.SIGKILL)


_replay_built: dict[tuple[str, int], str] = {}


def _build_replay(workdir: str, steps: int) -> str:
    """A data dir holding one pending run of ``steps`` + 1 steps, the first ``steps`` recorded.

    Written directly with ``record_step`` and fsync off (the build is not what we
    time), then the run is handed back as pending.
    """
    key = (workdir, steps)
    if key in _replay_built:
        return _replay_built[key]
    from ironflow.store import StepRecord

    data_dir = _fresh(workdir, "if-replay-")
    store = _open(data_dir, sync=False)
    try:
        builder = this_worker("bench-builder")
        store.emit("bench.steps", {"n": steps + 1})
        [leased] = store.lease_runs(builder, [_STEPS.id], limit=1, ttl=600)
        rid = leased.run.id
        now = time.time()
        for i in range(steps):
            store.record_step(
                builder,
                StepRecord(
                    run_id=rid,
                    position=i,
                    id="tool.noop" if i == 0 else f"tool.noop#{i + 1}",
                    status="completed",
                    input={"i": i},
                    output={"i": i, "ok": 1},
                    started_at=now,
                    ended_at=now,
                ),
            )
        store.release_run(builder, rid, attempt=1)
    finally:
        store.close()
    _replay_built[key] = data_dir
    return data_dir


def replay_ms(workdir: str, steps: int) -> float:
    """Milliseconds to bring a run with ``steps`` recorded steps back to its next step.

    Timed: leasing the run (one commit, which also reads every step record) and
    re-executing the handler through the engine, each recorded step returning its
    record, until the first unrecorded step begins. The engine's drain check stops
    the handler exactly there, so nothing is recorded and the run is handed back for
    the next repetition.
    """
    data_dir = _build_replay(workdir, steps)
    store = LmdbStore(data_dir)
    try:
        me = this_worker("bench-replayer")
        stop_at_next = threading.Event()
        stop_at_next.set()
        t0 = time.perf_counter()
        [leased] = store.lease_runs(me, [_STEPS.id], limit=1, ttl=600)
        execution = Execution(store, me, leased, stopping=stop_at_next)
        ctx = AgentContext(execution, _STEPS)
        outcome = execution.execute(lambda: _STEPS.fn(ctx))
        dt = time.perf_counter() - t0
        if outcome.status != "released" or execution.steps_replayed != steps:
            raise RuntimeError(
                f"replay ended {outcome.status} after {execution.steps_replayed} replayed "
                f"steps; expected released after {steps}"
            )
        execution.settle(outcome)
    finally:
        store.close()
    return dt * 1e3


def _ironflow_cmd() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "ironflow")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "ironflow._cli._main"]


def serve_available() -> str | None:
    """None if ``ironflow serve`` and the remote store exist, else why not."""
    import importlib.util

    if importlib.util.find_spec("ironflow.store._remote") is None:
        return "needs ironflow serve (issue 3)"
    probe = subprocess.run(
        [*_ironflow_cmd(), "serve", "--help"],
        capture_output=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return None if probe.returncode == 0 else "needs ironflow serve (issue 3)"


def _direct_run(store: Store, me: WorkerInfo, steps: int) -> float:
    """Seconds to emit a run of ``steps`` steps, lease it and execute it to completion.

    The engine driven directly, as the Worker drives it, minus the Worker's idle
    detection: through a server, finding that no run is left is a long poll, which
    would add its wait to every timed run.
    """
    t0 = time.perf_counter()
    store.emit("bench.steps", {"n": steps})
    [leased] = store.lease_runs(me, [_STEPS.id], limit=1, ttl=60)
    execution = Execution(store, me, leased)
    ctx = AgentContext(execution, _STEPS)
    outcome = execution.execute(lambda: _STEPS.fn(ctx))
    execution.settle(outcome)
    dt = time.perf_counter() - t0
    if outcome.status != "completed":
        raise RuntimeError(f"run ended {outcome.status}: {outcome.error}")
    return dt


def remote_per_step_us(workdir: str, steps: int, reps: int, timeout: float = 30.0) -> float:
    """Marginal cost of one recorded step through ``ironflow serve --dev`` on loopback, in µs.

    The server runs in its own process on a fresh data dir; this process reaches it
    through ``IRONFLOW_URL``, as a worker on another machine would, and drives the
    engine directly (see :func:`_direct_run`). Same differencing as :func:`per_step_us`.
    """
    from ironflow.store._open import open_store

    data_dir = _fresh(workdir, "if-remote-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [*_ironflow_cmd(), "serve", "--dev", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--data-dir", data_dir]
    server = Lines(argv, stderr=subprocess.DEVNULL)
    saved = os.environ.get("IRONFLOW_URL")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v1/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if server.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ironflow serve did not come up on {url}")
            time.sleep(0.05)
        os.environ["IRONFLOW_URL"] = url
        store = open_store()
        try:
            store.register_agents(_SPECS)
            me = this_worker("bench-remote")
            _direct_run(store, me, 1)
            samples = []
            for _ in range(reps):
                t_many = _direct_run(store, me, steps)
                t_one = _direct_run(store, me, 1)
                samples.append((t_many - t_one) / (steps - 1) * 1e6)
            return statistics.median(samples)
        finally:
            store.close()
    finally:
        if saved is None:
            os.environ.pop("IRONFLOW_URL", None)
        else:
            os.environ["IRONFLOW_URL"] = saved
        server.kill(signal.SIGTERM)


def cleanup(workdir: str) -> None:
    shutil.rmtree(workdir, ignore_errors=True)


def _rss_mb() -> float:
    """The process's own resident memory (RssAnon): LMDB's mapped file pages are the
    kernel's page cache, shared and reclaimable, so they are not counted."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def sleeping_mb(workdir: str, runs: int) -> float:
    """MB of its own memory a worker gains while ``runs`` runs sleep.

    The runs are emitted and served until each is suspended in the store (status
    ``sleeping``); what the worker process holds then, minus what it held before, is
    the cost. fsync is off here: this measures memory, not the disk.
    """
    store = _open(_fresh(workdir, "if-sleep-"), sync=False)
    try:
        worker = Worker([_agents.sleeper], store=store, concurrency=16)
        before = _rss_mb()
        for i in range(runs):
            store.emit("bench.sleep", {"i": i})
        worker.run(until_idle=True, ready_message=False)
        after = _rss_mb()
        sleeping = len(store.list_runs(limit=runs + 1, status="sleeping"))
        if sleeping != runs:
            raise RuntimeError(f"{sleeping} of {runs} runs are sleeping")
    finally:
        store.close()
    return after - before


def _latencies(store: Store, n: int, timeout: float) -> list[float]:
    """Milliseconds from each emit to its run completed, ``n`` runs one after another.

    A short pause between runs lets the worker go idle first, as a worker waiting for
    a user's request would be; the first (warm-up) run is not counted.
    """
    out = []
    for i in range(n + 1):
        time.sleep(0.02)
        t0 = time.perf_counter()
        [run_id] = store.emit("bench.three", {"i": i}).run_ids
        run = store.wait_for_run(run_id, timeout=timeout)
        dt = time.perf_counter() - t0
        if run.status != "completed":
            raise RuntimeError(f"run {run_id} is {run.status} after {timeout:g} s")
        if i:
            out.append(dt * 1e3)
    return out


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"value": statistics.median(ordered), "p99": p99}


def emit_to_done_ms(workdir: str, runs: int, via: str, timeout: float = 30.0) -> dict[str, Any]:
    """Emit to completed for a 3-step run served by a live, idle worker *process*.

    ``via="local"``: this process and the worker open one data directory; ``via="serve"``:
    both reach ``ironflow serve`` through ``IRONFLOW_URL``. Median and p99, in ms.
    """
    data_dir = _fresh(workdir, f"if-latency-{via}-")
    env = dict(os.environ)
    server = None
    store: Store | None = None
    worker = None
    saved = os.environ.get("IRONFLOW_URL")
    try:
        if via == "serve":
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            argv = [*_ironflow_cmd(), "serve", "--dev", "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--data-dir", data_dir]
            server = Lines(argv, stderr=subprocess.DEVNULL)
            _wait_healthy(url, server, timeout)
            env["IRONFLOW_URL"] = url
            os.environ["IRONFLOW_URL"] = url
            from ironflow.store._open import open_store

            store = open_store()
            store.register_agents(_SPECS)
        else:
            env.pop("IRONFLOW_URL", None)
            store = _open(data_dir)
        argv = _worker_argv(data_dir)
        if via == "serve":
            argv = argv[: argv.index("--data-dir")]  # the worker reaches the server only
        worker = Lines(argv, env=env)
        worker.wait_for("bench-", timeout)  # "... worker ready (pid N)"
        return _percentiles(_latencies(store, runs, timeout))
    finally:
        if store is not None:
            store.close()
        if saved is None:
            os.environ.pop("IRONFLOW_URL", None)
        else:
            os.environ["IRONFLOW_URL"] = saved
        for proc in (worker, server):
            if proc is not None:
                proc.kill(signal.SIGTERM)


def _wait_healthy(url: str, server: Lines, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ironflow serve did not come up on {url}")
        time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (utime and stime of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_worker_cpu_pct(workdir: str, running: int, seconds: float, timeout: float = 60.0) -> float:
    """CPU of an idle worker process, in % of one core, while ``running`` runs are held.

    This process leases ``running`` runs of the worker's agents (a live holder on this
    host, TTL far away) and holds them; a worker process on the same data directory
    has nothing to do, and its CPU over ``seconds`` is what idling costs it.
    """
    data_dir = _fresh(workdir, "if-idle-")
    store = _open(data_dir, sync=False)
    worker = None
    try:
        for i in range(running):
            store.emit("bench.three", {"i": i})
        holder = this_worker("bench-holder")
        held = store.lease_runs(holder, [_THREE.id], limit=running, ttl=3600)
        if len(held) != running:
            raise RuntimeError(f"leased {len(held)} of {running} runs")
        worker = Lines(_worker_argv(data_dir))
        worker.wait_for("bench-", timeout)
        time.sleep(0.5)  # past start-up: imports, registration, the first looks
        pid = worker.proc.pid
        c0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = _cpu_seconds(pid), time.monotonic()
        if store.get_run(held[0].run.id).status != "running":
            raise RuntimeError("the idle worker took a run held by a live worker")
        return (c1 - c0) / (t1 - t0) * 100
    finally:
        if worker is not None:
            worker.kill(signal.SIGTERM)
        store.close()
