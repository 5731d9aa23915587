# tests/integration/test_corpus.py -- the raw request corpus against real backends.
#
# Strategy: every file under tests/requests (format in its README) is sent
# verbatim over a fresh TCP connection to a backend of each model (the
# module-scoped ``backend`` fixture starts one per model through the CLI).
# When the case leaves the connection open (``close: no``) one more request,
# GET /page.html with Connection: close, is appended: its 200 proves the
# connection was still usable and makes the server close, so every exchange
# ends on EOF instead of a timeout.  The reply is split into responses with
# tests.support.parse_responses and the statuses must match exactly (no
# response missing, none extra); the connection must have been closed by the
# server, and a closing response must say ``Connection: close``.  After each
# invalid case a new connection must still get 200 for GET /page.html.
from __future__ import annotations

import pytest

from tests.corpus import CASES, Case
from tests.support import Reply, Server, parse_responses, send_and_read

CLOSER = b"GET /page.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
#: Longest wait for the server's answer or close; a healthy exchange ends at once.
READ_TIMEOUT = 2.0


def split(data: bytes, methods: tuple[bytes, ...]) -> list[Reply]:
    """All responses in ``data`` (beyond ``methods``, assume GET)."""
    replies = parse_responses(data, list(methods) + [b"GET"] * 32)
    assert sum(len(r.raw) for r in replies) == len(data), f"trailing bytes in {data!r}"
    return replies


def assert_page_served(port: int) -> None:
    data, closed = send_and_read(port, CLOSER, READ_TIMEOUT)
    replies = split(data, (b"GET",))
    assert closed and [r.status for r in replies] == [200], data[:200]
    assert b"It works" in replies[0].body


@pytest.mark.parametrize("case", [c.param("socket") for c in CASES])
def test_corpus(backend: Server, case: Case) -> None:
    payload, statuses, methods = case.data, case.statuses, case.methods
    if not case.close:
        payload += CLOSER
        statuses += (200,)
        methods += (b"GET",)
    data, closed = send_and_read(backend.port, payload, READ_TIMEOUT)
    replies = split(data, methods)
    assert [r.status for r in replies] == list(statuses), data[:600]
    assert closed, "the server kept the connection open"
    assert replies[-1].header("connection") == b"close"
    for reply, method in zip(replies, methods, strict=False):
        if reply.status >= 400:
            # Every error has a short text body (none for HEAD).
            assert reply.header("content-type") is not None
            assert (reply.body != b"") == (method != b"HEAD")
        if reply.status == 405:
            assert reply.header("allow") == b"GET, HEAD, POST, OPTIONS"
        if reply.status >= 200:
            assert reply.header("date") and reply.header("server")
    if case.kind == "invalid":
        assert_page_served(backend.port)


def test_server_survived(backend: Server) -> None:
    """After the whole corpus the process is still up and serving."""
    assert backend.proc.poll() is None
    assert_page_served(backend.port)
