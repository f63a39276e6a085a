"""`python -m bench`: a quick ironflow-only run end to end, and the target arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import _report, _spec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.process
def test_quick_ironflow_run_writes_a_complete_result(tmp_path: Path) -> None:
    """--quick --only ironflow measures every ironflow workload and writes JSON and Markdown."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "ironflow", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        # A few seconds on a quiet machine, minutes beside the rest of `make test` on a
        # loaded one: this only catches a hang, under the suite's 300 s per-test limit.
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Targets (issues 8, 20):" in proc.stdout
    assert "[1/1] per_step_us" in proc.stderr  # progress lines while it runs

    result = json.loads((out / "latest.json").read_text())
    assert result["systems"] == ["floor", "ironflow"]
    assert result["errors"] == []
    measured = result["samples"]
    for key in (
        "per_step_us",
        "three_step_runs_per_s",
        "concurrent_steps_per_s",
        "processes_steps_per_s",
        "replay_ms",
        "resume_s",
        "langgraph_saver_node_us",
        "import_ms",
    ):
        [value] = measured[key]["ironflow"]
        assert value is not None, key
        # import_ms is a difference of two noisy medians, and per_step_us and the saver row
        # with --quick one difference of two timings (a 20-step run less a 1-step run, one
        # rep): a scheduling hiccup in the shorter one makes either negative on a loaded
        # machine.
        if key not in ("import_ms", "per_step_us", "langgraph_saver_node_us"):
            assert value > 0, key
    assert measured["lmdb_commit_us"]["floor"][0] > 0

    rows = {r["key"]: r for r in result["rows"]}
    [sleeping_mb] = measured["sleeping_10k_mb"]["ironflow"]
    assert sleeping_mb is not None and "sleeping_10k_mb" in rows
    assert "dbos" not in rows["per_step_us"]["cells"]
    statuses = {t["name"]: t["status"] for t in result["targets"]}
    assert statuses["3-step runs/s vs DBOS (SQLite)"] == "not measured"
    # The verdicts written are the target arithmetic over the run's own samples.
    recomputed = _report.targets(result["samples"], result["params"])
    assert result["targets"] == [t.__dict__ | {"status": t.status()} for t in recomputed]
    [resume_s] = measured["resume_s"]["ironflow"]
    assert statuses["resume after kill -9"] == ("met" if resume_s < 0.5 else "NOT MET")
    # --quick replays 1,000 steps: the 10,000-step target is not judged on that.
    assert result["params"]["replay_ms"]["steps"] == 1000
    replay = next(t for t in result["targets"] if t["name"].startswith("replay of"))
    assert replay["status"] == "not measured" and "for 1,000 steps" in replay["measured"]
    timestamped = [p for p in out.glob("*.json") if p.name != "latest.json"]
    assert len(timestamped) == 1
    assert (out / "latest.md").read_text().startswith("Run ")


