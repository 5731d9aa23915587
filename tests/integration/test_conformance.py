# tests/integration/test_conformance.py -- HTTP/1.1 conformance of both backend models.
#
# Strategy: every test talks raw bytes to a real backend process (started
# through its CLI by the ``backend`` fixture, once per model) over 127.0.0.1,
# so what is checked is exactly what a client receives.  Framing is checked
# the strict way: a second request is pipelined behind the one under test and
# both responses must parse back to back, so a wrong Content-Length, a body on
# a HEAD answer or any stray byte shows up as a broken second response.
# Timeouts and limits use their own backends with tiny settings (max-body 16
# bytes, 1 s header and keep-alive timeouts); traversal through a symlink uses
# a backend on a temporary document root.  Wall-clock limits appear only as
# hang protection.  A last test sends ~20 varied requests to both models side
# by side and requires byte-identical answers once Date is blanked.  Edge
# cases that were server bugs when this suite was written (Expect and chunked
# from HTTP/1.0, Upgrade with a body, HTTP/1.2) stay as regression tests.
from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from tests.support import (
    ROOT,
    Reply,
    Server,
    connect,
    exchange,
    parse_responses,
    read_all,
    start_backend,
    strip_date,
)

SITE = ROOT / "gservers" / "site"
MODELS = ("async", "thread")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HANG = 10.0  # seconds; hang protection only, never a performance bound
IMF_FIXDATE = re.compile(
    rb"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    rb"\d{4} \d{2}:\d{2}:\d{2} GMT$")


def get(path: str, *headers: str, method: str = "GET", version: str = "HTTP/1.1",
        host: bool = True, body: bytes = b"") -> bytes:
    """One request as raw bytes."""
    lines = [f"{method} {path} {version}"]
    if host:
        lines.append("Host: test")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def close(path: str, *headers: str, **kw: object) -> bytes:
    """A request that asks the server to close after answering."""
    return get(path, *headers, "Connection: close", **kw)  # type: ignore[arg-type]


def site(path: str) -> bytes:
    return (SITE / path.lstrip("/")).read_bytes()


def roundtrip(server: Server, data: bytes, methods: list[bytes]) -> tuple[list[Reply], bytes]:
    """Send ``data`` in one write, read to EOF, split into len(methods) replies."""
    raw = exchange(server.port, data, timeout=HANG)
    replies = parse_responses(raw, methods)
    assert len(replies) == len(methods), raw
    return replies, raw


def assert_exact(replies: list[Reply], raw: bytes) -> None:
    """The replies account for every byte received: nothing stray after a body."""
    assert b"".join(r.raw for r in replies) == raw


class Reader:
    """Reads whole responses from one socket, keeping what follows."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        self.sock.settimeout(HANG)
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"server closed; buffered {self.buf!r}")
        self.buf += data

    def read(self, method: bytes = b"GET") -> Reply:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n") + 4
        head = self.buf[:end]
        m = re.search(rb"\r\nContent-Length: (\d+)\r\n", head, re.IGNORECASE)
        status = int(head.split(b" ", 2)[1])
        length = 0 if (method == b"HEAD" or 100 <= status < 200) else int(m.group(1)) if m else 0
        while len(self.buf) < end + length:
            self._fill()
        reply = parse_responses(self.buf[:end + length], [method])[0]
        self.buf = self.buf[end + length:]
        return reply

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def at_eof(self) -> bool:
        """True when the server closes without sending anything more."""
        if self.buf:
            return False
        self.sock.settimeout(HANG)
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True


def headers_without_date(reply: Reply) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in reply.headers if k.lower() != b"date"]


@pytest.fixture(scope="module", params=MODELS)
def limited(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A backend of each model with tiny limits: 16-byte bodies, 1 s timeouts."""
    server = start_backend(request.param, "--max-body", "16", "--header-timeout", "1",
                           "--keepalive-timeout", "1")
    yield server
    server.stop()


# -- static files -------------------------------------------------------------

def test_get_page_exact_framing(backend: Server) -> None:
    replies, raw = roundtrip(backend, get("/page.html") + close("/health"), [b"GET", b"GET"])
    page, health = replies
    content = site("page.html")
    assert page.status == 200 and page.reason == b"OK"
    assert page.header("Content-Length") == str((SITE / "page.html").stat().st_size).encode()
    assert page.body == content
    assert page.header("Content-Type") == b"text/html; charset=utf-8"
    assert page.header("Server")
    date = page.header("Date")
    assert date is not None and IMF_FIXDATE.match(date), date
    assert abs(parsedate_to_datetime(date.decode()).timestamp() - time.time()) < 300
    assert page.header("Connection") is None  # HTTP/1.1 keep-alive is the default
    # The pipelined request was answered right after the body: no stray bytes.
    assert (health.status, health.body) == (200, b"ok\n")
    assert health.header("Connection") == b"close"
    assert_exact(replies, raw)


def test_root_serves_index(backend: Server) -> None:
    replies, raw = roundtrip(backend, get("/") + close("/health"), [b"GET", b"GET"])
    assert replies[0].status == 200
    assert replies[0].body == site("index.html")
    assert replies[0].header("Content-Type") == b"text/html; charset=utf-8"
    assert replies[0].header("Content-Length") == b"%d" % len(site("index.html"))
    assert_exact(replies, raw)


@pytest.mark.parametrize("path, ctype", [("/images/sun.png", b"image/png"),
                                         ("/images/lines.jpg", b"image/jpeg")])
def test_images_exact_bytes(backend: Server, path: str, ctype: bytes) -> None:
    replies, raw = roundtrip(backend, get(path) + close("/health"), [b"GET", b"GET"])
    image = replies[0]
    assert image.status == 200
    assert image.header("Content-Type") == ctype
    assert image.header("Content-Length") == b"%d" % len(site(path))
    assert image.body == site(path)
    assert_exact(replies, raw)


@pytest.mark.parametrize("path", ["/page.html", "/", "/images/sun.png", "/images/lines.jpg",
                                  "/missing.html"])
def test_head_same_headers_no_body(backend: Server, path: str) -> None:
    (get_reply,), _ = roundtrip(backend, close(path), [b"GET"])
    replies, raw = roundtrip(backend, get(path, method="HEAD") + close("/health"),
                             [b"HEAD", b"GET"])
    head_reply, health = replies
    assert head_reply.status == get_reply.status
    assert headers_without_date(head_reply) == [
        (k, v) for k, v in headers_without_date(get_reply) if k.lower() != b"connection"]
    # No body after the HEAD answer: the next bytes are the next response.
    assert head_reply.raw.endswith(b"\r\n\r\n")
    assert (health.status, health.body) == (200, b"ok\n")
    assert_exact(replies, raw)


def test_health(backend: Server) -> None:
    (reply,), raw = roundtrip(backend, close("/health"), [b"GET"])
    assert (reply.status, reply.body) == (200, b"ok\n")
    assert_exact([reply], raw)


def test_missing_file_404(backend: Server) -> None:
    replies, raw = roundtrip(backend, get("/no-such-file.html") + close("/health"),
                             [b"GET", b"GET"])
    assert replies[0].status == 404
    assert replies[0].header("Connection") is None  # a 404 keeps the connection
    assert replies[1].status == 200
    assert_exact(replies, raw)


# -- methods ------------------------------------------------------------------

def test_post_content_length_then_pipelined(backend: Server) -> None:
    data = get("/form", "Content-Length: 11", method="POST", body=b"hello world") + close("/health")
    replies, raw = roundtrip(backend, data, [b"POST", b"GET"])
    assert (replies[0].status, replies[0].body) == (200, b"OK\n")
    assert replies[0].header("Content-Length") == b"3"
    assert (replies[1].status, replies[1].body) == (200, b"ok\n")
    assert_exact(replies, raw)


def test_post_chunked_then_pipelined(backend: Server) -> None:
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    data = get("/form", "Transfer-Encoding: chunked", method="POST", body=body)
    data += close("/page.html")
    replies, raw = roundtrip(backend, data, [b"POST", b"GET"])
    assert (replies[0].status, replies[0].body) == (200, b"OK\n")
    assert (replies[1].status, replies[1].body) == (200, site("page.html"))
    assert_exact(replies, raw)


@pytest.mark.parametrize("framing, body", [
    ("Content-Length: 5", b"hello"),
    ("Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n"),
])
def test_expect_100_continue(backend: Server, framing: str, body: bytes) -> None:
    with connect(backend.port, timeout=HANG) as sock:
        reader = Reader(sock)
        sock.sendall(get("/form", framing, "Expect: 100-continue", method="POST"))
        # A real client waits for the interim answer before sending the body.
        assert reader.read_exact(len(CONTINUE)) == CONTINUE
        sock.sendall(body)
        final = reader.read(b"POST")
        assert (final.status, final.body) == (200, b"OK\n")
        sock.sendall(close("/health"))
        assert reader.read().body == b"ok\n"
        assert reader.at_eof()


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_unsupported_method_405_with_allow(backend: Server, method: str) -> None:
    extra = ("Content-Length: 4",) if method == "PUT" else ()
    body = b"data" if method == "PUT" else b""
    replies, raw = roundtrip(backend, get("/page.html", *extra, method=method, body=body)
                             + close("/health"), [method.encode(), b"GET"])
    assert replies[0].status == 405
    allow = replies[0].header("Allow")
    assert allow is not None
    assert {m.strip() for m in allow.split(b",")} >= {b"GET", b"HEAD", b"POST"}
    assert method.encode() not in allow
    assert (replies[1].status, replies[1].body) == (200, b"ok\n")
    assert_exact(replies, raw)


@pytest.mark.parametrize("target", ["*", "/page.html"])
def test_options_allow(backend: Server, target: str) -> None:
    replies, raw = roundtrip(backend, get(target, method="OPTIONS") + close("/health"),
                             [b"OPTIONS", b"GET"])
    assert replies[0].status == 200
    allow = replies[0].header("Allow")
    assert allow is not None
    assert {m.strip() for m in allow.split(b",")} >= {b"GET", b"HEAD", b"POST", b"OPTIONS"}
    assert replies[1].status == 200
    assert_exact(replies, raw)


# -- request-targets (RFC 9112 3.2) and chunk extensions (7.1.1) -------------

@pytest.mark.parametrize("method, target", [
    ("GET", "*"), ("POST", "*"), ("GET", "example.com:80"), ("OPTIONS", "example.com:80"),
    ("GET", "foo"), ("GET", "/a<b"), ("GET", "/a<b>"), ("GET", '/a"b'), ("GET", "/a\\b"),
    ("GET", "/page.html#top"), ("GET", "/page%zz.html"), ("GET", "/page.html%4"),
    ("GET", "http://user@localhost/page.html"), ("GET", "ftp://localhost/page.html"),
    ("CONNECT", "/page.html"),
])
def test_bad_request_target_400_then_close(backend: Server, method: str, target: str) -> None:
    # The pipelined request behind it is never answered: the connection closes.
    (reply,), raw = roundtrip(backend, get(target, "Content-Length: 0", method=method)
                              + close("/health"), [method.encode()])
    assert (reply.status, reply.header("Connection")) == (400, b"close")
    assert_exact([reply], raw)


@pytest.mark.parametrize("target", [
    "http://localhost/page.html", "HTTPS://other.test:8443/page.html", "//page.html",
    "/%70age.html?a=1&b=/?:@!$'()*+,;=",
])
def test_absolute_and_origin_form_served(backend: Server, target: str) -> None:
    replies, raw = roundtrip(backend, get(target) + close("/health"), [b"GET", b"GET"])
    assert (replies[0].status, replies[0].body) == (200, site("page.html"))
    assert replies[1].status == 200
    assert_exact(replies, raw)


def test_connect_authority_form_still_405(backend: Server) -> None:
    replies, raw = roundtrip(backend, get("localhost:80", method="CONNECT") + close("/health"),
                             [b"CONNECT", b"GET"])
    assert [r.status for r in replies] == [405, 200]
    assert_exact(replies, raw)


def test_chunk_extensions_with_bws_accepted(backend: Server) -> None:
    body = (b"5 ; name = value\r\nhello\r\n6\t;\tq = \"x; y\" ; flag\r\n world\r\n"
            b"0 ; last\r\nTrailer: x\r\n\r\n")
    data = get("/form", "Transfer-Encoding: chunked", method="POST", body=body)
    replies, raw = roundtrip(backend, data + close("/health"), [b"POST", b"GET"])
    assert [(r.status, r.body) for r in replies] == [(200, b"OK\n"), (200, b"ok\n")]
    assert_exact(replies, raw)


@pytest.mark.parametrize("body", [
    b"5\r\nhello\r\n0 \r\n\r\n", b"5 \r\nhello\r\n0\r\n\r\n", b"5;a=b \r\nhello\r\n0\r\n\r\n",
    b"5;a=\r\nhello\r\n0\r\n\r\n", b"x\r\nhello\r\n0\r\n\r\n", b"5 ; a = b\nhello\r\n0\r\n\r\n",
    b"5\r\nhello0\r\n\r\n", b"10000000000000000\r\nhello\r\n0\r\n\r\n",
])
def test_malformed_chunk_size_line_400_then_close(backend: Server, body: bytes) -> None:
    data = get("/form", "Transfer-Encoding: chunked", method="POST", body=body)
    (reply,), raw = roundtrip(backend, data + close("/health"), [b"POST"])
    assert (reply.status, reply.header("Connection")) == (400, b"close")
    assert_exact([reply], raw)


# -- nothing outside the document root ----------------------------------------

@pytest.mark.parametrize("target", ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                                    "/images/../../setup.py", "/%2e%2e%2fsetup.py",
                                    "/images/%2e%2e/%2e%2e/setup.py", "/..%2f..%2fetc%2fpasswd"])
