# loadtests/results.py -- the sweep's output folder: results.md, .csv, .json and the plots.
#
# Strategy: one function writes everything from the Summaries and Ratios of
# loadtests.aggregate, so every file says the same thing.  results.json is
# read by other tools, so its names are fixed: ``environment``; ``cells``,
# one per (row, level, tool) with ``model`` (the table's row name),
# ``level``, ``tool``, ``valid``, ``noisy``, ``median`` (the median run's
# seed columns and ``rps``, ``p50_ms``, ``p99_ms``, ``failed``, ``non_2xx``,
# ``total_bytes``), ``rps_min``/``rps_max``, ``p99_min_ms``/``p99_max_ms``
# and ``runs`` (``round``, ``rps``, ``p99_ms``, ``failed``, ``non_2xx``,
# ``total_bytes``, ``valid``, ``reason``); ``ratios`` (``name``, ``level``
# or "all", ``median``, ``min``, ``max``); and ``notes``.  The CSV has one
# row per cell with the median run's figures and the spread.
from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from typing import Any

from loadtests import plots, report
from loadtests.aggregate import Ratio, Summary
from loadtests.workload import Workload

CSV_FIELDS = ["tool", "key", "model", "level", "requests", "keepalive", "runs", "valid",
              "noisy", "spread", "rps", "rps_min", "rps_max", "p50_ms", "p99_ms", "p99_min_ms",
              "p99_max_ms", "time_taken", "complete", "failed", "non_2xx", "total_bytes",
              "expected_size", "time_per_request", "transfer_rate",
              "server_cpu_us_per_request", "server_peak_rss_kb", "reasons"]


def to_json(summaries: Sequence[Summary], ratios: Sequence[Ratio], env: dict[str, Any],
            notes: Sequence[str] = ()) -> dict[str, Any]:
    """results.json as a dict."""
    return {"environment": env, "cells": [s.to_dict() for s in summaries],
            "ratios": [r.to_dict() for r in ratios], "notes": list(notes)}


def write_csv(summaries: Sequence[Summary], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for s in summaries:
            data = s.to_dict()
            row = {**data, **data["median"], "runs": len(s.runs),
                   "reasons": "; ".join(f"round {r['round']}: {r['reason']}"
                                        for r in data["runs"] if not r["valid"])}
            writer.writerow(row)


def write_all(summaries: Sequence[Summary], ratios: Sequence[Ratio], env: dict[str, Any],
              out_dir: str, notes: Sequence[str] = (), workload: Workload | None = None,
              path: str = "") -> list[str]:
    """results.md, results.csv, results.json and the plots under ``out_dir``; their paths."""
    workload = workload or Workload("static")
    os.makedirs(out_dir, exist_ok=True)
    files = [os.path.join(out_dir, n) for n in ("results.md", "results.csv", "results.json")]
    with open(files[0], "w", encoding="utf-8") as fh:
        fh.write(report.markdown(list(summaries), list(ratios), env, notes, workload, path))
    write_csv(summaries, files[1])
    with open(files[2], "w", encoding="utf-8") as fh:
        json.dump(to_json(summaries, ratios, env, notes), fh, indent=2)
        fh.write("\n")
    return files + plots.plot(list(summaries), out_dir, f"workload {workload.name}")


def read(path: str) -> dict[str, Any]:
    """A results.json back as a dict."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
