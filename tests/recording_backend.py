# tests/recording_backend.py -- a scripted, recording HTTP/1.1 origin for proxy tests.
#
# Strategy: a deliberately small, independent implementation (raw sockets, one
# OS thread per accepted connection, its own minimal request parser), so that
# what the balancer sends is checked against code that shares nothing with
# gservers/http.py.  It records every accepted connection and every request
# exactly as received (raw head bytes, raw body bytes with their framing, and
# the decoded body), and answers with whatever the test's ``responder``
# returns for that request: a head and an iterable of body pieces (so a body
# of any size can be generated on the fly and never held whole), plus whether
# to close afterwards.  Health checks (GET /health) always get 200 and are
# recorded apart, so tests can tell the balancer's own traffic from proxied
# requests.
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.support import HeaderAccess

CRLF = b"\r\n"


@dataclass
class Request(HeaderAccess):
    """One request as the backend received it."""

    raw_head: bytes               #: request line + headers + blank line, byte for byte
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    raw_body: bytes               #: the body as on the wire (chunk framing included)
    body: bytes                   #: the body with any chunked framing removed
    connection: int               #: index of the connection it came on

    @property
    def is_health_check(self) -> bool:
        return self.target == b"/health"


@dataclass
class Connection:
    """One accepted connection and the requests it carried."""

    index: int
    requests: list[Request] = field(default_factory=list)
    closed: bool = False


@dataclass
class Reply:
    """What the backend sends back: a head, body pieces, and whether to close."""

    head: bytes
    body: Iterable[bytes] = ()
    close: bool = False


Responder = Callable[[Request], Reply]


def head_bytes(status: int, reason: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def fixed(body: bytes = b"ok", status: int = 200, reason: str = "OK",
          headers: Iterable[tuple[str, str]] = ()) -> Responder:
    """A Content-Length response; a HEAD gets the same head and no body."""
    def respond(req: Request) -> Reply:
        head = head_bytes(status, reason, [*headers, ("Content-Length", str(len(body)))])
        return Reply(head, () if req.method == b"HEAD" else (body,))
    return respond


def chunked(parts: list[bytes], headers: Iterable[tuple[str, str]] = (),
            trailers: bytes = b"") -> Responder:
    """A chunked response made of ``parts`` (one chunk each)."""
    def respond(req: Request) -> Reply:
        head = head_bytes(200, "OK", [*headers, ("Transfer-Encoding", "chunked")])
        if req.method == b"HEAD":
            return Reply(head)
        body = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p]
        return Reply(head, [*body, b"0\r\n" + trailers + b"\r\n"])
    return respond


def close_delimited(body: bytes, headers: Iterable[tuple[str, str]] = ()) -> Responder:
    """No Content-Length, no chunking: the body ends when the connection closes."""
    def respond(req: Request) -> Reply:
        head = head_bytes(200, "OK", [*headers, ("Connection", "close")])
        return Reply(head, () if req.method == b"HEAD" else (body,), close=True)
    return respond


def bodiless(status: int, reason: str, headers: Iterable[tuple[str, str]] = ()) -> Responder:
    """A 204 / 304 style response: a head only."""
    def respond(req: Request) -> Reply:
        return Reply(head_bytes(status, reason, headers))
    return respond


#: The repeating pattern of generated bodies: byte i of a body is PATTERN[i % 251]
#: (a prime period, so a lost or repeated block shows up as a mismatch).
PATTERN = bytes((i * 7 + 3) % 256 for i in range(251))


def pattern_slice(offset: int, length: int) -> bytes:
    """Bytes ``offset .. offset+length`` of an endless PATTERN stream."""
    start = offset % len(PATTERN)
    reps = (start + length) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + length]