def test_traversal_refused(backend: Server, target: str) -> None:
    (reply,), raw = roundtrip(backend, close(target), [b"GET"])
    # Refused either as a malformed target (400: dot-segments) or as not found.
    assert reply.status in (400, 404), raw
    assert reply.header("Content-Type") == b"text/plain; charset=utf-8"
    assert b"root:" not in raw and b"setup(" not in raw
    assert len(reply.body) < 100


@pytest.mark.parametrize("model", MODELS)
def test_symlink_out_of_root_is_404(model: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "inside.txt").write_bytes(b"inside\n")
    (outside / "secret.txt").write_bytes(b"TOP SECRET\n")
    (root / "file-link.txt").symlink_to(outside / "secret.txt")
    (root / "dir-link").symlink_to(outside, target_is_directory=True)
    (root / "passwd-link").symlink_to("/etc/passwd")
    (root / "ok-link.txt").symlink_to(root / "inside.txt")  # stays inside: fine
    server = start_backend(model, "--root", str(tmp_path / "root"))
    try:
        (inside,), _ = roundtrip(server, close("/inside.txt"), [b"GET"])
        assert (inside.status, inside.body) == (200, b"inside\n")
        (ok_link,), _ = roundtrip(server, close("/ok-link.txt"), [b"GET"])
        assert (ok_link.status, ok_link.body) == (200, b"inside\n")
        for target in ("/file-link.txt", "/dir-link/secret.txt", "/passwd-link", "/dir-link/",
                       "/%2e%2e/outside/secret.txt"):
            for method in (b"GET", b"HEAD"):
                (reply,), raw = roundtrip(server, close(target, method=method.decode()),
                                          [method])
                assert reply.status in ((404,) if "link" in target else (400, 404)), raw
                assert b"SECRET" not in raw and b"root:" not in raw
    finally:
        assert server.stop() == 0


