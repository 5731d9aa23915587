# loadtests/faults/load.py -- a threaded HTTP/1.1 load client that keeps score.
#
# Strategy: N OS threads, each with its own raw socket to 127.0.0.1, send
# GETs one at a time (keep-alive by default, or a fresh connection per
# request) until told to stop or a request cap is reached, optionally paced
# (a pause before each request) so that one bounded load can span the phases
# of a fault scenario.  Every request's fate is recorded as an Outcome, with
# when it was sent and when it ended, and the kinds are chosen so that a
# caller can tell apart what a balancer may do (close an idle connection
# before a request is answered, refuse new connections once it stops
# listening) from what it must never do (cut a response short, answer 5xx,
# hang).  Each request carries a unique target (``?t=THREAD&c=CONN&n=SEQ``)
# so that it can be matched against the balancer's access log and against
# what a fault proxy did to it.  Everything is bounded: a per-read timeout
# (hang protection only) and a cap on requests per thread.  ``fetch`` is the
# same reader for one GET on a fresh connection.
from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

HOST = "127.0.0.1"
#: A complete response was read (any status).
COMPLETE = "complete"
#: connect() failed: no request was sent (e.g. the listener is closed).
CONNECT_FAILED = "connect_failed"
#: The request was written (or writing it failed), then the connection ended
#: (EOF or reset) before a single response byte arrived.
CLOSED_BEFORE_RESPONSE = "closed_before_response"
#: Some response bytes arrived, then the connection ended: a cut response.
TRUNCATED = "truncated"
#: Nothing more arrived within the hang-protection timeout.
TIMEOUT = "timeout"
#: The bytes were not an HTTP/1.1 response.
MALFORMED = "malformed"


@dataclass
class Outcome:
    """What became of one request."""

    thread: int
    conn: int                 #: connection number within the thread
    seq: int                  #: request number on that connection (0 = first)
    target: str
    kind: str
    status: int = 0
    body_len: int = 0
    close: bool = False       #: the response said Connection: close
    error: str = ""
    began: float = 0.0        #: monotonic time the request (or connect) began
    at: float = 0.0           #: monotonic time its fate was known

    @property
    def seconds(self) -> float:
        """How long the request took, from its first byte sent to its end."""
        return self.at - self.began

    @property
    def ok(self) -> bool:
        """A complete 200."""
        return self.kind == COMPLETE and self.status == 200


class _Cut(Exception):
    """The connection ended; ``got`` response bytes had arrived."""

    def __init__(self, got: int, why: str) -> None:
        super().__init__(why)
        self.got = got


