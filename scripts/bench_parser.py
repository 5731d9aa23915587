#!/usr/bin/env python3
"""Parser micro-benchmark: why gservers frames HTTP with httptools (llhttp).

Parses the same request heads (the one ab sends, and a browser-like one with
a dozen headers) with gservers.http.RequestParser (llhttp plus our checks)
and with h11, the pure-Python alternative.  Each figure is the median of
several rounds; the ratio is h11 / gservers.  Usage: scripts/bench_parser.py
[--rounds N] [--number N]."""
from __future__ import annotations

import argparse
import statistics
import timeit

import h11

from gservers.http import RequestParser

AB_REQUEST = (b"GET /page.html HTTP/1.0\r\nHost: 127.0.0.1:9002\r\n"
              b"User-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n")
BROWSER_REQUEST = (
    b"GET /images/sun.png?v=3 HTTP/1.1\r\nHost: 127.0.0.1:44444\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Connection: keep-alive\r\nReferer: http://127.0.0.1:44444/page.html\r\n"
    b"Sec-Fetch-Dest: image\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\n"
    b"Priority: u=5, i\r\nCache-Control: no-cache\r\nPragma: no-cache\r\n\r\n")


def with_gservers(data: bytes) -> None:
    events = RequestParser().feed(data)
    assert len(events) == 2, events


def with_h11(data: bytes) -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    assert isinstance(conn.next_event(), h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)


def measure(fn, data: bytes, rounds: int, number: int) -> float:
    """Median microseconds per parse over ``rounds`` rounds."""
    times = timeit.repeat(lambda: fn(data), repeat=rounds, number=number)
    return statistics.median(times) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds per figure (default 7)")
    ap.add_argument("--number", type=int, default=20000, help="parses per round (default 20000)")
    args = ap.parse_args()
    print(f"{'request':<10} {'gservers (llhttp) µs':>22} {'h11 µs':>10} {'h11/gservers':>13}")
    for name, data in (("ab", AB_REQUEST), ("browser", BROWSER_REQUEST)):
        ours = measure(with_gservers, data, args.rounds, args.number)
        theirs = measure(with_h11, data, args.rounds, args.number)
        print(f"{name:<10} {ours:>22.2f} {theirs:>10.2f} {theirs / ours:>12.1f}x")


if __name__ == "__main__":
    main()
