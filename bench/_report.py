"""Turn the samples into the table: medians with min and max, ratios, targets, files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench._spec import LABELS, OURS, PEERS, PG_WORKERS, WORKLOADS, Workload

#: samples[workload][system] -> one value per repetition (None where that repetition failed)
Samples = dict[str, dict[str, list[float | None]]]
Notes = dict[str, dict[str, str]]


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


@dataclass(frozen=True)
class Cell:
    median: float
    min: float
    max: float
    n: int

    def text(self) -> str:
        if self.n == 1:
            return fmt(self.median)
        return f"{fmt(self.median)} [{fmt(self.min)}-{fmt(self.max)}]"


def cell(values: list[float | None] | None) -> Cell | None:
    xs = [v for v in values or [] if v is not None]
    if not xs:
        return None
    return Cell(statistics.median(xs), min(xs), max(xs), len(xs))


def advantage(w: Workload, ours: float, theirs: float) -> float:
    """How many times better ironflow is than a peer on this workload (> 1: ironflow wins)."""
    return ours / theirs if w.better == "higher" else theirs / ours


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: str
    #: True, False, or None when a number it needs was not measured.
    met: bool | None
    gap: str = ""

    def status(self) -> str:
        if self.met is None:
            return "not measured"
        return "met" if self.met else "NOT MET"


def _paired_ratio(samples: Samples, a: tuple[str, str], b: tuple[str, str]) -> Cell | None:
    """a / b per repetition (both measured in the same repetition), summarised."""
    xs = samples.get(a[0], {}).get(a[1], [])
    ys = samples.get(b[0], {}).get(b[1], [])
    return cell([x / y if x and y else None for x, y in zip(xs, ys, strict=False)])


#: The replay target is about this many recorded steps; a run that replayed fewer (the
#: ``--quick`` smoke run replays 1,000) does not judge it.
REPLAY_TARGET_STEPS = 10_000


def targets(samples: Samples, params: dict[str, dict[str, Any]] | None = None) -> list[Target]:
    """Each target, met or not from the medians; ``params`` are the workloads' parameters
    (a target about a workload run at another size is "not measured")."""

    def med(workload: str, system: str) -> float | None:
        c = cell(samples.get(workload, {}).get(system))
        return c.median if c else None

    out: list[Target] = []

    ratio = _paired_ratio(samples, ("per_step_us", "ironflow"), ("lmdb_commit_us", "floor"))
    step, commit = med("per_step_us", "ironflow"), med("lmdb_commit_us", "floor")
    if ratio is None or step is None or commit is None:
        out.append(Target("per-step cost vs one raw LMDB sync commit", "<= 1.3x", "-", None))
    else:
        out.append(
            Target(
                "per-step cost vs one raw LMDB sync commit",
                "<= 1.3x",
                f"{ratio.median:.2f}x (medians {fmt(step)} µs vs {fmt(commit)} µs)",
                ratio.median <= 1.3,
                ""
                if ratio.median <= 1.3
                else f"{ratio.median / 1.3:.2f}x over the goal: about "
                f"{fmt(ratio.median * commit - 1.3 * commit)} µs a step to cut",
            )
        )

    ours = med("three_step_runs_per_s", "ironflow")
    for peer, need in (("dbos", 5.0), ("langgraph", 3.0)):
        theirs = med("three_step_runs_per_s", peer)
        name = f"3-step runs/s vs {LABELS[peer]}"
        if ours is None or theirs is None:
            out.append(Target(name, f">= {need:g}x", "-", None))
            continue
        x = ours / theirs
        gap = "" if x >= need else f"need {fmt(need * theirs)} runs/s, have {fmt(ours)}"
        out.append(
            Target(
                name, f">= {need:g}x", f"{x:.2f}x ({fmt(ours)} vs {fmt(theirs)})", x >= need, gap
            )
        )

    out.append(_concurrent_target(med, commit))

    out.extend(_postgres_targets(samples, med))

    replayed = (params or {}).get("replay_ms", {}).get("steps", REPLAY_TARGET_STEPS)
    for key, name, limit, unit in (
        ("emit_to_done_ms", "emit to completed, worker process, local: median", 5.0, "ms"),
        ("emit_to_done_p99_ms", "emit to completed, worker process, local: p99", 20.0, "ms"),
        ("serve_emit_to_done_ms", "emit to completed through ironflow serve: median", 10.0, "ms"),
        ("serve_emit_to_done_p99_ms", "emit to completed through ironflow serve: p99", 20.0, "ms"),
        ("idle_worker_cpu_pct", "idle worker CPU with 2,000 running runs", 1.0, "%"),
        ("resume_s", "resume after kill -9", 0.5, "s"),
        ("replay_ms", f"replay of {REPLAY_TARGET_STEPS:,} recorded steps", 100.0, "ms"),
        ("import_ms", "import ironflow", 150.0, "ms"),
    ):
        v = med(key, "ironflow")
        if key == "replay_ms" and v is not None and replayed != REPLAY_TARGET_STEPS:
            # A replay of fewer steps says little about 10,000: not judged on it.
            shown = f"{fmt(v)} {unit} for {replayed:,} steps"
            out.append(Target(name, f"< {limit:g} {unit}", shown, None))
            continue
        if v is None:
            out.append(Target(name, f"< {limit:g} {unit}", "-", None))
            continue
        out.append(
            Target(
                name,
                f"< {limit:g} {unit}",
                f"{fmt(v)} {unit}",
                v < limit,
                "" if v < limit else f"{fmt(v - limit)} {unit} over",
            )
        )
    return out


#: The rows that serve 16 concurrent 3-step runs, and how the target names each: the
#: target is met by either way of serving them, so it is judged on the better median.
CONCURRENT_ROWS = (
    ("concurrent_steps_per_s", "in-process worker"),
    ("processes_steps_per_s", "worker --processes"),
)


def _concurrent_target(med: Callable[[str, str], float | None], commit: float | None) -> Target:
    """16 concurrent runs above the single-commit fsync rate, with the better of the
    in-process and ``--processes`` rows (named), the other shown beside it."""
    name = "16 concurrent runs: steps/s vs single-commit fsync rate"
    measured = [(v, how) for key, how in CONCURRENT_ROWS if (v := med(key, "ironflow")) is not None]
    if not measured or commit is None:
        return Target(name, "> 1.0x", "-", None)
    rate = 1e6 / commit
    best, how = max(measured)
    others = "".join(f"; {other} {fmt(v)}" for v, other in measured if other != how)
    x = best / rate
    return Target(
        name,
        "> 1.0x",
        f"{x:.2f}x with the {how} ({fmt(best)} vs {fmt(rate)} commits/s{others})",
        x > 1.0,
        "" if x > 1.0 else f"need > {fmt(rate)} steps/s, have {fmt(best)} ({how})",
    )


def _postgres_targets(samples: Samples, med: Callable[[str, str], float | None]) -> list[Target]:
    """Issue 20's: per step within 1.5x one INSERT commit; 3-step runs/s at least 3x
    DBOS's, both on the same PostgreSQL server."""
    out: list[Target] = []
    name = "PostgreSQL: per-step cost vs one INSERT commit"
    ratio = _paired_ratio(samples, ("per_step_us", "ironflow_pg"), ("pg_commit_us", "pg_floor"))
    step, commit = med("per_step_us", "ironflow_pg"), med("pg_commit_us", "pg_floor")
    if ratio is None or step is None or commit is None:
        out.append(Target(name, "<= 1.5x", "-", None))
    else:
        met = ratio.median <= 1.5
        out.append(
            Target(
                name,
                "<= 1.5x",
                f"{ratio.median:.2f}x (medians {fmt(step)} µs vs {fmt(commit)} µs)",
                met,
                ""
                if met
                else f"{ratio.median / 1.5:.2f}x over the goal: about "
                f"{fmt(ratio.median * commit - 1.5 * commit)} µs a step to cut",
            )
        )
    ours, theirs = (
        med("three_step_runs_per_s", "ironflow_pg"),
        med("three_step_runs_per_s", "dbos_pg"),
    )
    name = "PostgreSQL: 3-step runs/s vs DBOS (PostgreSQL)"
    if ours is None or theirs is None:
        out.append(Target(name, ">= 3x", "-", None))
    else:
        x = ours / theirs
        gap = "" if x >= 3 else f"need {fmt(3 * theirs)} runs/s, have {fmt(ours)}"
        out.append(Target(name, ">= 3x", f"{x:.2f}x ({fmt(ours)} vs {fmt(theirs)})", x >= 3, gap))
    return out


