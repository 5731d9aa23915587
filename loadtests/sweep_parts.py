# loadtests/sweep_parts.py -- the locustfile's pure parts: bytes of a response head, sharing
# a level's requests among processes, and percentiles.
#
# Strategy: what loadtests/sweep.py computes without Locust running lives
# here, so it is small to read and to test: the head size is rebuilt from
# geventhttpclient's parse (its client keeps no raw head), with a check that
# fails loudly if that library starts parsing heads differently.
from __future__ import annotations

import math
from typing import Any

from geventhttpclient.response import HTTPResponse


def head_size(resp: Any) -> int:
    """Bytes of a response's head from the parse: ``HTTP/x.y code reason``, one ``name: value``
    per header line, each + CRLF, then CRLF (latin-1: a character a byte).  The parser drops
    the spaces before a value; the servers measured (ours, haproxy, nginx) write one."""
    parsed = resp._response  # FastResponse's geventhttpclient response (Locust reads it too)
    lines = [f"{parsed.version} {resp.status_code} {parsed.status_message}"]
    lines += [f"{name}: {value}" for name, value in resp.headers.items()]
    return sum(len(line.encode("latin-1")) + 2 for line in lines) + 2


def check_parser() -> None:
    """Fail loudly if geventhttpclient no longer parses a head the way head_size reads it."""
    probe = HTTPResponse()
    probe.feed(b"HTTP/1.1 200 OK\r\nName: value\r\n\r\n")
    got = [getattr(probe, a, None) for a in ("version", "status_message")] + [*probe.items()]
    if got != ["HTTP/1.1", "OK", ("Name", "value")]:
        raise RuntimeError(f"geventhttpclient changed: cannot rebuild response heads ({got})")


def split(total: int, weights: dict[str, int]) -> dict[str, int]:
    """``total`` divided in proportion to ``weights`` (largest remainder: sums exactly)."""
    whole = sum(weights.values())
    out = {k: total * w // whole for k, w in weights.items()}
    spare = total - sum(out.values())
    for k in sorted(weights, key=lambda k: -(total * weights[k] % whole))[:spare]:
        out[k] += 1
    return out


def percentile(ordered: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)] if ordered else None
