# gservers/net/stream.py -- a client connection as parser events, and answers back.
#
# Strategy: a plain blocking loop over a socket-like object (recv, sendall,
# settimeout, shutdown, close), so a GreenSocket in a greenlet and an OS
# socket in a thread run exactly the same code.  Bytes are fed to the shared
# RequestParser and its events handed out in order, which gives pipelining
# for free.  Deadlines: ``keepalive_timeout`` while idle (then the stream
# ends), ``header_timeout`` for a whole head and for each pause inside a body
# (then RequestTimeout, a 408).  Answers go out framed by
# gservers.http.responses, a file body by the socket's sendfile (send_file);
# after an error the connection closes without resetting what was just sent.
from __future__ import annotations

import errno
import select
import socket
import time
from typing import TYPE_CHECKING, Any

from gservers.http import Event, Head, HttpError, RequestParser
from gservers.http.responses import SERVER, Response, error_response, frame

if TYPE_CHECKING:
    from gservers.net.idle import IdleConnections

RECV_SIZE = 65536

class RequestTimeout(Exception):
    """The client took too long over a request head or body (answer 408)."""

class Draining(Exception):
    """The server is stopping; close this idle connection."""

class StillIdle(Exception):
    """Idle for ``park_after`` seconds: the caller may park the connection."""

def send_response(sock: Any, response: Response, head: Head | None, keep_alive: bool,
                  server: bytes = SERVER) -> None:
    """Write ``response`` (no body for HEAD requests); a file body with send_file."""
    data = frame(response, head, keep_alive, server)
    with_body = head is None or head.method != b"HEAD"
    if response.path is None or not with_body:
        sock.sendall(data + response.body if with_body else data)
        return
    with open(response.path, "rb") as fh:  # before the head: a vanished file sends nothing
        sock.sendall(data)
        set_nodelay(sock)  # several writes: no Nagle wait on the last small one
        send_file(sock, fh, response.offset, response.count)

def send_file(sock: Any, fh: Any, offset: int = 0, count: int | None = None) -> None:
    """Send ``count`` bytes of the open file ``fh`` from ``offset`` (None: to
    its end) with the socket's ``sendfile`` -- os.sendfile, the kernel copying
    from the page cache; cooperative on a GreenSocket, the standard socket's
    in a thread -- or by reads where the socket has none.  Raises OSError
    when the file ends first: the response is cut short and the connection
    must close."""
    if count == 0:
        return
    sendfile = getattr(sock, "sendfile", None)
    if sendfile is not None:
        sent = sendfile(fh, offset, count)
    else:
        fh.seek(offset)
        sent = 0
        while count is None or sent < count:
            block = fh.read(RECV_SIZE if count is None else min(RECV_SIZE, count - sent))
            if not block:
                break
            sock.sendall(block)
            sent += len(block)
    if count is not None and sent < count:
        raise OSError(errno.EIO, "the file shrank while it was sent")

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
    RequestTimeout).  Reports idle/busy to ``registry``."""

    def __init__(self, sock: Any, parser: RequestParser, registry: IdleConnections,
                 header_timeout: float, keepalive_timeout: float,
                 park_after: float | None = None) -> None:
        self.sock = sock
        #: When set (and shorter than keepalive_timeout), an idle wait that
        #: long raises StillIdle instead of going on waiting.
        self.park_after = park_after
        self.parser = parser
        self.registry = registry
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
            if not self.registry.set_idle(self.sock):
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
                    if self.registry.set_idle(self.sock):
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
                self.registry.set_busy(self.sock)
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
    one send never waits for Nagle, and leaving TCP_NODELAY off for those
    saves CPU per request (scripts/benchmark shows it)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