def read_response(sock: socket.socket, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """Read one response from ``sock``: (status, lower-cased headers, body).

    Raises _Cut when the connection ends early, socket.timeout on a hang and
    ValueError on malformed bytes."""
    buf = bytearray()

    def more() -> None:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _Cut(len(buf), type(exc).__name__) from None
        if not data:
            raise _Cut(len(buf), "eof")
        buf.extend(data)

    while b"\r\n\r\n" not in buf:
        more()
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    version, status_text = (lines[0].split(" ", 2) + [""])[:2]
    if not version.startswith("HTTP/1.") or not status_text.isdigit():
        raise ValueError(f"bad status line {lines[0]!r}")
    status = int(status_text)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    consumed = end + 4
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    if "content-length" in headers:
        need = consumed + int(headers["content-length"])
        while len(buf) < need:
            more()
        return status, headers, bytes(buf[consumed:need])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return status, headers, _chunked(buf, consumed, more)
    # Delimited by close.
    while True:
        try:
            more()
        except _Cut:
            return status, headers, bytes(buf[consumed:])


def _chunked(buf: bytearray, pos: int, more: Callable[[], None]) -> bytes:
    """The chunked body that starts at ``buf[pos]``, calling ``more`` to read on."""
    body = bytearray()
    while True:
        while b"\r\n" not in buf[pos:]:
            more()
        eol = buf.index(b"\r\n", pos)
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            while b"\r\n" not in buf[pos:]:
                more()
            return bytes(body)
        while len(buf) < pos + size + 2:
            more()
        body.extend(buf[pos:pos + size])
        pos += size + 2


@dataclass
class Response:
    """One whole response, as ``fetch`` read it."""

    status: int
    headers: dict[str, str]   #: lower-cased names
    body: bytes


def fetch(port: int, path: str = "/page.html", timeout: float = 15.0) -> Response | None:
    """One GET on a fresh connection to 127.0.0.1:``port``; None when no
    whole response came (refused, cut, malformed, or hang protection hit)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
               "Connection: close\r\n\r\n").encode()
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(request)
            return Response(*read_response(sock))
    except (_Cut, ValueError, OSError):
        return None


class LoadClient:
    """``threads`` workers sending GET ``path`` to 127.0.0.1:``port``."""

    def __init__(self, port: int, threads: int = 20, path: str = "/page.html",
                 keep_alive: bool = True, max_per_thread: int = 5000,
                 timeout: float = 15.0, stop_on_connect_failure: bool = False,
                 pace: float = 0.0) -> None:
        self.port = port
        #: Seconds each thread pauses before each request, so that a load
        #: can span the phases of a test without piling up requests or CPU.
        self.pace = pace
        self.threads = threads
        self.path = path
        self.keep_alive = keep_alive
        self.max_per_thread = max_per_thread
        self.timeout = timeout
        self.stop_on_connect_failure = stop_on_connect_failure
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    # -- control --------------------------------------------------------------
    def start(self) -> LoadClient:
        """Start the worker threads; returns self."""
        for index in range(self.threads):
            t = threading.Thread(target=self._run, args=(index,), daemon=True,
                                 name=f"load-{index}")
            self._workers.append(t)
            t.start()
        return self

    def stop(self) -> None:
        """Ask every worker to end after its current request."""
        self._stop.set()

    def join(self, timeout: float = 30.0) -> bool:
        """Wait for every worker; False if one is still running (a hang)."""
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._workers)

    def finish(self, timeout: float = 30.0) -> list[Outcome]:
        """Stop, wait for every worker, and return the outcomes; TimeoutError
        if a worker is still running after ``timeout`` (a hang)."""
        self.stop()
        if not self.join(timeout):
            raise TimeoutError("a load thread hung")
        with self._lock:
            return list(self.outcomes)

    def count(self) -> int:
        """Requests finished so far."""
        with self._lock:
            return len(self.outcomes)

    def wait_for(self, n: int, timeout: float = 30.0) -> bool:
        """Wait until ``n`` requests have finished (hang protection only)."""
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            if not any(t.is_alive() for t in self._workers):
                break
            time.sleep(0.01)
        return self.count() >= n

    def summary(self) -> Counter:
        """Counts by kind, with complete responses split by status."""
        with self._lock:
            return Counter(o.kind if o.kind != COMPLETE else f"{o.kind}:{o.status}"
                           for o in self.outcomes)

    # -- one worker -------------------------------------------------------------
    def _record(self, outcome: Outcome, began: float) -> None:
        outcome.began, outcome.at = began, time.monotonic()
        with self._lock:
            self.outcomes.append(outcome)

    def _run(self, index: int) -> None:
        """Worker ``index``: requests until stopped or capped, reconnecting as needed."""
        sock: socket.socket | None = None
        conn = -1
        seq = 0
        sent = 0
        try:
            while not self._stop.is_set() and sent < self.max_per_thread:
                if sock is None:
                    conn += 1
                    seq = 0
                target = f"{self.path}?t={index}&c={conn}&n={seq}"
                if sock is None:
                    began = time.monotonic()
                    try:
                        sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
                    except OSError as exc:
                        self._record(Outcome(index, conn, 0, target, CONNECT_FAILED,
                                             error=type(exc).__name__), began)
                        sent += 1
                        if self.stop_on_connect_failure:
                            return
                        time.sleep(0.05)
                        continue
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.pace:
                    time.sleep(self.pace)
                began = time.monotonic()
                outcome = self._one(sock, index, conn, seq, target)
                sent += 1
                seq += 1
                self._record(outcome, began)
                if outcome.kind != COMPLETE or outcome.close or not self.keep_alive:
                    sock.close()
                    sock = None
        finally:
            if sock is not None:
                sock.close()

    def _one(self, sock: socket.socket, index: int, conn: int, seq: int,
             target: str) -> Outcome:
        """Send one GET on ``sock`` and read its response: what became of it."""
        request = (f"GET {target} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                   + ("" if self.keep_alive else "Connection: close\r\n") + "\r\n").encode()
        try:
            sock.sendall(request)
        except OSError as exc:
            # Nothing of a response can have arrived: the peer had closed.
            return Outcome(index, conn, seq, target, CLOSED_BEFORE_RESPONSE,
                           error=f"send: {type(exc).__name__}")
        try:
            status, headers, body = read_response(sock)
        except _Cut as cut:
            kind = CLOSED_BEFORE_RESPONSE if cut.got == 0 else TRUNCATED
            return Outcome(index, conn, seq, target, kind, error=f"{cut} after {cut.got}B")
        except TimeoutError:
            return Outcome(index, conn, seq, target, TIMEOUT, error="timeout")
        except (ValueError, OSError) as exc:
            return Outcome(index, conn, seq, target, MALFORMED, error=repr(exc))
        close = "close" in headers.get("connection", "").lower()
        return Outcome(index, conn, seq, target, COMPLETE, status, len(body), close)
