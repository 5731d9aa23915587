# tests/unit/test_accesslog.py -- the access log's line, text and JSON.
#
# Strategy: lb.accesslog.entry is pure: a head parsed by the real
# RequestParser and fixed figures give a line whose every field is known.
from __future__ import annotations

import json
import re

from gservers.http import Head, RequestParser
from lb.accesslog import entry, timestamp

NOW = 1796083200.25  # 2026-12-01T00:00:00.250Z


def head(extra: str = "") -> Head:
    [event, *_] = RequestParser().feed(
        f"GET /p?q=1 HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
    assert isinstance(event, Head)
    return event


def test_timestamps_are_iso_8601_utc_with_milliseconds() -> None:
    assert timestamp(NOW) == "2026-12-01T00:00:00.250Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", timestamp(0.999))


def test_a_text_line_starts_with_the_time_and_has_protocol_and_forwarded_for() -> None:
    line = entry("text", NOW, "10.0.0.7", head("X-Forwarded-For: 1.2.3.4\r\n"), 200, 240,
                 "127.0.0.1:9002", 0.0012, 0.0034)
    assert line == ("2026-12-01T00:00:00.250Z 10.0.0.7 GET /p?q=1 HTTP/1.1 200 240 "
                    "127.0.0.1:9002 1.20ms 3.40ms xff=\"1.2.3.4, 10.0.0.7\"\n")


def test_a_json_line_has_the_same_fields() -> None:
    line = entry("json", NOW, "10.0.0.7", head(), 503, 23, "-", 0.0, 0.0005)
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {
        "time": "2026-12-01T00:00:00.250Z", "client": "10.0.0.7", "method": "GET",
        "target": "/p?q=1", "protocol": "HTTP/1.1", "status": 503, "bytes": 23,
        "backend": "-", "upstream_ms": 0.0, "total_ms": 0.5, "x_forwarded_for": "10.0.0.7"}
