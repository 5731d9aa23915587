# loadtests/cell.py -- one measured cell of the sweep: (tool, model, concurrency).
#
# Strategy: ab and Locust both end in the same flat record, so their cells sit
# side by side in one table, one CSV and one JSON.  The record keeps the
# seed's columns (time taken, complete, failed, total transferred, requests
# per second, time per request, transfer rate) plus latency percentiles, the
# CPU the servers and the load generator used, and the verdict: a cell is
# valid only when every response was a 2xx of the expected full size.
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from loadtests.tools.ab import AbResult, judge

#: The seed's three server models, in its order.
MODELS = {"async": "Asynchronous", "thread": "Thread", "lb": "Asynchronous+LB"}
#: The reference balancers, over the same four async backends as the lb.
REFERENCES = {"haproxy": "Asynchronous+haproxy", "nginx": "Asynchronous+nginx"}


def row_name(key: str) -> str:
    """The table's name for a row key (a model, a reference, or a target's own name)."""
    return MODELS.get(key) or REFERENCES.get(key) or key


@dataclass
class Cell:
    """One row of the results table."""

    tool: str                      #: "ab" or "locust"
    model: str                     #: a row key: of MODELS, of REFERENCES or a target's name
    concurrency: int
    requests: int                  #: requests asked for
    keepalive: bool
    time_taken: float              #: s
    complete: int
    failed: int
    non_2xx: int
    total_transferred: int         #: bytes (heads and bodies)
    rps: float
    time_per_request: float        #: ms, mean per concurrent client (ab's first figure)
    transfer_rate: float           #: KB/s
    p50: float | None              #: ms
    p90: float | None
    p99: float | None
    expected_size: int             #: bytes of one full response
    reasons: list[str] = field(default_factory=list)  #: why the cell is invalid
    server_cpu: float | None = 0.0  #: CPU seconds the server processes used (None: not ours)
    client_cpu: float = 0.0        #: CPU seconds the load generator used
    detail: dict[str, Any] = field(default_factory=dict)  #: the tool's other figures
    round: int = 1                 #: which round of the sweep measured it (1-based)
    server_peak_rss_kb: int | None = None  #: peak RSS summed over the server processes

    @property
    def valid(self) -> bool:
        return not self.reasons

    @property
    def model_name(self) -> str:
        return row_name(self.model)

    @property
    def server_cpu_us(self) -> float | None:
        """Server CPU per completed request, in microseconds."""
        if self.server_cpu is None or not self.complete:
            return None
        return self.server_cpu / self.complete * 1e6

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["valid"] = self.valid
        data["model_name"] = self.model_name
        data["server_cpu_us_per_request"] = self.server_cpu_us
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def from_ab(result: AbResult, model: str, requests: int, keepalive: bool,
            expected_size: int) -> Cell:
    """The cell for one ab run, judged."""
    pct = result.percentiles
    detail = {
        "failed_connect": result.failed_connect, "failed_receive": result.failed_receive,
        "failed_length": result.failed_length, "failed_exceptions": result.failed_exceptions,
        "html_transferred": result.html_transferred,
        "keepalive_requests": result.keepalive_requests,
        "time_per_request_all": result.time_per_request_all,
        "connection_times": result.connection_times, "aborted": result.aborted,
    }
    return Cell("ab", model, result.concurrency, requests, keepalive, result.time_taken,
                result.complete, result.failed, result.non_2xx, result.total_transferred,
                result.rps, result.time_per_request, result.transfer_rate,
                pct.get(50), pct.get(90), pct.get(99), expected_size,
                judge(result, requests, expected_size), detail=detail)