# -- connection management ----------------------------------------------------

def test_keep_alive_several_requests(backend: Server) -> None:
    paths = ["/page.html", "/images/sun.png", "/health", "/", "/nope", "/images/lines.jpg"]
    with connect(backend.port, timeout=HANG) as sock:
        reader = Reader(sock)
        for path in paths:
            sock.sendall(get(path))
            reply = reader.read()
            assert reply.header("Connection") is None
            if path == "/nope":
                assert reply.status == 404
            elif path == "/health":
                assert reply.body == b"ok\n"
            else:
                assert reply.body == site("index.html" if path == "/" else path)
        sock.sendall(close("/health"))
        assert reader.read().header("Connection") == b"close"
        assert reader.at_eof()


def test_pipelining_ten_in_order(backend: Server) -> None:
    paths = ["/page.html", "/health", "/images/sun.png", "/", "/missing-1", "/images/lines.jpg",
             "/page.html?q=1", "/missing-2", "/health", "/images/sun.png"]
    methods = [b"HEAD" if i == 3 else b"GET" for i in range(len(paths))]
    data = b"".join(get(p, method=m.decode())
                    for p, m in zip(paths[:-1], methods[:-1], strict=True))
    data += close(paths[-1])
    replies, raw = roundtrip(backend, data, methods)
    expected: list[tuple[int, bytes]] = []
    for path, method in zip(paths, methods, strict=True):
        clean = path.split("?")[0]
        if clean.startswith("/missing"):
            expected.append((404, b"404 not found\n"))
        elif clean == "/health":
            expected.append((200, b"ok\n"))
        elif method == b"HEAD":
            expected.append((200, b""))
        else:
            expected.append((200, site("index.html" if clean == "/" else clean)))
    assert [(r.status, r.body) for r in replies] == expected
    assert replies[3].header("Content-Length") == b"%d" % len(site("index.html"))
    assert_exact(replies, raw)


