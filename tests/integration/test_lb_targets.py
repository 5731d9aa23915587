# tests/integration/test_lb_targets.py -- target forms and chunk extensions through the balancer.
#
# Strategy: a real ``python -m lb`` sits in front of tests/recording_backend.py
# (an origin sharing no code with gservers.http) for most tests, so what the
# backend received is seen byte for byte: an absolute-form target must arrive
# in origin-form with the URI's authority as its only Host (RFC 9112 3.2.2),
# also when the client's Host said otherwise; a target in a form its method
# may not use (RFC 9112 3.2) or with characters RFC 3986 leaves out must be
# answered 400 with a close and never reach the backend; a chunked body with
# BWS in its extensions (RFC 9112 7.1.1) must arrive re-chunked with bare
# sizes, buffered or streamed, while a malformed chunk-size line is a 400.
# A second balancer in front of a real gservers backend shows what a client
# gets end to end (OPTIONS * is the backend's 200 with Allow).  Each request
# says ``Connection: close``, so every exchange ends on the balancer's close;
# timeouts only stop hangs.
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.recording_backend import RecordingBackend, Request
from tests.support import (
    Balancer,
    Reply,
    Server,
    parse_responses,
    send_and_read,
    start_backend,
    start_lb,
)

HANG = 10.0
RARE_HEALTH = ("--health-interval", "3600")
#: The balancer's default --max-body-buffer: bodies over it are streamed.
MAX_BODY_BUFFER = 65536


def request(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    """A request that asks the balancer to close after answering."""
    fields = b"".join(h + b"\r\n" for h in (*headers, b"Connection: close"))
    return b"%s\r\n%s\r\n%s" % (line, fields, body)


def ask(lb: Balancer, data: bytes, method: bytes = b"GET") -> Reply:
    """Send ``data``; the one response, after which the balancer closed."""
    raw, closed = send_and_read(lb.port, data, HANG)
    replies = parse_responses(raw, [method, method])
    assert closed and len(replies) == 1, raw[:300]
    assert sum(len(r.raw) for r in replies) == len(raw), raw[:300]
    return replies[0]


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[RecordingBackend, Balancer]]:
    origin = RecordingBackend()
    lb = start_lb(*RARE_HEALTH, backends=[origin.port])
    origin.wait_health_check()
    yield origin, lb
    code = lb.server.stop()
    origin.stop()
    assert "Traceback" not in lb.server.log, lb.server.log
    assert code == 0


@pytest.fixture
def origin_lb(rig: tuple[RecordingBackend, Balancer]) -> tuple[RecordingBackend, Balancer]:
    rig[0].reset()
    return rig


def forwarded(origin: RecordingBackend) -> Request:
    """The one request the origin received."""
    got = origin.wait_requests(1, HANG)
    assert len(got) == 1, got
    return got[0]


# -- absolute-form: forwarded in origin-form, the authority as Host -------------------

@pytest.mark.parametrize("line, headers, target, host", [
    (b"GET http://example.com/page.html HTTP/1.1", (b"Host: example.com",),
     b"/page.html", b"example.com"),
    (b"GET http://example.com/page.html HTTP/1.1", (b"Host: other.test:8080",),
     b"/page.html", b"example.com"),
    (b"GET https://Example.com:8443/a/b?c=1&d HTTP/1.1", (b"Host: x",),
     b"/a/b?c=1&d", b"Example.com:8443"),
    (b"GET http://example.com HTTP/1.1", (b"Host: x",), b"/", b"example.com"),
    (b"GET http://example.com?q=1 HTTP/1.1", (b"Host: x",), b"/?q=1", b"example.com"),
    (b"OPTIONS http://example.com HTTP/1.1", (b"Host: x",), b"*", b"example.com"),
    (b"GET http://[::1]:8080//x HTTP/1.1", (b"Host: x",), b"//x", b"[::1]:8080"),
    (b"GET http://example.com/page.html HTTP/1.0", (), b"/page.html", b"example.com"),
], ids=["same-host", "host-differs", "https-port-query", "empty-path", "query-only",
        "options-empty-path", "ipv6", "http10-no-host"])
def test_absolute_form_forwarded_in_origin_form(
        origin_lb: tuple[RecordingBackend, Balancer], line: bytes, headers: tuple[bytes, ...],
        target: bytes, host: bytes) -> None:
    origin, lb = origin_lb
    assert ask(lb, request(line, *headers), line.split(b" ", 1)[0]).status == 200
    got = forwarded(origin)
    assert (got.method, got.target, got.version) == (line.split(b" ", 1)[0], target, b"HTTP/1.1")
    assert got.all("host") == [host]


@pytest.mark.parametrize("method, target", [(b"GET", b"//x?q=/a"), (b"OPTIONS", b"*")])
def test_origin_and_asterisk_form_forwarded_as_they_are(
        origin_lb: tuple[RecordingBackend, Balancer], method: bytes, target: bytes) -> None:
    origin, lb = origin_lb
    assert ask(lb, request(b"%s %s HTTP/1.1" % (method, target), b"Host: h.test")).status == 200
    got = forwarded(origin)
    assert (got.method, got.target, got.all("host")) == (method, target, [b"h.test"])


