# lb/accesslog.py -- one access log line per request: text or JSON.
#
# Strategy: a pure function from what the proxy knows at the end of a
# request to one line, so the format is tested without a balancer.  Each
# line starts with the time (ISO 8601, UTC, milliseconds), then the client,
# the request line (method, target, protocol), status, bytes sent, the
# backend, the backend's and the whole request's time, and the
# X-Forwarded-For the backend was sent (the client's list with its address
# appended, as lb.rewrite writes it).  ``json`` gives the same fields as one
# object per line, for log shippers.  Only built when a log is configured.
from __future__ import annotations

import json
import time

from gservers.http import Head


def forwarded_for(head: Head, client_ip: str) -> str:
    """The X-Forwarded-For the backend is sent for ``head``."""
    sent = [v.decode("latin-1") for n, v in head.headers if n.lower() == b"x-forwarded-for"]
    return ", ".join([*sent, client_ip])


def timestamp(now: float) -> str:
    """``now`` (a time.time()) as ISO 8601 UTC with milliseconds."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{whole}.{int(now % 1 * 1000):03d}Z"


def entry(fmt: str, now: float, client: str, head: Head, status: int, size: int,
          backend: str, upstream_s: float, total_s: float) -> str:
    """One access log line (with its newline) in ``fmt`` ("text" or "json")."""
    method = head.method.decode("latin-1")
    target = head.target.decode("latin-1")
    protocol = f"HTTP/{head.version}"
    xff = forwarded_for(head, client)
    if fmt == "json":
        return json.dumps({
            "time": timestamp(now), "client": client, "method": method, "target": target,
            "protocol": protocol, "status": status, "bytes": size, "backend": backend,
            "upstream_ms": round(upstream_s * 1000, 2), "total_ms": round(total_s * 1000, 2),
            "x_forwarded_for": xff}, separators=(",", ":")) + "\n"
    return (f"{timestamp(now)} {client} {method} {target} {protocol} {status} {size} "
            f"{backend} {upstream_s * 1000:.2f}ms {total_s * 1000:.2f}ms "
            f"xff=\"{xff}\"\n")