def test_http10_closes_by_default(backend: Server) -> None:
    with connect(backend.port, timeout=HANG) as sock:
        reader = Reader(sock)
        sock.sendall(get("/page.html", version="HTTP/1.0", host=False))
        reply = reader.read()
        assert (reply.status, reply.body) == (200, site("page.html"))
        assert reply.header("Connection") == b"close"
        assert reader.at_eof()


def test_http10_keep_alive_stays_open(backend: Server) -> None:
    with connect(backend.port, timeout=HANG) as sock:
        reader = Reader(sock)
        for path in ("/page.html", "/images/sun.png"):
            sock.sendall(get(path, "Connection: keep-alive", version="HTTP/1.0"))
            reply = reader.read()
            assert (reply.status, reply.body) == (200, site(path))
            assert reply.header("Connection") == b"keep-alive"
        sock.sendall(get("/health", version="HTTP/1.0"))  # no keep-alive: last one
        reply = reader.read()
        assert (reply.body, reply.header("Connection")) == (b"ok\n", b"close")
        assert reader.at_eof()


def test_http11_connection_close(backend: Server) -> None:
    with connect(backend.port, timeout=HANG) as sock:
        reader = Reader(sock)
        # The request after the one saying close must not be answered.
        sock.sendall(close("/page.html") + get("/health"))
        reply = reader.read()
        assert (reply.status, reply.body) == (200, site("page.html"))
        assert reply.header("Connection") == b"close"
        assert reader.at_eof()


