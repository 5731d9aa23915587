# loadtests/benchmark/report.py -- the benchmark's tables, files and plot.
#
# Strategy: rendering only; every figure comes in computed (stats, targets,
# idle).  The Markdown tables are pure functions of the summaries, printed on
# the terminal and written into benchmark.md; benchmark.json holds everything
# including every raw run; benchmark.png plots req/s per workload and the
# seed sweep.  matplotlib is imported (with its file-only backend) when a plot
# is drawn, not when this module is.
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from loadtests.benchmark import workloads as wl
from loadtests.benchmark.idle import IdleResult
from loadtests.benchmark.stats import Run, Summaries, figure, fmt, invalid_lines, ratio
from loadtests.benchmark.targets import TARGET_SEED_RPS, Target
from loadtests.benchmark.workloads import BALANCERS, REFERENCES

INTRO = ("Medians over the rounds (valid runs only). CPU is utime+stime of the target's "
         "own processes (psutil) per completed request; `backends µs/req` is the four "
         "async backends' CPU behind a balancer; peak RSS is VmHWM (summed over the "
         "target's processes) read after the run, so it is the peak so far.")


def _md(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _workloads(summary: Summaries, targets: Sequence[str] | None = None) -> list[wl.Workload]:
    """The workloads of the summaries (of ``targets`` only, when given), first seen first."""
    return list(dict.fromkeys(s.workload for s in summary.values()
                              if targets is None or s.target in targets))


def medians_table(summary: Summaries) -> str:
    """Medians per (target, workload) as Markdown, grouped by workload."""
    order = {name: i for i, name in enumerate(BALANCERS + REFERENCES)}
    workloads = _workloads(summary)
    items = sorted(summary.values(), key=lambda s: (workloads.index(s.workload),
                                                    order.get(s.target, 99)))
    rows = []
    for s in items:
        valid = f"{s.runs - s.invalid}/{s.runs}" + ("" if not s.invalid else " **INVALID**")
        rows.append([s.workload.name, s.target, fmt(s.rps), fmt(s.p50, ".2f"),
                     fmt(s.p99, ".2f"), fmt(s.cpu_us, ".1f"), fmt(s.backend_cpu_us, ".1f"),
                     fmt(s.peak_rss_mb, ".1f"), valid])
    return _md(["workload", "target", "req/s", "p50 ms", "p99 ms", "CPU µs/req",
                "backends µs/req", "peak RSS MB", "valid runs"], rows)


def ratios_table(summary: Summaries) -> str:
    """Per balancer workload: req/s and CPU per request of each balancer and
    the ratios gservers/haproxy and gservers/nginx."""
    rows = []
    for w in _workloads(summary, BALANCERS):
        rps = {b: figure(summary, b, w, "rps") for b in BALANCERS}
        cpu = {b: figure(summary, b, w, "cpu_us") for b in BALANCERS}
        p99 = {b: figure(summary, b, w, "p99") for b in BALANCERS}
        rows.append([w.name] + [fmt(rps[b]) for b in BALANCERS]
                    + [fmt(ratio(rps["gservers"], rps[b]), ".2f", "x") for b in BALANCERS[1:]]
                    + [fmt(ratio(p99["gservers"], p99[b]), ".2f", "x") for b in BALANCERS[1:]]
                    + ["/".join(fmt(cpu[b], ".0f") for b in BALANCERS)])
    return _md(["workload", "gservers req/s", "haproxy req/s", "nginx req/s",
                "gservers/haproxy", "gservers/nginx", "p99 g/h", "p99 g/n",
                "CPU µs/req g/h/n"], rows)


def targets_table(targets: Sequence[Target]) -> str:
    """The issue's targets: goal, measured, met."""
    verdict = {True: "yes", False: "**NO**", None: "n/a"}
    return _md(["target", "goal", "measured (medians)", "met"],
               [[t.name, t.goal, t.measured, verdict[t.met]] for t in targets])


def _idle_lines(idle: IdleResult) -> list[str]:
    lines = ["", "## Idle connections", "",
             f"- asked {idle.asked}, opened {idle.opened}, accepted by the lb "
             f"{idle.accepted}, still open at the reading {idle.still_open}",
             f"- lb VmRSS {idle.rss_before_kb / 1024:.1f} MB before, "
             f"{idle.rss_kb / 1024:.1f} MB holding them (VmHWM {idle.hwm_kb / 1024:.1f} "
             f"MB), {idle.seconds:.1f} s to open"]
    return lines + ([f"- {idle.note}"] if idle.note else [])


def markdown(runs: Sequence[Run], summary: Summaries, targets: Sequence[Target],
             env: dict[str, Any], notes: Sequence[str], idle: IdleResult | None) -> str:
    """The whole benchmark.md."""
    parts = ["# Benchmark: gservers lb vs haproxy vs nginx", "", INTRO, "",
             "## Targets", "", targets_table(targets), "",
             "## Ratios", "", ratios_table(summary), "",
             "## Medians", "", medians_table(summary), ""]
    bad = invalid_lines(runs)
    parts += ["## Validity", ""]
    parts += [f"- **{line}**" for line in bad] if bad else [
        f"- all {len(runs)} runs valid (ab: 0 failed, 0 non-2xx, total = n x size; "
        f"wrk: no socket error, no non-2xx, bytes read = requests x size within 2%)."]
    if idle is not None:
        parts += _idle_lines(idle)
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    parts += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()]
    parts += ["", "Plot: `benchmark.png`. Raw runs: `benchmark.json`.", ""]
    return "\n".join(parts)


