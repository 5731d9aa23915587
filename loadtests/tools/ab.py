# loadtests/tools/ab.py -- run ApacheBench for one cell and read everything it prints.
#
# Strategy: ``ab`` is run as a subprocess with ``-r`` (a receive error is
# counted, not fatal: the seed's runs "completed" requests that were empty
# connections) and ``-e`` (a CSV of the 0-100th percentiles in fractional
# milliseconds, finer than the whole-ms table on stdout).  ``parse`` is a
# pure function over ab's text, tested on saved outputs; ``judge`` decides
# validity from the figures alone: every response must be a 2xx of the
# expected full size, or the cell is invalid and says why.  ``request`` is
# the request ab sends, which loadtests.tools.probe sizes that response by.
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from loadtests.tools import probe


class AbError(Exception):
    """ab could not run at all (missing, bad arguments)."""


@dataclass
class AbResult:
    """ab's figures for one run (times in seconds or ms as ab prints them)."""

    concurrency: int = 0
    time_taken: float = 0.0            #: s
    complete: int = 0
    failed: int = 0
    failed_connect: int = 0
    failed_receive: int = 0
    failed_length: int = 0
    failed_exceptions: int = 0
    non_2xx: int = 0
    keepalive_requests: int = 0
    total_transferred: int = 0         #: bytes, heads and bodies
    html_transferred: int = 0          #: bytes, bodies
    rps: float = 0.0
    time_per_request: float = 0.0      #: ms, mean per concurrent client
    time_per_request_all: float = 0.0  #: ms, mean across all concurrent requests
    transfer_rate: float = 0.0         #: KB/s received
    connection_times: dict[str, dict[str, float]] = field(default_factory=dict)
    percentiles: dict[int, float] = field(default_factory=dict)  #: percent -> ms
    document_length: int = 0
    aborted: str = ""                  #: ab's error line when it gave up early
    total_completed_before_abort: int = 0


_NUM = r"([0-9]+(?:\.[0-9]+)?)"
_FIELDS: list[tuple[str, str, Any]] = [
    ("concurrency", rf"^Concurrency Level:\s+{_NUM}", int),
    ("time_taken", rf"^Time taken for tests:\s+{_NUM} seconds", float),
    ("complete", rf"^Complete requests:\s+{_NUM}", int),
    ("failed", rf"^Failed requests:\s+{_NUM}", int),
    ("non_2xx", rf"^Non-2xx responses:\s+{_NUM}", int),
    ("keepalive_requests", rf"^Keep-Alive requests:\s+{_NUM}", int),
    ("total_transferred", rf"^Total transferred:\s+{_NUM} bytes", int),
    ("html_transferred", rf"^HTML transferred:\s+{_NUM} bytes", int),
    ("rps", rf"^Requests per second:\s+{_NUM}", float),
    ("time_per_request", rf"^Time per request:\s+{_NUM} \[ms\] \(mean\)$", float),
    ("time_per_request_all", rf"^Time per request:\s+{_NUM} \[ms\] \(mean, across", float),
    ("transfer_rate", rf"^Transfer rate:\s+{_NUM} \[Kbytes/sec\]", float),
    ("document_length", rf"^Document Length:\s+{_NUM} bytes", int),
]


def parse(text: str, percentile_csv: str = "") -> AbResult:
    """Every figure ab printed (and, given ``-e`` output, its percentiles)."""
    result = AbResult()
    for name, pattern, kind in _FIELDS:
        match = re.search(pattern, text, re.M)
        if match:
            setattr(result, name, kind(match.group(1)))
    breakdown = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)",
                          text)
    if breakdown:
        (result.failed_connect, result.failed_receive, result.failed_length,
         result.failed_exceptions) = map(int, breakdown.groups())
    for row in ("Connect", "Processing", "Waiting", "Total"):
        match = re.search(rf"^{row}:\s+{_NUM}\s+{_NUM}\s+{_NUM}\s+{_NUM}\s+{_NUM}", text, re.M)
        if match:
            low, mean, sd, median, high = map(float, match.groups())
            result.connection_times[row.lower()] = {"min": low, "mean": mean, "sd": sd,
                                                   "median": median, "max": high}
    for pct, ms in re.findall(r"^\s+(\d+)%\s+(\d+)", text, re.M):
        result.percentiles[int(pct)] = float(ms)
    if percentile_csv:
        fine = {}
        for row in csv.reader(percentile_csv.splitlines()[1:]):
            if len(row) == 2:
                fine[int(float(row[0]))] = float(row[1])
        if fine:
            result.percentiles = fine
    abort = re.search(r"(apr_\w+(?:\(\))?: [^\n]*)", text)
    if abort and not result.complete:
        result.aborted = abort.group(1).strip()
        done = re.search(r"Total of (\d+) requests completed", text)
        result.total_completed_before_abort = int(done.group(1)) if done else 0
    return result


def judge(result: AbResult, requests: int, expected_size: int) -> list[str]:
    """Why the cell is not valid (an empty list when it is)."""
    reasons = []
    if result.aborted:
        reasons.append(f"ab gave up: {result.aborted} after "
                       f"{result.total_completed_before_abort} requests")
    if result.complete != requests:
        reasons.append(f"complete {result.complete} != {requests} requested")
    if result.failed:
        reasons.append(f"failed {result.failed} (connect {result.failed_connect}, receive "
                       f"{result.failed_receive}, length {result.failed_length}, exceptions "
                       f"{result.failed_exceptions})")
    if result.non_2xx:
        reasons.append(f"non-2xx {result.non_2xx}")
    if result.total_transferred != requests * expected_size:
        reasons.append(f"total transferred {result.total_transferred} != {requests} x "
                       f"{expected_size} bytes")
    return reasons


def ab_path() -> str:
    """The ab binary, or AbError saying how to get it."""
    path = shutil.which("ab")
    if not path:
        raise AbError("ApacheBench (ab) is not installed: apt-get install apache2-utils")
    return path


def run(url: str, requests: int, concurrency: int, keepalive: bool = False,
        timeout: float = 60.0) -> tuple[AbResult, str]:
    """Run ab once; return its parsed figures and its raw output."""
    with tempfile.TemporaryDirectory() as tmp:
        pct = os.path.join(tmp, "percentiles.csv")
        argv = [ab_path(), "-r", "-s", str(int(timeout)), "-n", str(requests),
                "-c", str(concurrency), "-e", pct]
        if keepalive:
            argv.append("-k")
        argv.append(url)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=timeout * 2 + 30)
        except subprocess.TimeoutExpired:
            result = AbResult(concurrency=concurrency, aborted=f"ab did not finish in "
                              f"{timeout * 2 + 30:.0f}s")
            return result, ""
        output = proc.stdout + proc.stderr
        csv_text = open(pct).read() if os.path.exists(pct) else ""
    result = parse(output, csv_text)
    if proc.returncode != 0 and not result.aborted:
        result.aborted = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return result, output


def request(host: str, port: int, path: str, keepalive: bool = False) -> bytes:
    """The request ab sends for ``http://host:port/path`` (with ``-k`` when
    ``keepalive``)."""
    return (f"GET {path} HTTP/1.0\r\n" + ("Connection: Keep-Alive\r\n" if keepalive else "")
            + f"Host: {host}:{port}\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n"
            ).encode()


def response_size(host: str, port: int, path: str, keepalive: bool = False) -> int:
    """Bytes of one full response to the request ab would send."""
    return probe.response_size(host, port, request(host, port, path, keepalive))
