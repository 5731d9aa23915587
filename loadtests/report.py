# loadtests/report.py -- cells -> the results table, CSV, JSON and plots.
#
# Strategy: pure functions from a list of Cells (plus an environment dict) to
# text, and separate functions that write files and draw PNGs with
# matplotlib's Agg backend (no screen needed).  The Markdown keeps the seed's
# columns in the seed's order and adds p50, p99, server CPU per request, the
# tool and the verdict; a second table sets the seed's own figures beside
# ours, marking the seed rows that were not valid.
from __future__ import annotations

import csv
import json
import os
import statistics
from collections.abc import Iterable
from typing import Any

from loadtests import seed
from loadtests.cell import MODELS, Cell

COLUMNS = ["No.", "Server Model", "Concurrency Level", "Time taken for tests",
           "Complete Requests", "Failed Requests", "Total Transferred", "Requests per Second",
           "Time per Request", "Transfer Rate", "p50", "p99", "Server CPU", "Tool", "Valid"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _ratio(value: float) -> str:
    return f"{value:.0f}x" if value >= 10 else f"{value:.2f}x"


def table(cells: list[Cell]) -> str:
    """The results table as Markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for number, c in enumerate(cells, 1):
        cpu = "-" if c.server_cpu_us is None else f"{c.server_cpu_us:.0f} µs/req"
        verdict = "yes" if c.valid else "**NO: " + "; ".join(c.reasons) + "**"
        tool = c.tool + (" -k" if c.keepalive else "")
        lines.append("| " + " | ".join([
            str(number), c.model_name, str(c.concurrency), f"{c.time_taken:.3f} sec",
            str(c.complete), str(c.failed), f"{c.total_transferred} bytes",
            f"{c.rps:.2f} [#/sec]", f"{c.time_per_request:.3f} [ms]",
            f"{c.transfer_rate:.2f} Kb/sec", _ms(c.p50), _ms(c.p99), cpu, tool, verdict,
        ]) + " |")
    return "\n".join(lines)


def seed_comparison(cells: list[Cell]) -> str:
    """Our ab cells beside the seed's figures for the same model and level."""
    lines = ["| Server Model | Concurrency | Seed req/s | Seed failed | Seed valid | "
             "Our req/s | Our failed | Our valid | Speed-up |", "|" + "---|" * 9]
    for c in cells:
        if c.tool != "ab" or c.keepalive:
            continue
        row = seed.lookup(c.model, c.concurrency)
        if row is None:
            continue
        speedup = _ratio(c.rps / row.rps) if row.rps else "-"
        lines.append(f"| {c.model_name} | {c.concurrency} | {row.rps:.2f} | {row.failed} | "
                     f"{'yes' if row.valid else '**no**'} | {c.rps:.2f} | {c.failed} | "
                     f"{'yes' if c.valid else '**no**'} | {speedup} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def summary(cells: list[Cell]) -> list[str]:
    """A few generated sentences on what changed between models."""
    out: list[str] = []
    invalid = [c for c in cells if not c.valid]
    total = len(cells)
    out.append(f"{total - len(invalid)} of {total} cells valid"
               + ("." if not invalid else "; INVALID: " + ", ".join(
                   f"{c.model_name} c={c.concurrency} ({c.tool})" for c in invalid) + "."))
    medians: dict[tuple[str, str], float] = {}
    for tool in sorted({c.tool for c in cells}):
        for model in MODELS:
            rates = [c.rps for c in cells if c.tool == tool and c.model == model and c.valid]
            if rates:
                medians[(tool, model)] = statistics.median(rates)
                cpu = [c.server_cpu_us for c in cells if c.tool == tool and c.model == model
                       and c.server_cpu_us is not None]
                cpu_text = (f", server CPU median {statistics.median(cpu):.0f} µs/request"
                            if cpu else "")
                out.append(f"{tool}: {MODELS[model]} — median {medians[(tool, model)]:.0f} req/s "
                           f"over {len(rates)} levels (max {max(rates):.0f}){cpu_text}.")
        base = medians.get((tool, "async"))
        for model in ("thread", "lb"):
            if base and (tool, model) in medians:
                out.append(f"{tool}: {MODELS[model]} / Asynchronous = "
                           f"{medians[(tool, model)] / base:.2f}x (medians).")
    seed_cells = [(c, seed.lookup(c.model, c.concurrency)) for c in cells
                  if c.tool == "ab" and not c.keepalive]
    ratios = [c.rps / row.rps for c, row in seed_cells if row and c.valid]
    if ratios:
        out.append(f"Against the seed (same model and level): {_ratio(min(ratios))} to "
                   f"{_ratio(max(ratios))} its requests per second; the seed had "
                   f"{sum(r.failed for r in seed.ROWS)} failed requests, we had "
                   f"{sum(c.failed for c, _ in seed_cells)}.")
    return out


def markdown(cells: list[Cell], env: dict[str, Any]) -> str:
    """The whole results.md."""
    parts = ["# Results", "", table(cells), "", "## Summary", ""]
    parts += [f"- {line}" for line in summary(cells)]
    comparison = seed_comparison(cells)
    if comparison:
        parts += ["", "## Against the original experiment", "",
                  "The seed's own ApacheBench figures (1000 requests per cell). A seed row is "
                  "**not valid** when requests failed or total transferred fell short of "
                  "1000 full responses.", "", comparison]
    parts += ["", "## Environment", ""]
    parts += [f"- {key}: {value}" for key, value in env.items()]
    parts += ["", "Plots: `rps.png` (requests/s by concurrency, log x), `latency.png` "
              "(p50 and p99), `failures.png` (failed and non-2xx per cell).", ""]
    return "\n".join(parts)


CSV_FIELDS = ["tool", "model", "model_name", "concurrency", "requests", "keepalive",
              "time_taken", "complete", "failed", "non_2xx", "total_transferred", "rps",
              "time_per_request", "transfer_rate", "p50", "p90", "p99", "expected_size",
              "server_cpu", "client_cpu", "server_cpu_us_per_request", "valid", "reasons"]


def write_csv(cells: Iterable[Cell], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for c in cells:
            row = c.to_dict()
            row["reasons"] = "; ".join(c.reasons)
            writer.writerow(row)


def write_json(cells: Iterable[Cell], env: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"environment": env, "cells": [c.to_dict() for c in cells]}, fh, indent=2)
        fh.write("\n")


def read_json(path: str) -> tuple[list[Cell], dict[str, Any]]:
    """Cells and environment back from a results.json."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return [Cell.from_dict(c) for c in data["cells"]], data.get("environment", {})


def _series(cells: list[Cell]) -> dict[str, list[Cell]]:
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        label = f"{c.model_name} ({c.tool}{' -k' if c.keepalive else ''})"
        groups.setdefault(label, []).append(c)
    return {k: sorted(v, key=lambda c: c.concurrency) for k, v in groups.items()}


def plot(cells: list[Cell], out_dir: str) -> list[str]:
    """Draw rps.png, latency.png and failures.png; return their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    series = _series(cells)
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, group in series.items():
        ax.plot([c.concurrency for c in group], [c.rps for c in group], marker="o", label=label)
        for c in group:
            if not c.valid:
                ax.annotate("invalid", (c.concurrency, c.rps), color="red", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("concurrency (clients)")
    ax.set_ylabel("requests per second")
    ax.set_title("Throughput by concurrency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir, "rps.png"))

    fig, ax = plt.subplots(figsize=(8, 5))
    for index, (label, group) in enumerate(series.items()):
        color = f"C{index}"
        xs = [c.concurrency for c in group]
        ax.plot(xs, [c.p50 or 0 for c in group], marker="o", color=color, label=f"{label} p50")
        ax.plot(xs, [c.p99 or 0 for c in group], marker="^", linestyle="--", color=color,
                label=f"{label} p99")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("concurrency (clients)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency percentiles by concurrency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, out_dir, "latency.png"))

    fig, ax = plt.subplots(figsize=(max(8, len(cells) * 0.5), 5))
    labels = [f"{c.model_name}\n{c.tool} c={c.concurrency}" for c in cells]
    xs = range(len(cells))
    ax.bar([x - 0.2 for x in xs], [c.failed for c in cells], width=0.4, label="failed",
           color="C3")
    ax.bar([x + 0.2 for x in xs], [c.non_2xx for c in cells], width=0.4, label="non-2xx",
           color="C1")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("requests")
    ax.set_title("Failures per cell (all zero means every response was a full 2xx)")
    ax.set_ylim(bottom=0, top=max([1] + [c.failed for c in cells] + [c.non_2xx for c in cells]))
    ax.legend()
    paths.append(_save(fig, out_dir, "failures.png"))
    return paths


def _save(fig: Any, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(cells: list[Cell], env: dict[str, Any], out_dir: str) -> list[str]:
    """results.md, results.csv, results.json and the plots under ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    files = [os.path.join(out_dir, n) for n in ("results.md", "results.csv", "results.json")]
    with open(files[0], "w", encoding="utf-8") as fh:
        fh.write(markdown(cells, env))
    write_csv(cells, files[1])
    write_json(cells, env, files[2])
    return files + plot(cells, out_dir)