def generated(total: int, block: int = 1 << 20) -> Responder:
    """A Content-Length response of ``total`` pattern bytes made block by block."""
    def pieces() -> Iterator[bytes]:
        sent = 0
        while sent < total:
            n = min(block, total - sent)
            yield pattern_slice(sent, n)
            sent += n

    def respond(req: Request) -> Reply:
        head = head_bytes(200, "OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(total))])
        return Reply(head, () if req.method == b"HEAD" else pieces())
    return respond


class _Reader:
    """Buffered reads from a socket that keep the raw bytes they consumed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        data = self.sock.recv(1 << 20)
        if not data:
            return False
        self.buf += data
        return True

    def until(self, marker: bytes, limit: int = 1 << 16) -> bytes | None:
        while marker not in self.buf:
            if len(self.buf) > limit or not self._more():
                return None
        end = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def exactly(self, n: int) -> bytes | None:
        parts: list[bytes] = []
        while n:
            if not self.buf and not self._more():
                return None
            take = self.buf[:n]
            self.buf = self.buf[len(take):]
            parts.append(take)
            n -= len(take)
        return b"".join(parts)


class RecordingBackend:
    """A threaded origin server on 127.0.0.1:0 that records what it gets."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or fixed()
        self.lock = threading.Lock()
        self.connections: list[Connection] = []
        self._socks: list[socket.socket] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port: int = self.listener.getsockname()[1]
        self._stopped = False
        self.accepted = 0             #: connections accepted, ever (reset() keeps it)
        threading.Thread(target=self._accept, daemon=True).start()

    # -- what was seen ---------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        """Proxied requests (health checks left out), in arrival order."""
        with self.lock:
            return [r for c in self.connections for r in c.requests if not r.is_health_check]

    @property
    def health_checks(self) -> list[Request]:
        with self.lock:
            return [r for c in self.connections for r in c.requests if r.is_health_check]

    def proxied_connections(self) -> list[Connection]:
        """Accepted connections that are not plain health-check connections."""
        with self.lock:
            return [c for c in self.connections
                    if not (c.requests and all(r.is_health_check for r in c.requests))]

    def reset(self) -> None:
        """Forget what was recorded; connections still open stay (with no requests)."""
        with self.lock:
            self.connections = [c for c in self.connections if not c.closed]
            for conn in self.connections:
                conn.requests = []

    def wait_health_check(self, timeout: float = 10.0) -> None:
        """Wait until the balancer's first health check has been answered."""
        deadline = time.monotonic() + timeout
        while not self.health_checks:
            if time.monotonic() > deadline:
                raise TimeoutError("no health check arrived")
            time.sleep(0.02)
        time.sleep(0.05)  # let the checker read the answer and close

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.requests

    def stop(self) -> None:
        self._stopped = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    # -- serving ---------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stopped:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                conn = Connection(self.accepted)
                self.accepted += 1
                self.connections.append(conn)
                self._socks.append(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(sock, conn), daemon=True).start()

    def _serve(self, sock: socket.socket, conn: Connection) -> None:
        reader = _Reader(sock)
        try:
            while True:
                req = self._read_request(reader, conn)
                if req is None:
                    return
                with self.lock:
                    conn.requests.append(req)
                if req.is_health_check:
                    sock.sendall(head_bytes(200, "OK", [("Content-Length", "2")]) + b"ok")
                    continue
                reply = self.responder(req)
                sock.sendall(reply.head)
                for piece in reply.body:
                    sock.sendall(piece)
                wants_close = b"close" in (req.header("connection") or b"").lower()
                if reply.close or wants_close:
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(65536):
                        pass
                    return
        except OSError:
            return
        finally:
            conn.closed = True
            sock.close()

    @staticmethod
    def _read_request(reader: _Reader, conn: Connection) -> Request | None:
        raw_head = reader.until(b"\r\n\r\n")
        if raw_head is None:
            return None
        lines = raw_head[:-4].split(CRLF)
        method, target, version = lines[0].split(b" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name, value.strip()))
        lookup = {k.lower(): v for k, v in headers}
        raw_body = b""
        body = b""
        if b"chunked" in lookup.get(b"transfer-encoding", b"").lower():
            raw: list[bytes] = []
            decoded: list[bytes] = []
            while True:
                size_line = reader.until(CRLF)
                if size_line is None:
                    return None
                raw.append(size_line)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailer section up to the empty line
                        line = reader.until(CRLF)
                        if line is None:
                            return None
                        raw.append(line)
                        if line == CRLF:
                            break
                    break
                data = reader.exactly(size + 2)
                if data is None:
                    return None
                raw.append(data)
                decoded.append(data[:-2])
            raw_body, body = b"".join(raw), b"".join(decoded)
        elif b"content-length" in lookup:
            n = int(lookup[b"content-length"])
            data = reader.exactly(n)
            if data is None:
                return None
            raw_body = body = data
        return Request(raw_head, method, target, version, headers, raw_body, body, conn.index)


def hang_up() -> Responder:
    """Read the whole request, then close without sending a byte: a backend
    that dies before answering."""
    def respond(req: Request) -> Reply:
        return Reply(b"", close=True)
    return respond


def held(release: threading.Event, inner: Responder, target: bytes = b"/slow",
         timeout: float = 60.0) -> Responder:
    """``inner``'s answer; a request for ``target`` first waits (in its
    connection's thread) until ``release`` is set, or ``timeout`` passes."""
    def respond(req: Request) -> Reply:
        if req.target == target:
            release.wait(timeout)
        return inner(req)
    return respond


@contextmanager
def running(n: int) -> Iterator[list[RecordingBackend]]:
    """``n`` recording origins, stopped on the way out."""
    made = [RecordingBackend() for _ in range(n)]
    try:
        yield made
    finally:
        for origin in made:
            origin.stop()


def counts(origins: list[RecordingBackend]) -> list[int]:
    """Proxied requests each origin received, in order."""
    return [len(o.requests) for o in origins]
