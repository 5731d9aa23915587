# loadtests/report.py -- the sweep's cells and ratios -> the text of results.md.
#
# Strategy: pure functions from Summaries (loadtests.aggregate: the runs of
# one cell, their median and spread) and Ratios to Markdown.  The results
# table keeps the seed's columns in the seed's order for each cell's median
# run and adds the range over the runs, p50, p99, server CPU per request,
# the tool, the spread and the verdict (an invalid run says which round and
# why); a second table gives the ratios per level, a third sets the seed's
# own figures beside ours.  ``table`` renders single runs (the locustfile
# prints its own), and ``write_json``/``read_json`` keep single runs as JSON
# between the locustfile and the sweep; the results files are written by
# loadtests.results.
from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from loadtests import seed
from loadtests.aggregate import NOISY_SPREAD, Ratio, Summary
from loadtests.cell import Cell, row_name
from loadtests.workload import Workload

COLUMNS = ["No.", "Server Model", "Concurrency Level", "Time taken for tests",
           "Complete Requests", "Failed Requests", "Total Transferred", "Requests per Second",
           "Time per Request", "Transfer Rate", "p50", "p99", "Server CPU", "Tool", "Valid"]
#: The results table: the seed's columns for the median run, and the spread over the runs.
CELL_COLUMNS = ["No.", "Server Model", "Concurrency Level", "Time taken for tests",
                "Complete Requests", "Failed Requests", "Total Transferred",
                "Requests per Second", "req/s min-max", "Time per Request", "Transfer Rate",
                "p50", "p99", "p99 min-max", "Server CPU", "Peak RSS", "Tool", "Runs", "Spread",
                "Valid"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _ratio(value: float) -> str:
    return f"{value:.0f}x" if value >= 10 else f"{value:.2f}x"


def table(cells: list[Cell]) -> str:
    """Single runs as a Markdown table in the seed's columns."""
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


def _mib(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f} MiB"


def _range(low: float | None, high: float | None, fmt: str) -> str:
    if low is None or high is None:
        return "-"
    return f"{low:{fmt}}-{high:{fmt}}"


def _verdict(s: Summary) -> str:
    if s.valid:
        return "yes"
    return "**NO: " + "; ".join(f"round {r.round}: " + "; ".join(r.reasons)
                                for r in s.invalid_runs) + "**"


def cells_table(summaries: list[Summary]) -> str:
    """The results table: each cell's median run in the seed's columns, with
    the spread over its runs beside it."""
    lines = ["| " + " | ".join(CELL_COLUMNS) + " |", "|" + "---|" * len(CELL_COLUMNS)]
    for number, s in enumerate(summaries, 1):
        c = s.median
        cpu = "-" if c.server_cpu_us is None else f"{c.server_cpu_us:.0f} µs/req"
        spread = f"{s.spread:.0%}" + (" **noisy**" if s.noisy else "")
        lines.append("| " + " | ".join([
            str(number), s.name, str(s.level), f"{c.time_taken:.3f} sec", str(c.complete),
            str(c.failed), f"{c.total_transferred} bytes", f"{c.rps:.2f} [#/sec]",
            _range(s.rps_min, s.rps_max, ".0f"), f"{c.time_per_request:.3f} [ms]",
            f"{c.transfer_rate:.2f} Kb/sec", _ms(c.p50), _ms(c.p99),
            _range(s.p99_min, s.p99_max, ".2f"), cpu, _mib(c.server_peak_rss_kb),
            s.tool + (" -k" if c.keepalive else ""),
            str(len(s.runs)), spread, _verdict(s),
        ]) + " |")
    return "\n".join(lines)


def ratio_name(name: str) -> str:
    """ "lb/haproxy" -> "Asynchronous+LB / Asynchronous+haproxy"."""
    top, _, bottom = name.partition("/")
    return f"{row_name(top)} / {row_name(bottom)}"


def _ratio_text(r: Ratio) -> str:
    return f"{_ratio(r.median)} ({_ratio(r.min)}-{_ratio(r.max)})"


def ratios_table(ratios: list[Ratio]) -> str:
    """Per level and overall: the median ratio over rounds, with its range."""
    levels = sorted({r.level for r in ratios if isinstance(r.level, int)})
    head = ["Tool", "Ratio of requests/s"] + [f"c={lv}" for lv in levels] + ["all levels"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = list(dict.fromkeys((r.tool, r.name) for r in ratios))
    for tool, name in keys:
        found = {r.level: r for r in ratios if (r.tool, r.name) == (tool, name)}
        cells = [_ratio_text(found[lv]) if lv in found else "-" for lv in [*levels, "all"]]
        lines.append(f"| {tool} | {ratio_name(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if keys else ""


def seed_comparison(summaries: list[Summary]) -> str:
    """Our ab cells (their median runs) beside the seed's figures for the same model and level."""
    lines = ["| Server Model | Concurrency | Seed req/s | Seed failed | Seed valid | "
             "Our req/s (median) | Our min-max | Our failed | Our valid | Speed-up |",
             "|" + "---|" * 10]
    for s in summaries:
        row = seed.lookup(s.model, s.level)
        if s.tool != "ab" or s.median.keepalive or row is None:
            continue
        c = s.median
        speedup = _ratio(c.rps / row.rps) if row.rps else "-"
        lines.append(f"| {s.name} | {s.level} | {row.rps:.2f} | {row.failed} | "
                     f"{'yes' if row.valid else '**no**'} | {c.rps:.2f} | "
                     f"{_range(s.rps_min, s.rps_max, '.0f')} | "
                     f"{sum(r.failed for r in s.runs)} | {'yes' if s.valid else '**no**'} | "
                     f"{speedup} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _noise_line(summaries: list[Summary]) -> str:
    noisy = [s for s in summaries if s.noisy]
    runs = max((len(s.runs) for s in summaries), default=1)
    if runs < 2:
        return "One run per cell: no spread measured (use --repeat 3 or more)."
    if not noisy:
        return f"No cell is noisy: every spread (max - min) / median of req/s is within " \
               f"{NOISY_SPREAD:.0%}."
    return (f"{len(noisy)} of {len(summaries)} cells noisy (spread of req/s over "
            f"{NOISY_SPREAD:.0%}): " + ", ".join(f"{s.name} c={s.level} ({s.tool}, "
                                                f"{s.spread:.0%})" for s in noisy)
            + f"; tighten them with --repeat {max(5, runs + 2)} or more --requests "
              "(e.g. --requests 5000).")


def summary(summaries: list[Summary], ratios: list[Ratio]) -> list[str]:
    """A few generated sentences: validity, noise, each row, the ratios, the seed."""
    invalid = [s for s in summaries if not s.valid]
    runs = max((len(s.runs) for s in summaries), default=0)
    out = [f"{len(summaries) - len(invalid)} of {len(summaries)} cells valid ({runs} "
           f"run{'s' if runs != 1 else ''} each, interleaved)"
           + ("." if not invalid else "; INVALID: " + ", ".join(
               f"{s.name} c={s.level} ({s.tool})" for s in invalid) + "."),
           _noise_line(summaries)]
    for tool in sorted({s.tool for s in summaries}):
        for key in dict.fromkeys(s.model for s in summaries if s.tool == tool):
            mine = [s for s in summaries if s.tool == tool and s.model == key and s.valid]
            if not mine:
                continue
            rates = [s.median.rps for s in mine]
            cpu = [s.median.server_cpu_us for s in mine if s.median.server_cpu_us is not None]
            cpu_text = (f", server CPU median {statistics.median(cpu):.0f} µs/request"
                        if cpu else "")
            rss = [s.median.server_peak_rss_kb for s in mine
                   if s.median.server_peak_rss_kb is not None]
            cpu_text += f", peak RSS up to {max(rss) / 1024:.0f} MiB" if rss else ""
            out.append(f"{tool}: {mine[0].name} — median {statistics.median(rates):.0f} req/s "
                       f"over {len(rates)} levels (max {max(rates):.0f}){cpu_text}.")
        for r in ratios:
            if r.tool == tool and r.level == "all":
                out.append(f"{tool}: {ratio_name(r.name)} = {_ratio(r.median)} (median over "
                           f"{r.rounds} round{'s' if r.rounds != 1 else ''}, range "
                           f"{_ratio(r.min)}-{_ratio(r.max)}).")
    pairs = [(s, seed.lookup(s.model, s.level)) for s in summaries
             if s.tool == "ab" and not s.median.keepalive]
    speedups = [s.median.rps / row.rps for s, row in pairs if row and s.valid]
    if speedups:
        out.append(f"Against the seed (same model and level): {_ratio(min(speedups))} to "
                   f"{_ratio(max(speedups))} its requests per second; the seed had "
                   f"{sum(r.failed for r in seed.ROWS)} failed requests, we had "
                   f"{sum(r.failed for s, row in pairs if row for r in s.runs)}.")
    return out


NOTES = ("Each cell is the median of its runs by requests per second, shown in the seed's "
         "columns; min-max give the range over the runs and Spread is (max - min) / median "
         "of req/s (noisy above {noisy:.0%}). A cell is valid only when every run is: 0 "
         "failed, 0 non-2xx, total transferred = n x one full response. Total Transferred "
         "counts status line, headers and body for ab and Locust alike, so their rows "
         "compare; ab without -k speaks HTTP/1.0 and Locust HTTP/1.1, so one full response "
         "can differ by a header between the tools. Ratios are taken within each round (a "
         "round's overall ratio is the median over its levels), then their median and range "
         "over rounds are shown. Peak RSS is summed over the row's server processes (the lb or "
         "reference balancer and its four backends), taken over each ab run, or over the "
         "whole Locust sweep of the row.")


def markdown(summaries: list[Summary], ratios: list[Ratio], env: dict[str, Any],
             notes: Sequence[str] = (), workload: Workload | None = None,
             path: str = "") -> str:
    """The whole results.md."""
    workload = workload or Workload("static")
    parts = [f"# Results: workload {workload.name} ({path or workload.path('/page.html')})",
             "", workload.shows, "", cells_table(summaries), "",
             NOTES.format(noisy=NOISY_SPREAD), "", "## Summary", ""]
    parts += [f"- {line}" for line in summary(summaries, ratios)]
    parts += [f"- Note: {note}" for note in notes]
    by_level = ratios_table(ratios)
    if by_level:
        parts += ["", "## Ratios per level", "", "Median over rounds (min-max).", "", by_level]
    comparison = seed_comparison(summaries)
    if comparison:
        parts += ["", "## Against the original experiment", "",
                  "The seed's own ApacheBench figures (1000 requests per cell, one run). A seed "
                  "row is **not valid** when requests failed or total transferred fell short "
                  "of 1000 full responses.", "", comparison]
    parts += ["", "## Environment", ""]
    parts += [f"- {key}: {value}" for key, value in env.items()]
    parts += ["", "Plots: `rps.png` (median requests/s by concurrency with min-max bars, log x; "
              "the seed's figures as separate markers, hollow where its row was not valid), "
              "`latency.png` (median p50 and p99, p99 with min-max bars), `failures.png` "
              "(failed and non-2xx per cell, summed over its runs).", ""]
    return "\n".join(parts)


def write_json(cells: Iterable[Cell], env: dict[str, Any], path: str) -> None:
    """Single runs and what they ran with, as JSON (the locustfile's output)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"environment": env, "cells": [c.to_dict() for c in cells]}, fh, indent=2)
        fh.write("\n")


def read_json(path: str) -> tuple[list[Cell], dict[str, Any]]:
    """Single runs and their environment back from :func:`write_json`'s file."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return [Cell.from_dict(c) for c in data["cells"]], data.get("environment", {})