@pytest.mark.process
def test_quick_postgres_run_measures_its_rows_on_one_embedded_server(tmp_path: Path) -> None:
    """--only ironflow_pg starts one embedded PostgreSQL, runs its floor beside it, and
    writes the PostgreSQL table, the worker curve and issue 20's targets."""
    out = tmp_path / "results"
    keys = "pg_commit_us,per_step_us,three_step_runs_per_s," + ",".join(
        f"pg_workers_{n}_steps_per_s" for n in _spec.PG_WORKERS
    )
    argv = ["--quick", "--only", "ironflow_pg", "--workloads", keys, "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "latest.json").read_text())
    assert result["systems"] == ["pg_floor", "ironflow_pg"]
    measured = result["samples"]
    assert measured["pg_commit_us"]["pg_floor"][0] > 0
    assert measured["three_step_runs_per_s"]["ironflow_pg"][0] > 0
    for n in _spec.PG_WORKERS:
        assert measured[f"pg_workers_{n}_steps_per_s"]["ironflow_pg"][0] > 0
    statuses = {t["name"]: t["status"] for t in result["targets"]}
    assert statuses["PostgreSQL: per-step cost vs one INSERT commit"] in ("met", "NOT MET")
    assert statuses["PostgreSQL: 3-step runs/s vs DBOS (PostgreSQL)"] == "not measured"
    table = (out / "latest.md").read_text()
    assert "| workload | unit | ironflow (PostgreSQL) | PostgreSQL floor |" in table


def test_postgres_targets_compare_with_the_same_server() -> None:
    """Per step against the INSERT commit (paired), runs/s against DBOS on PostgreSQL, and
    a PostgreSQL peer's "Nx" against ironflow on PostgreSQL, not on LMDB."""
    samples: _report.Samples = {
        "pg_commit_us": {"pg_floor": [200.0, 400.0]},
        # paired ratios 1.5 and 2.0: median 1.75, over 1.5
        "per_step_us": {
            "ironflow_pg": [300.0, 800.0],
            "dbos_pg": [900.0, 900.0],
            "ironflow": [100.0, 100.0],
        },
        "three_step_runs_per_s": {"ironflow_pg": [90.0], "dbos_pg": [30.0]},
    }
    by_name = {t.name: t for t in _report.targets(samples)}
    step = by_name["PostgreSQL: per-step cost vs one INSERT commit"]
    assert step.met is False and step.measured.startswith("1.75x")
    assert by_name["PostgreSQL: 3-step runs/s vs DBOS (PostgreSQL)"].met is True  # 3.0x
    rows = {
        r["key"]: r for r in _report.rows(samples, {}, ["ironflow", "ironflow_pg", "dbos_pg"], {})
    }
    assert rows["per_step_us"]["cells"]["dbos_pg"]["ironflow_advantage"] == 900.0 / 550.0


def test_targets_report_met_and_the_gap_when_missed() -> None:
    """A target is met or not from medians, paired per repetition, and a miss names its gap."""
    samples: _report.Samples = {
        "lmdb_commit_us": {"floor": [300.0, 250.0, 400.0]},
        # paired ratios 1.2, 1.6 and 1.0: median 1.2, within 1.3
        "per_step_us": {"ironflow": [360.0, 400.0, 400.0]},
        "three_step_runs_per_s": {"ironflow": [400.0, None, 500.0], "dbos": [100.0, 100.0]},
        "concurrent_steps_per_s": {"ironflow": [2000.0]},
        "resume_s": {"ironflow": [0.2]},
        "import_ms": {"ironflow": [180.0]},
    }
    by_name = {t.name: t for t in _report.targets(samples)}

    assert by_name["per-step cost vs one raw LMDB sync commit"].met is True
    three = by_name["3-step runs/s vs DBOS (SQLite)"]
    assert three.met is False  # median 450 vs 100: 4.5x < 5x
    assert "need 500 runs/s" in three.gap
    assert by_name["3-step runs/s vs LangGraph (SQLite)"].met is None
    conc = by_name["16 concurrent runs: steps/s vs single-commit fsync rate"]
    assert conc.met is False  # 2,000 steps/s < 1e6 / 300 µs = 3,333 commits/s
    assert by_name["resume after kill -9"].met is True
    imp = by_name["import ironflow"]
    assert imp.met is False
    assert imp.gap == "30.0 ms over"
    assert by_name["replay of 10,000 recorded steps"].status() == "not measured"


def test_the_concurrent_target_is_judged_on_the_better_way_of_serving_and_names_it() -> None:
    """16 concurrent runs against the fsync rate: the in-process worker's row or the
    --processes command's, whichever is faster, named, the other shown beside it."""
    name = "16 concurrent runs: steps/s vs single-commit fsync rate"
    base: _report.Samples = {
        "lmdb_commit_us": {"floor": [300.0]},  # 3,333 commits/s
        "concurrent_steps_per_s": {"ironflow": [2000.0, 1800.0, 2200.0]},
    }

    def judged(samples: _report.Samples) -> _report.Target:
        return {t.name: t for t in _report.targets(samples)}[name]

    alone = judged(base)
    assert alone.met is False
    assert alone.measured == "0.60x with the in-process worker (2,000 vs 3,333 commits/s)"
    assert alone.gap == "need > 3,333 steps/s, have 2,000 (in-process worker)"

    faster = judged({**base, "processes_steps_per_s": {"ironflow": [3500.0, 3600.0, 3400.0]}})
    assert faster.met is True
    assert faster.measured == (
        "1.05x with the worker --processes (3,500 vs 3,333 commits/s; in-process worker 2,000)"
    )
    slower = judged({**base, "processes_steps_per_s": {"ironflow": [1500.0]}})
    assert slower.met is False and "with the in-process worker" in slower.measured
    assert "worker --processes 1,500" in slower.measured
    only = judged(
        {"lmdb_commit_us": {"floor": [300.0]}, "processes_steps_per_s": {"ironflow": [3500.0]}}
    )
    assert only.met is True and only.measured.startswith("1.05x with the worker --processes")


def test_the_replay_target_is_judged_only_on_a_replay_of_its_size() -> None:
    """10,000 recorded steps: judged; the smoke run's 1,000: measured, not judged."""
    samples: _report.Samples = {"replay_ms": {"ironflow": [40.0, 60.0, 50.0]}}
    name = "replay of 10,000 recorded steps"

    def judged(steps: int) -> _report.Target:
        by_name = {t.name: t for t in _report.targets(samples, {"replay_ms": {"steps": steps}})}
        return by_name[name]

    assert judged(10_000).met is True
    assert judged(10_000).measured == "50.0 ms"
    small = judged(1000)
    assert small.status() == "not measured"
    assert small.measured == "50.0 ms for 1,000 steps"
    slow: _report.Samples = {"replay_ms": {"ironflow": [150.0]}}
    [target] = [
        t for t in _report.targets(slow, {"replay_ms": {"steps": 10_000}}) if t.name == name
    ]
    assert target.met is False and target.gap == "50.0 ms over"


def test_advantage_reads_the_same_way_for_rates_and_costs() -> None:
    """'Nx' is how many times better ironflow is, whether higher or lower is better."""
    rate = _spec.BY_KEY["three_step_runs_per_s"]
    cost = _spec.BY_KEY["per_step_us"]
    assert _report.advantage(rate, 500.0, 100.0) == 5.0
    assert _report.advantage(cost, 400.0, 2000.0) == 5.0


def test_workloads_picks_rows_by_key_and_names_the_keys_when_one_is_unknown(
    tmp_path: Path,
) -> None:
    """--workloads runs those rows only; an unknown key is refused with the list of keys."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--workloads", "per_step_us,nope", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--workloads: unknown workload(s) nope; the keys are lmdb_commit_us," in proc.stderr
    assert "langgraph_saver_node_us" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before anything ran

    samples: _report.Samples = {"langgraph_saver_node_us": {"ironflow": [900.0]}}
    rows = _report.rows(samples, {}, ["floor", "ironflow"], _spec.params(quick=False))
    assert [r["key"] for r in rows] == ["langgraph_saver_node_us"]
    assert rows[0]["title"].startswith("LangGraph agent loop, 100 nodes, durable: per node")
    assert rows[0]["cells"]["ironflow"]["median"] == 900.0


def test_the_saver_row_sets_each_checkpointer_against_ironflows() -> None:
    """The LangGraph column's SqliteSaver is compared with IronflowSaver on LMDB, and
    PostgresSaver with IronflowSaver on PostgreSQL."""
    row = _spec.BY_KEY["langgraph_saver_node_us"]
    assert row.systems == tuple(_spec.LANGGRAPH_SAVERS)
    assert row.systems == ("ironflow", "langgraph", "ironflow_pg", "langgraph_pg")
    assert "IronflowSaver on LMDB vs SqliteSaver" in row.title
    assert "IronflowSaver on PostgreSQL vs PostgresSaver" in row.title
    samples: _report.Samples = {
        "langgraph_saver_node_us": {
            "ironflow": [1000.0, 1200.0],
            "langgraph": [3000.0, 3000.0],
            "ironflow_pg": [2000.0],
            "langgraph_pg": [1000.0],
        }
    }
    systems = ["floor", "ironflow", "langgraph", "ironflow_pg", "langgraph_pg"]
    [r] = _report.rows(samples, {}, systems, _spec.params(False))
    assert r["cells"]["langgraph"]["ironflow_advantage"] == 3000.0 / 1100.0
    assert r["cells"]["langgraph_pg"]["ironflow_advantage"] == 0.5