# -- limits and timeouts (backend with --max-body 16, 1 s timeouts) -------------

def test_body_over_max_body_413(limited: Server) -> None:
    body = b"x" * 17
    (reply,), raw = roundtrip(limited, get("/form", "Content-Length: 17", method="POST", body=body)
                              + get("/health"), [b"POST"])
    assert reply.status == 413
    assert reply.header("Connection") == b"close"
    assert_exact([reply], raw)  # closed after the 413: the /health request is not answered


def test_body_at_max_body_accepted(limited: Server) -> None:
    (reply,), _ = roundtrip(limited, close("/form", "Content-Length: 16", method="POST",
                                           body=b"x" * 16), [b"POST"])
    assert (reply.status, reply.body) == (200, b"OK\n")


def test_chunked_body_over_max_body_413(limited: Server) -> None:
    body = b"a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"
    (reply,), raw = roundtrip(limited, get("/form", "Transfer-Encoding: chunked", method="POST",
                                           body=body), [b"POST"])
    assert reply.status == 413
    assert reply.header("Connection") == b"close"
    assert_exact([reply], raw)


def test_expect_continue_over_max_body_gets_413_not_100(limited: Server) -> None:
    with connect(limited.port, timeout=HANG) as sock:
        reader = Reader(sock)
        sock.sendall(get("/form", "Content-Length: 1000", "Expect: 100-continue", method="POST"))
        reply = reader.read(b"POST")
        assert reply.status == 413
        assert reader.at_eof()


def test_stalled_head_gets_408_then_close(limited: Server) -> None:
    with connect(limited.port, timeout=HANG) as sock:
        sock.sendall(b"GET /page.html HTTP/1.1\r\nHost: test\r\nX-Half: ")
        raw = read_all(sock, timeout=HANG)  # server answers after --header-timeout, closes
    (reply,) = parse_responses(raw, [b"GET"])
    assert reply.status == 408
    assert reply.header("Connection") == b"close"
    assert_exact([reply], raw)


def test_idle_keep_alive_closed_after_timeout(limited: Server) -> None:
    with connect(limited.port, timeout=HANG) as sock:
        reader = Reader(sock)
        sock.sendall(get("/health"))
        reply = reader.read()
        assert reply.header("Connection") is None
        assert reader.at_eof()  # silent close after --keepalive-timeout, no 408


# -- framing edge cases (found as bugs, fixed in 88d1cb2) -------------------------

def test_no_interim_response_to_http10(backend: Server) -> None:
    # RFC 9110 10.1.1 / 15.2: ignore 100-continue from HTTP/1.0, never send it 1xx.
    raw = exchange(backend.port, b"POST /form HTTP/1.0\r\nExpect: 100-continue\r\n"
                                 b"Content-Length: 3\r\n\r\nabc", timeout=HANG)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw
    assert b" 100 " not in raw


