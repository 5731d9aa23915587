# gservers/http/writers.py -- HTTP/1.1 bytes out: status lines, heads, chunks, dates.
#
# Strategy: pure functions returning bytes, no sockets; the date is made at
# most once a second and status lines once at import, since every response
# needs both.
from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The current time as an IMF-fixdate, computed at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus
}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``."""
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status


def response_head(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Serialise a response head (status line, headers, blank line)."""
    parts = [status_line(status)]
    parts.extend(b"%s: %s\r\n" % (k, v) for k, v in headers)
    parts.append(b"\r\n")
    return b"".join(parts)


def request_head(method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Serialise an HTTP/1.1 request head."""
    parts = [b"%s %s HTTP/1.1\r\n" % (method, target)]
    parts.extend(b"%s: %s\r\n" % (k, v) for k, v in headers)
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never call with empty data)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def has_body(method: bytes, status: int) -> bool:
    """Whether a response to ``method`` with ``status`` carries a body."""
    return method != b"HEAD" and status not in (204, 304) and not 100 <= status < 200