def to_json(runs: Sequence[Run], summary: Summaries, targets: Sequence[Target],
            env: dict[str, Any], notes: Sequence[str], idle: IdleResult | None) -> dict[str, Any]:
    """Everything, as a JSON-ready dict (all raw runs included)."""
    return {"environment": env, "notes": list(notes),
            "targets": [asdict(t) for t in targets],
            "summary": [s.to_dict() for s in summary.values()],
            "idle": None if idle is None else asdict(idle),
            "runs": [r.to_dict() for r in runs]}


def _plot_workloads(ax: Any, summary: Summaries) -> None:
    """Bars: req/s per workload (the seed sweep aside) per target."""
    targets = list(BALANCERS + REFERENCES)
    workloads = [w for w in _workloads(summary) if w.phase != "seed"]
    labelled: set[str] = set()
    for j, w in enumerate(workloads):
        present = [(i, t, summary[(t, w)].rps) for i, t in enumerate(targets)
                   if (t, w) in summary and summary[(t, w)].rps is not None]
        width = 0.8 / max(1, len(present))
        for k, (i, target, rps) in enumerate(present):
            bars = ax.bar([j - 0.4 + width * (k + 0.5)], [rps], width=width,
                          color=f"C{i}", label=None if target in labelled else target)
            labelled.add(target)
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels([w.name for w in workloads], fontsize=8)
    ax.set_ylabel("requests per second (median)")
    ax.set_title("Throughput per workload (balancers and references)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _plot_sweep(ax: Any, summary: Summaries, levels: Sequence[int]) -> None:
    """Lines: the seed sweep's req/s per level per target."""
    for i, target in enumerate(BALANCERS + REFERENCES):
        points = [(c, figure(summary, target, wl.seed_level(c), "rps")) for c in levels]
        points = [(c, v) for c, v in points if v is not None]
        if points:
            ax.plot([c for c, _ in points], [v for _, v in points], marker="o",
                    label=target, color=f"C{i}")
    ax.axhline(TARGET_SEED_RPS, color="grey", linestyle=":", label="lb target")
    ax.set_xscale("log")
    ax.set_xlabel("concurrency (ab -n 1000, no keep-alive)")
    ax.set_ylabel("requests per second (median)")
    ax.set_title("Seed sweep")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot(summary: Summaries, levels: Sequence[int], path: str) -> None:
    """benchmark.png: req/s per workload per target (left), the seed sweep (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5),
                                      gridspec_kw={"width_ratios": [3, 2]})
    _plot_workloads(left, summary)
    _plot_sweep(right, summary, levels)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(out: str, runs: Sequence[Run], summary: Summaries, targets: Sequence[Target],
              env: dict[str, Any], notes: Sequence[str], idle: IdleResult | None,
              levels: Sequence[int]) -> list[str]:
    """Write ``out``/benchmark.md, .json and .png; their paths."""
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f"benchmark.{ext}") for ext in ("md", "json", "png")]
    with open(paths[0], "w", encoding="utf-8") as fh:
        fh.write(markdown(runs, summary, targets, env, notes, idle))
    with open(paths[1], "w", encoding="utf-8") as fh:
        json.dump(to_json(runs, summary, targets, env, notes, idle), fh, indent=2)
        fh.write("\n")
    plot(summary, levels, paths[2])
    return paths
