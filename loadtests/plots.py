# loadtests/plots.py -- the sweep's plots: throughput, latency and failures by cell.
#
# Strategy: matplotlib's Agg backend (no screen), one figure per file, drawn
# from the Summaries of loadtests.aggregate.  Every series is one row and
# tool, its points the median runs, its error bars the min-max over the
# runs.  The throughput plot also shows the seed's own figures for its three
# models as separate markers in the series' colour, filled where the seed's
# row was valid and hollow where it was not; both axes are logarithmic, as
# the seed's figures lie three orders of magnitude below ours.
from __future__ import annotations

import os
from typing import Any

from loadtests import seed
from loadtests.aggregate import Summary


def _series(summaries: list[Summary]) -> dict[tuple[str, str, str], list[Summary]]:
    """(label, row key, tool) -> the series' cells by level."""
    groups: dict[tuple[str, str, str], list[Summary]] = {}
    for s in summaries:
        label = f"{s.name} ({s.tool}{' -k' if s.median.keepalive else ''})"
        groups.setdefault((label, s.model, s.tool), []).append(s)
    return {k: sorted(v, key=lambda s: s.level) for k, v in groups.items()}


def _bars(values: list[float], lows: list[float], highs: list[float]) -> list[list[float]]:
    return [[max(0.0, v - lo) for v, lo in zip(values, lows, strict=True)],
            [max(0.0, hi - v) for v, hi in zip(values, highs, strict=True)]]


def _throughput(plt: Any, series: dict, out_dir: str, subtitle: str) -> str:
    fig, ax = plt.subplots(figsize=(9, 5.5))
    seeded: set[str] = set()
    for index, ((label, key, tool), group) in enumerate(series.items()):
        color = f"C{index % 10}"
        xs = [s.level for s in group]
        ys = [s.median.rps for s in group]
        ax.errorbar(xs, ys, yerr=_bars(ys, [s.rps_min for s in group],
                                       [s.rps_max for s in group]),
                    marker="o", capsize=3, color=color, label=label)
        for s in group:
            if not s.valid:
                ax.annotate("invalid", (s.level, s.median.rps or 1), color="red", fontsize=8)
        rows = [seed.lookup(key, x) for x in xs] if tool == "ab" and key not in seeded else []
        rows = [r for r in rows if r is not None]
        if rows:
            seeded.add(key)
            ax.scatter([r.concurrency for r in rows if r.valid],
                       [r.rps for r in rows if r.valid], marker="s", color=color, s=36,
                       label=f"seed: {group[0].name}")
            ax.scatter([r.concurrency for r in rows if not r.valid],
                       [r.rps for r in rows if not r.valid], marker="s", s=36,
                       facecolors="none", edgecolors=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrency (clients)")
    ax.set_ylabel("requests per second (median, min-max bars)")
    ax.set_title(_title("Throughput by concurrency (squares: the seed; hollow: its row was "
                        "not valid)", subtitle), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(plt, fig, out_dir, "rps.png")


def _latency(plt: Any, series: dict, out_dir: str, subtitle: str) -> str:
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for index, ((label, _, _), group) in enumerate(series.items()):
        color = f"C{index % 10}"
        xs = [s.level for s in group]
        p50 = [s.median.p50 or 0.0 for s in group]
        p99 = [s.median.p99 or 0.0 for s in group]
        ax.plot(xs, p50, marker="o", color=color, label=f"{label} p50")
        ax.errorbar(xs, p99, yerr=_bars(p99, [s.p99_min or 0.0 for s in group],
                                        [s.p99_max or 0.0 for s in group]),
                    marker="^", linestyle="--", capsize=3, color=color, label=f"{label} p99")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("concurrency (clients)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(_title("Latency by concurrency (median run; p99 with min-max bars)", subtitle),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return _save(plt, fig, out_dir, "latency.png")


def _failures(plt: Any, summaries: list[Summary], out_dir: str, subtitle: str) -> str:
    fig, ax = plt.subplots(figsize=(max(8, len(summaries) * 0.45), 5))
    labels = [f"{s.name}\n{s.tool} c={s.level}" for s in summaries]
    failed = [sum(r.failed for r in s.runs) for s in summaries]
    non_2xx = [sum(r.non_2xx for r in s.runs) for s in summaries]
    xs = range(len(summaries))
    ax.bar([x - 0.2 for x in xs], failed, width=0.4, label="failed", color="C3")
    ax.bar([x + 0.2 for x in xs], non_2xx, width=0.4, label="non-2xx", color="C1")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("requests, summed over the cell's runs")
    ax.set_title(_title("Failures per cell (all zero means every response was a full 2xx)",
                        subtitle), fontsize=10)
    ax.set_ylim(bottom=0, top=max([1, *failed, *non_2xx]))
    ax.legend()
    return _save(plt, fig, out_dir, "failures.png")


def _title(text: str, subtitle: str) -> str:
    return f"{text}\n{subtitle}" if subtitle else text


def _save(plt: Any, fig: Any, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(summaries: list[Summary], out_dir: str, subtitle: str = "") -> list[str]:
    """Draw rps.png, latency.png and failures.png under ``out_dir`` (``subtitle``,
    e.g. the workload, in each title); their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(summaries)
    paths = [_throughput(plt, series, out_dir, subtitle), _latency(plt, series, out_dir, subtitle),
             _failures(plt, summaries, out_dir, subtitle)]
    return paths
