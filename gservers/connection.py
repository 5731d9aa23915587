# gservers/connection.py -- one client connection, served to the end.
#
# Strategy: a plain blocking loop over a socket-like object (recv, sendall,
# settimeout, shutdown, close), so a gevent socket in a greenlet and an OS
# socket in a thread run exactly the same code; the server models differ only
# in how they spawn ``serve``.  Bytes are fed to the shared RequestParser and
# its events are handled in order, which gives pipelining for free: responses
# leave in request order.  Deadlines: ``keepalive_timeout`` while idle (then a
# silent close), ``header_timeout`` for a whole head and for each pause inside
# a body (then 408).  A ``Tracker`` knows which connections are idle, so a
# graceful stop can close those at once and let busy ones finish.
from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from gservers.app import App, Response, error_response
from gservers.config import BackendConfig
from gservers.http import (
    Data,
    End,
    Event,
    Head,
    HttpError,
    Rejected,
    RequestParser,
    http_date,
    status_line,
)

SERVER = b"gservers/0.1"
RECV_SIZE = 65536
#: Seconds idle keep-alive connections may still send a request during a stop.
IDLE_LINGER = 1.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Tracker:
    """Which connections of one server sit idle, for a graceful stop.

    The server models count their live handlers themselves (a gevent Pool, a
    thread counter); this only knows who could be closed right away."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: set[Any] = set()
        self.draining = False

    def set_idle(self, sock: Any) -> bool:
        """Mark ``sock`` idle; False when the server is draining (close it)."""
        with self._lock:
            if self.draining:
                return False
            self._idle.add(sock)
            return True

    def set_busy(self, sock: Any) -> None:
        """``sock`` has begun a request."""
        with self._lock:
            self._idle.discard(sock)

    def drain(self, sleep: Callable[[float], Any], linger: float = IDLE_LINGER) -> None:
        """Stop keeping connections alive: busy ones close after their
        response (which says Connection: close).  Idle ones get ``linger``
        seconds in which a request they send is still served -- a client of
        a busy keep-alive connection sends its next request within
        milliseconds, and closing under it would lose that request -- then
        every one still idle with nothing waiting is woken, so its loop ends.
        ``sleep`` is the server model's own (gevent's or time's)."""
        with self._lock:
            self.draining = True
            idle = bool(self._idle)
        if idle:
            sleep(linger)
        with self._lock:
            for sock in list(self._idle):
                if not readable(sock):
                    try:
                        sock.shutdown(socket.SHUT_RD)
                    except OSError:
                        pass


class RequestTimeout(Exception):
    """The client took too long over a request head or body (answer 408)."""


class Draining(Exception):
    """The server is stopping; close this idle connection."""


class StillIdle(Exception):
    """Idle for ``park_after`` seconds: the caller may park the connection."""


def frame(response: Response, head: Head | None, keep_alive: bool,
          server: bytes = SERVER) -> bytes:
    """Status line and headers for ``response`` (Date, Server, Connection added)."""
    parts = [status_line(response.status), b"Date: ", http_date(), b"\r\nServer: ", server, b"\r\n"]
    parts.extend(b"%s: %s\r\n" % kv for kv in response.headers)
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif head is not None and head.version == "1.0":
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def send_response(sock: Any, response: Response, head: Head | None, keep_alive: bool,
                  server: bytes = SERVER) -> None:
    """Write ``response`` (no body for HEAD requests); stream a file body."""
    data = frame(response, head, keep_alive, server)
    with_body = head is None or head.method != b"HEAD"
    if response.path is None:
        sock.sendall(data + response.body if with_body else data)
        return
    sock.sendall(data)
    if with_body:
        set_nodelay(sock)  # several writes: no Nagle wait on the last small one
        with open(response.path, "rb") as fh:
            while block := fh.read(RECV_SIZE):
                sock.sendall(block)


def reject(sock: Any, error: HttpError, server: bytes = SERVER) -> None:
    """Answer ``error`` and close gently (the caller closes the socket)."""
    try:
        send_response(sock, error_response(error), None, False, server)
    except OSError:
        return
    linger_close(sock)