def test_http10_transfer_encoding_closes(backend: Server) -> None:
    # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; close after it.
    data = (b"POST /form HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\nGET /health HTTP/1.0\r\n\r\n")
    raw = exchange(backend.port, data, timeout=HANG)
    assert raw.count(b"HTTP/1.1 ") == 1, raw
    assert b"\r\nConnection: close\r\n" in raw


def test_upgrade_request_body_is_never_a_request(backend: Server) -> None:
    # No upgrade is implemented; the body of a request asking for one must stay
    # a body (RFC 9112 6.3), never be parsed as a request of its own: answered
    # normally or refused with 400 and a close, but the PNG is never served.
    inner = b"GET /images/sun.png HTTP/1.1\r\nHost: test\r\n\r\n"
    data = get("/form", "Connection: Upgrade", "Upgrade: foo", f"Content-Length: {len(inner)}",
               method="POST", body=inner) + close("/health")
    raw = exchange(backend.port, data, timeout=HANG)
    assert b"image/png" not in raw, raw
    first = parse_responses(raw, [b"POST"])[0]
    if first.status == 400:
        assert first.header("Connection") == b"close"
        assert_exact([first], raw)
    else:
        replies = parse_responses(raw, [b"POST", b"GET"])
        assert [(r.status, r.body) for r in replies] == [(200, b"OK\n"), (200, b"ok\n")]
        assert_exact(replies, raw)


def test_higher_minor_version_served_as_11(backend: Server) -> None:
    # RFC 9110 2.5: HTTP/1.2 is processed as HTTP/1.1; 505 is for other majors.
    (reply,), _ = roundtrip(backend, close("/health", version="HTTP/1.2"), [b"GET"])
    assert (reply.status, reply.body) == (200, b"ok\n")


# -- both models answer byte for byte the same --------------------------------

IDENTITY_CASES: list[tuple[str, bytes]] = [
    ("get page", close("/page.html")),
    ("get index", close("/")),
    ("get png", close("/images/sun.png")),
    ("get jpeg", close("/images/lines.jpg")),
    ("head page", close("/page.html", method="HEAD")),
    ("post length", close("/form", "Content-Length: 5", method="POST", body=b"hello")),
    ("post chunked", close("/form", "Transfer-Encoding: chunked", method="POST",
                           body=b"5\r\nhello\r\n0\r\n\r\n")),
    ("post expect", close("/form", "Expect: 100-continue", "Content-Length: 2", method="POST",
                          body=b"hi")),
    ("404", close("/missing.html")),
    ("head 404", close("/missing.html", method="HEAD")),
    ("405 put", close("/page.html", "Content-Length: 1", method="PUT", body=b"x")),
    ("405 delete", close("/page.html", method="DELETE")),
    ("options", close("*", method="OPTIONS")),
    ("health", close("/health")),
    ("400 no host", get("/", host=False)),
    ("400 traversal", close("/../etc/passwd")),
    ("400 garbage", b"GARBAGE\r\n\r\n"),
    ("501 method", get("/", method="BREW")),
    ("501 coding", get("/form", "Transfer-Encoding: gzip", method="POST")),
    ("505 version", get("/", version="HTTP/2.0")),
    ("http/1.0", get("/page.html", version="HTTP/1.0", host=False)),
    ("http/1.0 keep-alive pair", get("/", "Connection: keep-alive", version="HTTP/1.0")
     + get("/health", version="HTTP/1.0")),
    ("pipelined get+get", get("/page.html") + close("/health")),
    ("pipelined head+png", get("/", method="HEAD") + close("/images/sun.png")),
    ("pipelined 404+post", get("/nope") + close("/f", "Content-Length: 1", method="POST",
                                                  body=b"x")),
    ("pipelined get+400", get("/health") + b"GET / HTTP/1.1\r\n\r\n"),
]


@pytest.mark.parametrize("data", [c[1] for c in IDENTITY_CASES], ids=[c[0] for c in IDENTITY_CASES])
def test_models_byte_identical(both_backends: dict[str, Server], data: bytes) -> None:
    answers = {model: strip_date(exchange(server.port, data, timeout=HANG))
               for model, server in both_backends.items()}
    assert answers["async"], "no answer"
    assert answers["async"] == answers["thread"]
