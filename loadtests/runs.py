# loadtests/runs.py -- measuring the sweep's runs, in the interleaved order, with progress.
#
# Strategy: the entry module decides what to run; this module runs it.  ab
# runs follow loadtests.aggregate.schedule one (round, row, level) at a time;
# Locust sweeps all levels of one row per invocation (its locustfile steps
# through them), so its schedule is (round, row) with the same rotation.
# Each run is judged on its own (loadtests.cell.from_ab, or the locustfile's
# verdict) and tagged with its round, with the CPU its row's servers used
# during it (nothing for a target we did not start).  A Progress prints one
# plain line per run with its figures and an estimate of the time left.
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TextIO

from loadtests import aggregate, report
from loadtests.cell import Cell, from_ab
from loadtests.rows import Row
from loadtests.tools import ab

#: Pause between two runs, so the last run's connections close and the backlog empties.
SETTLE_S = 0.2
LOCUST_TIMEOUT_S = 1800


class Progress:
    """One line per finished run: the cell, its figures, and the time left,
    estimated per tool (a Locust run costs far more than an ab run)."""

    def __init__(self, totals: dict[str, int], out: TextIO = sys.stderr) -> None:
        self.totals, self.out = dict(totals), out
        self.total, self.done = sum(totals.values()), 0
        self.spent: dict[str, float] = {tool: 0.0 for tool in totals}
        self.counts: dict[str, int] = {tool: 0 for tool in totals}
        self.last = time.monotonic()

    def eta(self) -> str:
        """The time left: each tool's runs to go at its own pace so far (a
        tool not started yet at the pace of those that have)."""
        done = sum(self.counts.values())
        if not done:
            return "?"
        overall = sum(self.spent.values()) / done
        left = sum((self.totals[t] - self.counts[t])
                   * (self.spent[t] / self.counts[t] if self.counts[t] else overall)
                   for t in self.totals)
        return f"{int(left) // 60}:{int(left) % 60:02d}"

    def ran(self, cell: Cell) -> None:
        now = time.monotonic()
        tool = cell.tool if cell.tool in self.totals else next(iter(self.totals))
        self.spent[tool] += now - self.last
        self.counts[tool] += 1
        self.last = now
        self.done += 1
        verdict = "valid" if cell.valid else "INVALID: " + "; ".join(cell.reasons)
        p99 = "-" if cell.p99 is None else f"{cell.p99:.1f} ms"
        self.out.write(f"[{self.done}/{self.total}] round {cell.round} {cell.tool} "
                       f"{cell.model_name} c={cell.concurrency}: {cell.rps:.0f} req/s, "
                       f"p99 {p99}, {verdict}; about {self.eta()} left\n")
        self.out.flush()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ab_run(row: Row, level: int, requests: int, keepalive: bool, rnd: int) -> Cell:
    """One ab run against ``row`` at concurrency ``level``, judged."""
    peak = row.reset_peak_rss()
    cpu0 = row.cpu_seconds()
    client0 = _children_cpu()
    result, _ = ab.run(row.url, requests, level, keepalive)
    result.concurrency = result.concurrency or level
    cell = from_ab(result, row.key, requests, keepalive, row.size)
    cpu1 = row.cpu_seconds()
    cell.server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    cell.client_cpu = _children_cpu() - client0
    cell.server_peak_rss_kb = row.peak_rss_kb() if peak else None
    cell.round = rnd
    return cell


def ab_runs(rows: Sequence[Row], levels: Sequence[int], requests: int, keepalive: bool,
            repeat: int, progress: Progress) -> list[Cell]:
    """Every ab run of the sweep, interleaved (aggregate.schedule)."""
    by_key = {row.key: row for row in rows}
    cells = []
    for rnd, key, level in aggregate.schedule([r.key for r in rows], levels, repeat):
        cell = ab_run(by_key[key], level, requests, keepalive, rnd)
        cells.append(cell)
        progress.ran(cell)
        time.sleep(SETTLE_S)
    return cells


def locust_run(row: Row, levels: Sequence[int], requests: int, rnd: int) -> list[Cell]:
    """One Locust sweep of ``row`` over all ``levels`` (loadtests/sweep.py)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cells.json")
        peak = row.reset_peak_rss()
        cpu0 = row.cpu_seconds()
        argv = [sys.executable, "-m", "locust", "-f", os.path.join(here, "sweep.py"),
                "--headless", "-H", f"http://{row.host}:{row.port}", "--sweep-levels",
                ",".join(map(str, levels)), "--sweep-requests", str(requests),
                "--sweep-model", row.key, "--sweep-path", row.path, "--sweep-out", out,
                "--loglevel", "WARNING", "--only-summary"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=LOCUST_TIMEOUT_S)
        if not os.path.exists(out):
            raise RuntimeError(f"locust wrote no results (exit {proc.returncode}):\n"
                               + proc.stderr[-2000:])
        cells, _ = report.read_json(out)
    missing = [level for level in levels if level not in {c.concurrency for c in cells}]
    for level in missing:  # a level Locust never closed is a run that failed, not a gap
        cells.append(Cell("locust", row.key, level, requests, True, 0.0, 0, 0, 0, 0, 0.0,
                          0.0, 0.0, None, None, None, 0, [
                              f"Locust stopped before this level ended (exit "
                              f"{proc.returncode}): {proc.stderr.strip()[-300:]}"]))
    cpu1 = row.cpu_seconds()
    rss = row.peak_rss_kb() if peak else None  # over the whole Locust sweep of the row
    spent = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    done = sum(c.complete for c in cells) or 1
    for cell in cells:  # the run's server CPU, shared out by requests served
        cell.server_cpu = None if spent is None else spent * cell.complete / done
        cell.server_peak_rss_kb = rss
        cell.round = rnd
    return cells


def locust_runs(rows: Sequence[Row], levels: Sequence[int], requests: int, repeat: int,
                progress: Progress) -> list[Cell]:
    """Every Locust sweep, one per (round, row), rows rotated each round."""
    by_key = {row.key: row for row in rows}
    cells: list[Cell] = []
    for rnd, key, _ in aggregate.schedule([r.key for r in rows], [0], repeat):
        got = locust_run(by_key[key], levels, requests, rnd)
        for cell in got:
            progress.ran(cell)
        cells += got
        time.sleep(SETTLE_S)
    return cells
