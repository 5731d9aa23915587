# loadtests/aggregate.py -- repeated runs -> cells with their spread, and ratios per round.
#
# Strategy: pure functions over the per-run Cells of a sweep.  ``schedule``
# gives the order of the runs: round by round, every (row, level) once per
# round, level by level, with the rows' order rotated by one each round so
# a slow drift of the machine falls on every row alike.  ``summarise``
# groups the runs of each (tool, row, level) into a Summary: the median run
# (by requests per second) stands for the cell in the seed's columns, beside
# the min-max of requests per second and p99 over the repeats; a cell is
# valid only when all its runs are, and noisy when its spread, (max - min) /
# median of requests per second, exceeds NOISY_SPREAD.  ``ratios`` divides
# two rows' requests per second within each round (never a median by a
# median), then reports the median and range over rounds, per level and
# overall (a round's overall figure is the median over its levels).
from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from loadtests.cell import Cell

#: A cell whose (max - min) / median of requests per second exceeds this is noisy.
NOISY_SPREAD = 0.25
#: (numerator, denominator) row keys of the ratios reported, when both rows were measured.
RATIO_PAIRS = [("thread", "async"), ("lb", "async"), ("lb", "haproxy"), ("lb", "nginx"),
               ("haproxy", "async"), ("nginx", "async")]


def schedule(rows: Sequence[str], levels: Sequence[int],
             repeat: int) -> list[tuple[int, str, int]]:
    """Every run as (round, row, level), in the order to run them (rounds are 1-based)."""
    order = []
    for index in range(repeat):
        shift = index % len(rows) if rows else 0
        rotated = list(rows[shift:]) + list(rows[:shift])
        for level in levels:
            order.extend((index + 1, row, level) for row in rotated)
    return order


@dataclass
class Summary:
    """One cell of the table: the runs of one (tool, row, level)."""

    tool: str
    model: str
    level: int
    runs: list[Cell]  #: in round order

    @property
    def valid(self) -> bool:
        return all(run.valid for run in self.runs)

    @property
    def median(self) -> Cell:
        """The run with the median requests per second (the lower one of an even count)."""
        ordered = sorted(self.runs, key=lambda run: run.rps)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def rps_min(self) -> float:
        return min(run.rps for run in self.runs)

    @property
    def rps_max(self) -> float:
        return max(run.rps for run in self.runs)

    @property
    def p99_min(self) -> float | None:
        values = [run.p99 for run in self.runs if run.p99 is not None]
        return min(values) if values else None

    @property
    def p99_max(self) -> float | None:
        values = [run.p99 for run in self.runs if run.p99 is not None]
        return max(values) if values else None

    @property
    def spread(self) -> float:
        """(max - min) / median of requests per second; 0 for a single run."""
        middle = statistics.median(run.rps for run in self.runs)
        return (self.rps_max - self.rps_min) / middle if middle else 0.0

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD

    @property
    def invalid_runs(self) -> list[Cell]:
        return [run for run in self.runs if not run.valid]

    @property
    def name(self) -> str:
        return self.runs[0].model_name

    def to_dict(self) -> dict[str, Any]:
        """The cell as results.json has it."""
        m = self.median
        median = {"time_taken": m.time_taken, "complete": m.complete, "failed": m.failed,
                  "total_transferred": m.total_transferred, "rps": m.rps,
                  "time_per_request": m.time_per_request, "transfer_rate": m.transfer_rate,
                  "p50_ms": m.p50, "p99_ms": m.p99, "non_2xx": m.non_2xx,
                  "total_bytes": m.total_transferred, "round": m.round,
                  "server_cpu_us_per_request": m.server_cpu_us,
                  "server_peak_rss_kb": m.server_peak_rss_kb}
        return {"model": self.name, "key": self.model, "level": self.level, "tool": self.tool,
                "valid": self.valid, "noisy": self.noisy, "spread": self.spread,
                "requests": m.requests, "keepalive": m.keepalive,
                "expected_size": m.expected_size, "median": median,
                "rps_min": self.rps_min, "rps_max": self.rps_max,
                "p99_min_ms": self.p99_min, "p99_max_ms": self.p99_max,
                "runs": [{"round": r.round, "rps": r.rps, "p99_ms": r.p99, "failed": r.failed,
                          "non_2xx": r.non_2xx, "total_bytes": r.total_transferred,
                          "valid": r.valid, "reason": "; ".join(r.reasons)}
                         for r in self.runs]}


def summarise(runs: Iterable[Cell]) -> list[Summary]:
    """One Summary per (tool, row, level), in the order each first ran."""
    groups: dict[tuple[str, str, int], list[Cell]] = {}
    for run in runs:
        groups.setdefault((run.tool, run.model, run.concurrency), []).append(run)
    return [Summary(tool, model, level, sorted(group, key=lambda r: r.round))
            for (tool, model, level), group in groups.items()]


def ordered(summaries: Iterable[Summary], rows: Sequence[str]) -> list[Summary]:
    """The cells by tool, then by row in ``rows`` order, then by level (the table's order)."""
    rank = {row: i for i, row in enumerate(rows)}
    return sorted(summaries, key=lambda s: (s.tool, rank.get(s.model, len(rank)), s.level))


@dataclass(frozen=True)
class Ratio:
    """The requests per second of one row over another's, per round: median and range."""

    tool: str
    name: str            #: e.g. "lb/haproxy"
    level: int | str     #: a concurrency level, or "all"
    median: float
    min: float
    max: float
    rounds: int          #: how many rounds gave a figure

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "tool": self.tool,
                "median": self.median, "min": self.min, "max": self.max,
                "rounds": self.rounds}


def _ratio(values: list[float], tool: str, name: str, level: int | str) -> Ratio:
    return Ratio(tool, name, level, statistics.median(values), min(values), max(values),
                 len(values))


def ratios(runs: Iterable[Cell], pairs: Sequence[tuple[str, str]] = RATIO_PAIRS) -> list[Ratio]:
    """Each pair's ratio per level and overall, over the rounds where both runs were valid."""
    rate: dict[tuple[str, str, int, int], float] = {}
    for run in runs:
        if run.valid and run.rps > 0:
            rate[(run.tool, run.model, run.concurrency, run.round)] = run.rps
    tools = sorted({key[0] for key in rate})
    levels = sorted({key[2] for key in rate})
    rounds = sorted({key[3] for key in rate})
    out = []
    for tool in tools:
        for top, bottom in pairs:
            name = f"{top}/{bottom}"
            per_round: dict[int, list[float]] = {}
            for level in levels:
                values = []
                for rnd in rounds:
                    a, b = rate.get((tool, top, level, rnd)), rate.get((tool, bottom, level, rnd))
                    if a is not None and b is not None:
                        values.append(a / b)
                        per_round.setdefault(rnd, []).append(a / b)
                if values:
                    out.append(_ratio(values, tool, name, level))
            if per_round:
                overall = [statistics.median(v) for v in per_round.values()]
                out.append(_ratio(overall, tool, name, "all"))
    return out