# -- refused targets ---------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    b"GET * HTTP/1.1", b"POST * HTTP/1.1", b"GET example.com:80 HTTP/1.1", b"GET foo HTTP/1.1",
    b"GET /a<b HTTP/1.1", b'GET /a"b HTTP/1.1', b"GET /a\\b HTTP/1.1", b"GET /p%zz HTTP/1.1",
    b"GET /p#frag HTTP/1.1", b"GET http://user@example.com/ HTTP/1.1",
    b"GET ftp://example.com/ HTTP/1.1", b"CONNECT /page.html HTTP/1.1",
])
def test_refused_target_is_400_and_never_forwarded(
        origin_lb: tuple[RecordingBackend, Balancer], line: bytes) -> None:
    origin, lb = origin_lb
    reply = ask(lb, request(line, b"Host: h", b"Content-Length: 0"))
    assert (reply.status, reply.header("connection")) == (400, b"close")
    assert origin.requests == []


def test_connect_is_still_405(origin_lb: tuple[RecordingBackend, Balancer]) -> None:
    origin, lb = origin_lb
    reply = ask(lb, request(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com:443"))
    assert reply.status == 405
    assert origin.requests == []


# -- chunk extensions with BWS -----------------------------------------------------------

def chunked_body(pieces: list[bytes]) -> bytes:
    """``pieces`` as chunks whose size lines carry extensions with BWS."""
    exts = [b" ; a = b", b'\t;\tq = "x; y" ; flag', b";plain=1"]
    return b"".join(b"%x%s\r\n%s\r\n" % (len(p), exts[i % 3], p)
                    for i, p in enumerate(pieces)) + b"0 ; last\r\n\r\n"


def size_lines(raw_body: bytes) -> list[bytes]:
    """The chunk-size lines of a chunked body as it was on the wire."""
    lines, pos = [], 0
    while True:
        eol = raw_body.index(b"\r\n", pos)
        line = raw_body[pos:eol]
        lines.append(line)
        size = int(line.split(b";")[0].strip(), 16)
        pos = eol + 2 + size + (2 if size else 0)
        if not size:
            return lines


@pytest.mark.parametrize("size", [5, 40000], ids=["buffered", "streamed"])
def test_chunk_extensions_with_bws_reach_the_backend_without_them(
        origin_lb: tuple[RecordingBackend, Balancer], size: int) -> None:
    origin, lb = origin_lb
    pieces = [bytes([65 + i]) * size for i in range(3)]
    data = request(b"POST /up HTTP/1.1", b"Host: h", b"Transfer-Encoding: chunked",
                   body=chunked_body(pieces))
    assert ask(lb, data, b"POST").status == 200
    got = forwarded(origin)
    assert got.body == b"".join(pieces)
    if size * 3 <= MAX_BODY_BUFFER:  # buffered: sent on with a Content-Length
        assert (got.header("content-length"), got.raw_body) == (b"%d" % (size * 3), got.body)
    else:  # streamed: re-chunked, each size line bare
        assert got.header("transfer-encoding") == b"chunked"
        lines = size_lines(got.raw_body)
        assert all(re.fullmatch(rb"[0-9A-Fa-f]+", line) for line in lines), lines


@pytest.mark.parametrize("body", [
    b"5 \r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0 \r\n\r\n", b"5;a=b \r\nhello\r\n0\r\n\r\n",
    b"5;a=\r\nhello\r\n0\r\n\r\n", b"g\r\nhello\r\n0\r\n\r\n", b"5 ; a = b\nhello\r\n0\r\n\r\n",
    b"10000000000000000\r\nhello\r\n0\r\n\r\n",
])
def test_malformed_chunk_size_line_is_400(origin_lb: tuple[RecordingBackend, Balancer],
                                          body: bytes) -> None:
    origin, lb = origin_lb
    data = request(b"POST / HTTP/1.1", b"Host: h", b"Transfer-Encoding: chunked", body=body)
    reply = ask(lb, data, b"POST")
    assert (reply.status, reply.header("connection")) == (400, b"close")
    assert origin.requests == []  # a small body is buffered first: nothing went on


# -- end to end, with a real backend -----------------------------------------------------

@pytest.fixture(scope="module")
def real() -> Iterator[Balancer]:
    backend: Server = start_backend("async")
    lb = start_lb(*RARE_HEALTH, backends=[backend.port])
    yield lb
    code = lb.server.stop()
    backend.stop()
    assert "Traceback" not in lb.server.log, lb.server.log
    assert code == 0


@pytest.mark.parametrize("line, method, status", [
    (b"GET * HTTP/1.1", b"GET", 400),
    (b"OPTIONS * HTTP/1.1", b"OPTIONS", 200),
    (b"GET example.com:80 HTTP/1.1", b"GET", 400),
    (b"GET foo HTTP/1.1", b"GET", 400),
    (b"GET http://example.com/page.html HTTP/1.1", b"GET", 200),
    (b"CONNECT localhost:80 HTTP/1.1", b"CONNECT", 405),
])
def test_through_lb_to_a_real_backend(real: Balancer, line: bytes, method: bytes,
                                      status: int) -> None:
    reply = ask(real, request(line, b"Host: localhost"), method)
    assert reply.status == status
    if method == b"OPTIONS":
        assert reply.header("allow") == b"GET, HEAD, POST, OPTIONS"
    if status == 200 and method == b"GET":
        assert b"It works" in reply.body


def test_chunk_extensions_through_lb_to_a_real_backend(real: Balancer) -> None:
    data = request(b"POST / HTTP/1.1", b"Host: localhost", b"Transfer-Encoding: chunked",
                   body=chunked_body([b"hello", b" world"]))
    reply = ask(real, data, b"POST")
    assert (reply.status, reply.body) == (200, b"OK\n")
