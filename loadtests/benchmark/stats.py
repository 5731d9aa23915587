# loadtests/benchmark/stats.py -- measured runs and their medians.
#
# Strategy: pure data and pure functions, unit-tested on hand-built runs.
# One Run is one load-generator invocation against one target, with the
# verdict of its tool's judge (a run with reasons is invalid).  The medians
# per (target, workload) leave invalid runs out but count them, so a report
# can say "2/3 valid" loudly instead of hiding a bad run.  Figures that could
# not be measured are None throughout, and print as "-".
from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtests.benchmark.workloads import Workload


@dataclass
class Run:
    """One measured run: one load-generator invocation against one target."""

    target: str                    #: a balancer or a reference
    workload: Workload
    round: int
    requests: int                  #: asked for (ab); completed (wrk)
    complete: int
    rps: float
    p50: float | None              #: ms
    p99: float | None              #: ms
    expected_size: int             #: bytes of one full response
    reasons: list[str] = field(default_factory=list)  #: why invalid
    server_cpu: float = 0.0        #: s, the target's own process tree
    backend_cpu: float | None = None  #: s, the four backends (balancer rows only)
    peak_rss_kb: int = 0           #: VmHWM of the target's processes after the run
    elapsed: float = 0.0           #: s, wall time of the load generator
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.reasons

    @property
    def cpu_us(self) -> float | None:
        """Target CPU per completed request, in microseconds."""
        return self.server_cpu / self.complete * 1e6 if self.complete else None

    @property
    def backend_cpu_us(self) -> float | None:
        """Backends' CPU per completed request, in microseconds."""
        if self.backend_cpu is None or not self.complete:
            return None
        return self.backend_cpu / self.complete * 1e6

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready data, its workload by name and parts."""
        data = asdict(self)
        for key in ("target", "workload", "round"):
            del data[key]
        w = self.workload
        return {"target": self.target, "workload": w.name, "round": self.round, "tool": w.tool,
                "keepalive": w.keepalive, "concurrency": w.concurrency, **data,
                "valid": self.valid, "cpu_us_per_request": self.cpu_us,
                "backend_cpu_us_per_request": self.backend_cpu_us}


@dataclass
class Summary:
    """Medians over the valid runs of one (target, workload)."""

    target: str
    workload: Workload
    runs: int
    invalid: int
    rps: float | None
    p50: float | None
    p99: float | None
    cpu_us: float | None
    backend_cpu_us: float | None
    peak_rss_mb: float | None

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data, its workload by name."""
        return {**asdict(self), "workload": self.workload.name}


#: Summaries by (target, workload), in the order the runs were first seen.
Summaries = dict[tuple[str, Workload], Summary]


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None (None when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def fmt(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    """A figure for a table: ``-`` when it is missing."""
    return "-" if value is None else f"{value:{spec}}{unit}"


def summarize(runs: Sequence[Run]) -> Summaries:
    """Medians per (target, workload), in first-seen order; invalid runs are
    counted but left out of the medians."""
    groups: dict[tuple[str, Workload], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.target, run.workload), []).append(run)
    out = {}
    for key, group in groups.items():
        good = [r for r in group if r.valid]
        rss = median(r.peak_rss_kb for r in good if r.peak_rss_kb)
        out[key] = Summary(key[0], key[1], len(group), len(group) - len(good),
                           median(r.rps for r in good), median(r.p50 for r in good),
                           median(r.p99 for r in good), median(r.cpu_us for r in good),
                           median(r.backend_cpu_us for r in good),
                           None if rss is None else rss / 1024)
    return out


def figure(summary: Summaries, target: str, workload: Workload, attr: str) -> float | None:
    """One median (``attr`` of a Summary), None when that pair was not run."""
    item = summary.get((target, workload))
    return None if item is None else getattr(item, attr)


def invalid_lines(runs: Sequence[Run]) -> list[str]:
    """One line per invalid run."""
    return [f"INVALID: round {r.round} {r.target} {r.workload}: {'; '.join(r.reasons)}"
            for r in runs if not r.valid]