def readable(sock: Any) -> bool:
    """Whether bytes (or EOF) wait unread on ``sock``, without blocking."""
    check = getattr(sock, "readable", None)
    if check is not None:  # a GreenSocket peeks
        return check()
    try:
        return bool(select.select([sock.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def close_gently(sock: Any) -> None:
    """Prepare to close after the last response.  Closing with unread bytes
    makes the kernel send a reset, which can destroy the tail of a response
    still in flight (RFC 9112 9.6), so then linger; otherwise the caller's
    close() sends a FIN behind the response, and nothing more is needed."""
    if readable(sock):
        linger_close(sock)


def linger_close(sock: Any) -> None:
    """Close after an error without resetting the answer we just sent: stop
    writing, then read and drop what the client still sends, briefly."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.5)
        deadline = time.monotonic() + 1.0
        received = 0
        while time.monotonic() < deadline and received < 1 << 20:
            data = sock.recv(RECV_SIZE)
            if not data:
                break
            received += len(data)
    except OSError:
        pass


class ClientStream:
    """Parser events from a client socket, read as needed, under deadlines:
    ``keepalive_timeout`` while idle between requests (then the stream ends),
    ``header_timeout`` for a whole head and for each pause in a body (then
    RequestTimeout).  Reports idle/busy to the tracker."""

    def __init__(self, sock: Any, parser: RequestParser, tracker: Tracker,
                 header_timeout: float, keepalive_timeout: float,
                 park_after: float | None = None) -> None:
        self.sock = sock
        #: When set (and shorter than keepalive_timeout), an idle wait that
        #: long raises StillIdle instead of going on waiting.
        self.park_after = park_after
        self.parser = parser
        self.tracker = tracker
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.events: list[Event] = []   # parsed, not yet taken; from self.taken on
        self.taken = 0
        self.head_deadline = 0.0
        self.idle = False
        self._timeout: float | None = None  # what the socket is set to (a syscall to change)
        #: Whether bytes may already be waiting (a new connection, one woken
        #: from parking); else an idle read waits first when the socket can
        #: (GreenSocket.recv_later), as a keep-alive client's next request
        #: follows our response by a round trip at least.
        self.expect_data = True
        self._recv_later = getattr(sock, "recv_later", None)

    def go_idle(self) -> bool:
        """Report the connection idle (as ``next`` would before waiting);
        False when the server is stopping."""
        if not self.idle:
            if not self.tracker.set_idle(self.sock):
                return False
            self.idle = True
        return True

    def sending(self, timeout: float) -> None:
        """Set the socket's timeout for writing a response, so a client that
        stops reading is dropped after ``timeout`` seconds without progress
        (``next`` sets it again for reading)."""
        if timeout != self._timeout:
            self.sock.settimeout(timeout)
            self._timeout = timeout

    def next(self) -> Event | None:
        """The next event; None once the client closed or stayed idle too
        long.  Raises RequestTimeout, or Draining when idle during a stop."""
        if self.taken < len(self.events):
            self.taken += 1
            return self.events[self.taken - 1]
        while True:
            parser = self.parser
            if parser.in_head:
                timeout = self.head_deadline - time.monotonic()
                if timeout <= 0:
                    raise RequestTimeout()
            elif parser.in_message:
                timeout = self.header_timeout
            else:
                timeout = self.keepalive_timeout
                if self.park_after is not None and self.park_after < timeout:
                    timeout = self.park_after
                if not self.idle:
                    if self.tracker.set_idle(self.sock):
                        self.idle = True
                    elif not readable(self.sock):
                        raise Draining()  # stopping; a request already here is still served
            if timeout != self._timeout:
                self.sock.settimeout(timeout)
                self._timeout = timeout
            try:
                if self.expect_data or parser.in_message or self._recv_later is None:
                    data = self.sock.recv(RECV_SIZE)
                else:
                    data = self._recv_later(RECV_SIZE)
            except TimeoutError:
                if parser.in_message:
                    raise RequestTimeout() from None
                if timeout != self.keepalive_timeout:
                    raise StillIdle() from None
                return None
            if not data:
                return None
            self.expect_data = False
            if self.idle:
                self.idle = False
                self.tracker.set_busy(self.sock)
            was_in_head = parser.in_head
            new = parser.feed(data)
            if parser.in_head and (not was_in_head or any(type(e) is Head for e in new)):
                self.head_deadline = time.monotonic() + self.header_timeout
            if new:
                self.events = new
                self.taken = 1
                return new[0]


def set_nodelay(sock: Any) -> None:
    """Turn Nagle's algorithm off for ``sock``.

    Only for messages written in several pieces: a message written whole in
    one send never waits for Nagle, and on loopback leaving TCP_NODELAY off
    for those measured ~15% less CPU per request (scripts/benchmark)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class Connection:
    """Serves one accepted backend connection; call ``run()`` once."""

    def __init__(self, sock: Any, app: App, config: BackendConfig, tracker: Tracker) -> None:
        self.sock = sock
        self.app = app
        self.config = config
        self.tracker = tracker
        self.stream = ClientStream(sock, RequestParser(config.limits), tracker,
                                   config.header_timeout, config.keepalive_timeout)

    def run(self) -> None:
        """Serve requests until either side closes; never raises."""
        sock = self.sock
        try:
            self._loop()
        except OSError:
            pass  # the client went away; nothing to answer
        finally:
            self.stream.parser.release()
            self.tracker.set_busy(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _loop(self) -> None:
        sock, config = self.sock, self.config
        while True:
            try:
                event = self.stream.next()
            except RequestTimeout:
                reject(sock, HttpError(408, "request timeout"))
                return
            except Draining:
                close_gently(sock)
                return
            if event is None:
                return
            if isinstance(event, Rejected):
                reject(sock, event.error)
                return
            assert isinstance(event, Head)
            head = event
            length = head.content_length or 0
            if length > config.max_body:
                reject(sock, HttpError(413, "request body too large"))
                return
            if ((head.chunked or length) and head.version == "1.1"
                    and b"100-continue" in head.tokens(b"expect")):
                sock.sendall(CONTINUE)
            body: list[bytes] = []
            size = 0
            try:
                while not isinstance(event := self.stream.next(), End):
                    if event is None:
                        return  # client closed mid-body
                    if isinstance(event, Rejected):
                        reject(sock, event.error)
                        return
                    assert isinstance(event, Data)
                    size += len(event.data)
                    if size > config.max_body:
                        reject(sock, HttpError(413, "request body too large"))
                        return
                    body.append(event.data)
            except RequestTimeout:
                reject(sock, HttpError(408, "request body timeout"))
                return
            response = self.app.handle(head, b"".join(body))
            keep_alive = head.keep_alive and not response.close and not self.tracker.draining
            send_response(sock, response, head, keep_alive)
            if not keep_alive:
                close_gently(sock)
                return


def serve(sock: Any, address: Any, app: App, config: BackendConfig, tracker: Tracker) -> None:
    """Serve one accepted connection (the handler both models spawn)."""
    Connection(sock, app, config, tracker).run()