def rows(
    samples: Samples, notes: Notes, systems: list[str], params: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per workload: a cell per system (a number, or why there is none)."""
    out = []
    for w in WORKLOADS:
        if w.key not in samples and w.key not in notes:
            continue  # not run at all (left out by --workloads)
        title = w.title.format(**params.get(w.key, {}))
        row: dict[str, Any] = {"key": w.key, "title": title, "unit": w.unit, "better": w.better}
        cells: dict[str, Any] = {}
        for s in systems:
            c = cell(samples.get(w.key, {}).get(s))
            note = notes.get(w.key, {}).get(s) or w.skip.get(s)
            ours = cell(samples.get(w.key, {}).get(OURS.get(s, "ironflow")))
            if c is not None:
                entry: dict[str, Any] = {"median": c.median, "min": c.min, "max": c.max, "n": c.n}
                if s in PEERS and ours is not None:
                    entry["ironflow_advantage"] = advantage(w, ours.median, c.median)
                if note:
                    entry["note"] = note
                cells[s] = entry
            elif s in w.systems:
                cells[s] = {"note": note or "not measured"}
        row["cells"] = cells
        out.append(row)
    return out


def _cell_text(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return ""
    if "median" not in entry:
        return f"({entry['note']})"
    c = Cell(entry["median"], entry["min"], entry["max"], entry["n"])
    text = c.text()
    if "ironflow_advantage" in entry:
        text += f"  {entry['ironflow_advantage']:.1f}x"
    return text


#: The two tables: the embedded stores, and the PostgreSQL server's.
TABLES = (
    ("ironflow", "dbos", "langgraph", "floor"),
    ("ironflow_pg", "dbos_pg", "langgraph_pg", "pg_floor"),
)


def _tables(
    table_rows: list[dict[str, Any]], systems: list[str], render: Callable[[list[list[str]]], str]
) -> str:
    """One table per storage that was measured, blank line between."""
    parts = []
    for columns in TABLES:
        order = [s for s in columns if s in systems]
        if order and any(r["cells"].get(s) for r in table_rows for s in order):
            parts.append(_table(table_rows, order, render))
    return "\n\n".join(parts)


def _table(
    table_rows: list[dict[str, Any]], order: list[str], render: Callable[[list[list[str]]], str]
) -> str:
    head = ["workload", "unit", *[LABELS[s] for s in order]]
    body = []
    for r in table_rows:
        if not any(r["cells"].get(s) for s in order):
            continue
        arrow = "higher" if r["better"] == "higher" else "lower"
        body.append(
            [r["title"], f"{r['unit']} ({arrow})", *[_cell_text(r["cells"].get(s)) for s in order]]
        )
    return render([head, *body])


def _plain(grid: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _markdown(grid: list[list[str]]) -> str:
    lines = ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in grid]
    lines.insert(1, "|" + "|".join("---" for _ in grid[0]) + "|")
    return "\n".join(lines)


_LEGEND = (
    "Cells: median [min-max] over the repetitions. 'Nx' after a peer's number: how many "
    "times better ironflow on the same storage is on that row (> 1: ironflow wins)."
)


def render_text(result: dict[str, Any]) -> str:
    systems = result["systems"]
    parts = [_tables(result["rows"], systems, _plain), "", _LEGEND, "", "Targets (issues 8, 20):"]
    grid = [["target", "goal", "measured", "status"]]
    for t in result["targets"]:
        status = t["status"] + (f": {t['gap']}" if t["gap"] else "")
        grid.append([t["name"], t["goal"], t["measured"], status])
    parts.append(_plain(grid))
    return "\n".join(parts)


def render_markdown(result: dict[str, Any]) -> str:
    systems = result["systems"]
    m = result["machine"]
    parts = [
        f"Run {result['started_at']}, {result['reps']} repetition(s)"
        + (" (--quick: small n, not comparable)" if result["quick"] else "")
        + f", {m['cpu']} x{m['cores']}, {m['fs']} on {m['device']}, Python {m['python']}, "
        f"load average {m['loadavg_start']} at start, {result.get('loadavg_end', '?')} at end.",
        "",
        _tables(result["rows"], systems, _markdown),
        "",
        _LEGEND,
        "",
    ]
    grid = [["target", "goal", "measured", "status"]]
    for t in result["targets"]:
        status = t["status"] + (f": {t['gap']}" if t["gap"] else "")
        grid.append([t["name"], t["goal"], t["measured"], status])
    parts.append(_markdown(grid))
    return "\n".join(parts) + "\n"


def machine(workdir: str) -> dict[str, Any]:
    """What the numbers ran on: CPU, cores, kernel, the filesystem of the work dir, load."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    fs, device, best = "?", "?", ""
    try:
        real = os.path.realpath(workdir)
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, kind = line.split()[:3]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
                    best
                ):
                    fs, device, best = kind, dev, mnt
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1e6, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gb": mem_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fs": fs,
        "device": device,
        "workdir": workdir,
        "loadavg_start": loadavg(),
    }


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def write_json(path: str, result: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def write_chart(path: str, result: dict[str, Any]) -> str | None:
    """A PNG of the table: one panel per workload, median bars with min-max whiskers.

    The floor is drawn as a grey reference bar where it bounds a row: one raw LMDB
    commit beside the per-step costs, its rate beside the concurrent steps/s. Dashed
    red lines are the issue's targets. Returns why no chart was drawn, or None.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    colors = {
        "ironflow": "#1f6feb",
        "dbos": "#8250df",
        "langgraph": "#1a7f37",
        "floor": "#8c959f",
        "ironflow_pg": "#54aeff",
        "dbos_pg": "#c297ff",
        "langgraph_pg": "#4ac26b",
        "pg_floor": "#57606a",
    }
    curve_keys = [f"pg_workers_{n}_steps_per_s" for n in PG_WORKERS]
    limits = {"resume_s": 0.5, "replay_ms": 100.0, "import_ms": 150.0}
    by_key = {r["key"]: r for r in result["rows"]}
    commit = by_key.get("lmdb_commit_us", {}).get("cells", {}).get("floor", {})
    pg_commit = by_key.get("pg_commit_us", {}).get("cells", {}).get("pg_floor", {})
    panels = [
        r
        for r in result["rows"]
        if r["key"] not in ("lmdb_commit_us", "fdatasync_us", "pg_commit_us", *curve_keys)
        and any("median" in c for c in r["cells"].values())
    ]
    curve = [
        (n, by_key[k]["cells"]["ironflow_pg"])
        for n, k in zip(PG_WORKERS, curve_keys, strict=True)
        if "median" in by_key.get(k, {}).get("cells", {}).get("ironflow_pg", {})
    ]
    if curve:
        panels.append({"key": "pg_workers_curve"})
    if not panels:
        return "nothing was measured"
    ncols = 3
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(15, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, r in zip(axes.flat, panels, strict=False):
        if r["key"] == "pg_workers_curve":
            _curve(ax, curve, colors["ironflow_pg"])
            continue
        bars = [(LABELS[s], s, c) for s, c in r["cells"].items() if "median" in c]
        if r["key"] == "per_step_us" and "median" in commit:
            bars.append(("one raw LMDB commit", "floor", commit))
        if r["key"] == "per_step_us" and "median" in pg_commit:
            bars.append(("one PostgreSQL INSERT commit", "pg_floor", pg_commit))
        if r["key"] in dict(CONCURRENT_ROWS) and "median" in commit:
            rate = {k: 1e6 / commit[k] for k in ("median", "max", "min")}
            bars.append(
                ("single-commit rate", "floor", {**rate, "min": rate["max"], "max": rate["min"]})
            )
        y = list(range(len(bars)))
        med = [c["median"] for _, _, c in bars]
        err = [
            [c["median"] - c["min"] for _, _, c in bars],
            [c["max"] - c["median"] for _, _, c in bars],
        ]
        ax.barh(y, med, xerr=err, color=[colors[s] for _, s, _ in bars], capsize=3, height=0.6)
        ax.set_yticks(y, [label for label, _, _ in bars])
        # Keep bars as thin in a one-bar panel as in a four-bar one (top to bottom).
        ax.set_ylim(max(len(bars), 3) - 0.5, -0.5)
        better = "higher" if r["better"] == "higher" else "lower"
        title = textwrap.fill(r["title"], 55)
        ax.set_title(f"{title}\n{r['unit']}, {better} is better", fontsize=9)
        for yi, (_, _, c) in zip(y, bars, strict=True):
            ax.text(c["max"], yi, "  " + fmt(c["median"]), va="center", fontsize=8)
        target = limits.get(r["key"])
        if r["key"] == "per_step_us" and "median" in commit:
            target = 1.3 * commit["median"]
        if target is not None:
            ax.axvline(target, color="#cf222e", linestyle="--", linewidth=1)
        if r["key"] == "per_step_us" and "median" in pg_commit:
            ax.axvline(1.5 * pg_commit["median"], color="#cf222e", linestyle=":", linewidth=1)
        ax.margins(x=0.3)
        ax.tick_params(labelsize=8)
    m = result["machine"]
    fig.suptitle(
        f"ironflow bench {result['started_at']}: {m['cores']} cores, {m['fs']}, "
        f"{result['reps']} repetition(s); bars are medians, whiskers min-max; "
        "dashed red: the issue's target (dotted: PostgreSQL's)",
        fontsize=10,
    )
    # tight_layout leaves the suptitle out: keep half an inch above the first row for it.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def _curve(ax: Any, points: list[tuple[int, dict[str, Any]]], color: str) -> None:
    """Steps/s against worker processes on one PostgreSQL database, with the line of
    perfect scaling from one worker for reference."""
    xs = [n for n, _ in points]
    med = [c["median"] for _, c in points]
    err = [[c["median"] - c["min"] for _, c in points], [c["max"] - c["median"] for _, c in points]]
    ax.errorbar(
        xs, med, yerr=err, marker="o", color=color, capsize=3, label="ironflow (PostgreSQL)"
    )
    if xs and xs[0] == 1:
        ax.plot(
            xs,
            [med[0] * n for n in xs],
            color="#8c959f",
            linestyle="--",
            linewidth=1,
            label="linear from 1 worker",
        )
    for x, y in zip(xs, med, strict=True):
        ax.annotate(fmt(y), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xticks(xs)
    ax.set_xlabel("worker processes (concurrency 1 each)", fontsize=8)
    ax.set_title(
        "PostgreSQL: 3-step runs, worker processes on one database\n"
        "durable steps/s, higher is better",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=8)
