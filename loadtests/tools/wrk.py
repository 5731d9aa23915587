# loadtests/tools/wrk.py -- run wrk for one keep-alive run and read everything it prints.
#
# Strategy: ``wrk --latency`` is run as a subprocess for a fixed duration;
# ``parse`` is a pure function over its text (tested on saved outputs) and
# ``judge`` decides validity from the figures alone: some requests, no
# non-2xx/3xx, no socket error, and the bytes read within a small tolerance
# of requests x one full response (wrk rounds its byte count, and responses
# in flight at the end are read in part).  ``request`` is the request wrk
# sends (HTTP/1.1, Host only), which loadtests.tools.probe sizes that
# response by.
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

from loadtests.tools import probe


@dataclass
class WrkResult:
    """wrk's figures for one run (latencies in ms, bytes as wrk rounds them)."""

    threads: int = 0
    connections: int = 0
    requests: int = 0
    duration: float = 0.0          #: s
    bytes_read: float = 0.0        #: bytes (wrk prints 2 decimals of KB/MB/GB)
    rps: float = 0.0
    latency: dict[int, float] = field(default_factory=dict)  #: percent -> ms
    non_2xx: int = 0               #: wrk's "Non-2xx or 3xx responses"
    socket_errors: dict[str, int] = field(default_factory=dict)  #: connect/read/write/timeout


_UNITS_TIME = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_UNITS_SIZE = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}
_TOTALS_RE = re.compile(
    r"(\d+) requests in ([0-9.]+)(us|ms|s|m|h), ([0-9.]+)(B|KB|MB|GB|TB) read")
_ERRORS_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def _duration_ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_TIME[unit]


def parse(text: str) -> WrkResult:
    """Every figure ``wrk --latency`` printed."""
    result = WrkResult()
    match = re.search(r"(\d+) threads and (\d+) connections", text)
    if match:
        result.threads, result.connections = int(match.group(1)), int(match.group(2))
    match = _TOTALS_RE.search(text)
    if match:
        result.requests = int(match.group(1))
        result.duration = _duration_ms(match.group(2), match.group(3)) / 1000.0
        result.bytes_read = float(match.group(4)) * _UNITS_SIZE[match.group(5)]
    match = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if match:
        result.rps = float(match.group(1))
    for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([0-9.]+)(us|ms|s|m|h)\s*$", text, re.M):
        result.latency[int(pct)] = _duration_ms(value, unit)
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if match:
        result.non_2xx = int(match.group(1))
    match = _ERRORS_RE.search(text)
    if match:
        result.socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                        map(int, match.groups()), strict=True))
    return result


def judge(result: WrkResult, expected_size: int, tolerance: float = 0.02) -> list[str]:
    """Why a wrk run is not valid (an empty list when it is).

    Valid: some requests, no non-2xx/3xx, no socket error, and the bytes read
    within ``tolerance`` of requests x one full response."""
    reasons = []
    if result.requests <= 0:
        reasons.append("wrk completed no request (or its output could not be read)")
    if result.non_2xx:
        reasons.append(f"non-2xx/3xx {result.non_2xx}")
    errors = {k: v for k, v in result.socket_errors.items() if v}
    if errors:
        reasons.append("socket errors " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    if result.requests > 0 and expected_size > 0:
        expected = result.requests * expected_size
        if abs(result.bytes_read - expected) > tolerance * expected:
            reasons.append(f"read {result.bytes_read:.0f} bytes, expected about {expected} "
                           f"({result.requests} x {expected_size})")
    return reasons


def run(wrk: str, url: str, concurrency: int, duration: float,
        threads: int = 1) -> tuple[WrkResult, str]:
    """``wrk -tT -cC -dDs --latency`` with the program at path ``wrk``; its
    parsed figures and raw output."""
    argv = [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{duration:g}s", "--latency",
            "--timeout", "10s", url]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        return WrkResult(), "wrk did not finish"
    return parse(proc.stdout), proc.stdout + proc.stderr


def request(host: str, port: int, path: str) -> bytes:
    """The request wrk sends for ``http://host:port/path``."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


def response_size(host: str, port: int, path: str) -> int:
    """Bytes of one full response to the request wrk sends."""
    return probe.response_size(host, port, request(host, port, path))
