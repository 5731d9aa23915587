# loadtests/faults/_relay.py -- one connection through the fault proxy (proxy.py).
#
# Strategy: a Relay is one accepted client connection and, opened lazily when
# the first byte has to be forwarded, its connection to the target.  Two
# pumps run it, each in a thread of its own: the client pump reads the
# client, decides the fault of each request by the proxy's mode at that
# moment (answering reset, blackhole and garbage itself, so that the target
# never sees those requests) and forwards the rest; the upstream pump reads
# the target and forwards its response, truncated or stating a close it will
# not do when the request's mode said so.  Sockets are only shut down from
# other threads (that wakes a blocked recv); the last pump to end closes
# both, so no descriptor is closed under a thread still using it.  Every
# fault is reported to the proxy with the request line it hit.
from __future__ import annotations

import re
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loadtests.faults.proxy import FaultProxy

RECV_SIZE = 65536
_REQUEST_LINE = re.compile(rb"^[A-Z]{3,10} \S+ HTTP/\d\.\d\r\n")
_CONNECTION_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close[ \t]*\r\n", re.I)


def request_line(data: bytes) -> str | None:
    """The request line if ``data`` starts a request, else None."""
    if not _REQUEST_LINE.match(data):
        return None
    return data[:data.index(b"\r\n")].decode("latin-1")


def target_of(line: str) -> str:
    """The request target of a request line (``GET /x HTTP/1.1`` -> ``/x``)."""
    parts = line.split(" ")
    return parts[1] if len(parts) == 3 else ""


def shutdown(sock: socket.socket | None, how: int = socket.SHUT_RDWR) -> None:
    """Shut ``sock`` down (``how``), ignoring a socket that is already gone."""
    if sock is None:
        return
    try:
        sock.shutdown(how)
    except OSError:
        pass


def rst_close(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def say_close(data: bytes) -> bytes:
    """``data`` (a response's first bytes) stating ``Connection: close``."""
    eol = data.find(b"\r\n")
    if eol < 0 or not data.startswith(b"HTTP/1."):
        return data
    end = data.find(b"\r\n\r\n")
    head = data[:end + 2] if end >= 0 else data
    if _CONNECTION_CLOSE.search(head):
        return data
    return data[:eol + 2] + b"Connection: close\r\n" + data[eol + 2:]


class Relay:
    """One proxied connection and the state of its current response."""

    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.lock = threading.Lock()
        self.live = 1                       #: pumps still running (client pump first)
        self.done = False                   #: shut down: pumps are ending
        self.resetting = False              #: the client gets an RST, not a FIN
        self.closed = False
        self.requests = 0
        self.upstream_thread: threading.Thread | None = None
        # The current response, as the mode of its request decided:
        self.response_mode = "pass"
        self.response_left = 0              #: truncate: bytes still to forward
        self.response_started = False
        self.request_line = ""
        self.hold_until = 0.0               #: slow_close: close at this time
        self.holding = False
        self.garbage_replies = 0
        self.truncated = False              #: cut: the client side is half-closed

    # -- ending ---------------------------------------------------------------
    def shutdown(self) -> None:
        """Wake both pumps; they end and the last one closes the sockets."""
        with self.lock:
            self.done = True
            resetting = self.resetting
        if not resetting:
            shutdown(self.client)
        shutdown(self.upstream)

    def pump_ended(self) -> None:
        """One pump is over; the last one closes the connection."""
        with self.lock:
            self.live -= 1
            last = self.live == 0
        if last:
            self.close()

    def close(self) -> None:
        """Close both sockets (once) and let the proxy forget this relay."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self.proxy._forget(self)

    def reset_client(self) -> None:
        """RST the client (called by the client pump, the client's only reader)."""
        with self.lock:
            self.done = True
            self.resetting = True
            upstream_thread = self.upstream_thread
        shutdown(self.upstream)
        if upstream_thread is not None and upstream_thread is not threading.current_thread():
            upstream_thread.join(5.0)  # nobody else touches the client socket now
        rst_close(self.client)

    # -- client -> target -------------------------------------------------------
    def client_pump(self) -> None:
        """Read the client until it closes or the relay ends."""
        try:
            while True:
                try:
                    data = self.client.recv(RECV_SIZE)
                except OSError:
                    data = b""
                if not data or self.done:
                    self._client_gone(data)
                    return
                if not self._from_client(data):
                    return
        finally:
            self.pump_ended()

    def _client_gone(self, data: bytes) -> None:
        """The client pump ends: count a client's close after a fault, FIN the target."""
        if data == b"" and not self.done:  # the client closed it
            if self.truncated:
                self.proxy._count("truncate_closed")
            elif self.garbage_replies:
                self.proxy._count("garbage_closed")
        shutdown(self.upstream, socket.SHUT_WR)

    def _from_client(self, data: bytes) -> bool:
        """Apply the fault of one client chunk; False once the relay is over."""
        proxy = self.proxy
        proxy._count("bytes_from_client", len(data))
        line = request_line(data)
        if line is not None:
            self.requests += 1
            proxy._count("requests")
        if self.holding:  # slow_close: the "backend" said close; ignore the rest
            if line is not None:
                proxy._event("request_while_held", line)
            return True
        if self.truncated:  # nothing can be answered here any more
            if line is not None:
                proxy._event("request_after_truncate", line)
            return True
        mode = proxy.mode
        if mode in ("reset", "blackhole", "garbage"):
            return self._answer_itself(mode, line)
        if line is not None:
            self.request_line = line
            self.response_started = False
            self.response_mode = mode if mode in ("truncate", "slow_close") else "pass"
            self.response_left = proxy.truncate_bytes
        if mode == "latency" and proxy._stop.wait(proxy.latency_ms / 1000):
            return False
        return self._send_upstream(data)

    def _answer_itself(self, mode: str, line: str | None) -> bool:
        """The faults the target never sees: reset, blackhole, garbage."""
        proxy = self.proxy
        if mode == "reset":
            proxy._event("reset", line or "")
            self.reset_client()
            return False
        if line is None:
            return True
        proxy._event(mode, line)
        if mode == "blackhole":
            return True
        self.garbage_replies += 1
        if self.garbage_replies > 1:
            proxy._count("garbage_reused")
        try:
            self.client.sendall(proxy.garbage)
        except OSError:
            return False
        proxy._count("bytes_to_client", len(proxy.garbage))
        return True

    def _send_upstream(self, data: bytes) -> bool:
        """Forward ``data`` to the target (connecting first); False if that failed."""
        proxy = self.proxy
        if self.upstream is None and not self._connect():
            return False
        assert self.upstream is not None
        try:
            self.upstream.sendall(data)
        except OSError:
            return False
        proxy._count("bytes_to_upstream", len(data))
        return True

    def _connect(self) -> bool:
        """Open the target connection and start its pump; False if it cannot."""
        proxy = self.proxy
        try:
            upstream = socket.create_connection(proxy.target, timeout=proxy.connect_timeout)
        except OSError:
            proxy._count("upstream_connect_failed")
            self.reset_client()  # what a client of a dead backend sees
            return False
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        proxy._count("upstream_connections")
        thread = threading.Thread(target=self.upstream_pump, daemon=True,
                                  name=f"faultproxy-{proxy.port}-up")
        with self.lock:
            if self.done:
                upstream.close()
                return False
            self.upstream = upstream
            self.upstream_thread = thread
            self.live += 1
        proxy._track(thread)
        thread.start()
        return True

    # -- target -> client -------------------------------------------------------
    def upstream_pump(self) -> None:
        """Forward the target's bytes, as the current response's mode says."""
        proxy = self.proxy
        upstream = self.upstream
        assert upstream is not None
        try:
            while not self.done:
                if self.holding:
                    left = self.hold_until - time.monotonic()
                    if left <= 0:
                        break
                    upstream.settimeout(left)
                try:
                    data = upstream.recv(RECV_SIZE)
                except TimeoutError:
                    break  # the hold is over
                except OSError:
                    data = b""
                if not data:
                    if self.holding:  # the backend closed: keep the client waiting still
                        proxy._stop.wait(max(0.0, self.hold_until - time.monotonic()))
                    break
                proxy._count("bytes_from_upstream", len(data))
                if proxy.mode == "latency" and proxy._stop.wait(proxy.latency_ms / 1000):
                    break
                if not self._to_client_as_told(data):
                    break
        finally:
            if self.truncated:
                shutdown(upstream)
            else:
                self.shutdown()
            self.pump_ended()

    def _to_client_as_told(self, data: bytes) -> bool:
        """Forward one chunk of the response; False when the pump must end."""
        proxy = self.proxy
        mode = self.response_mode
        if mode == "truncate":
            data = data[:self.response_left]
            self.response_left -= len(data)
            if self.response_left <= 0:
                proxy._event("truncate", self.request_line)
                self._to_client(data)
                self.truncated = True
                shutdown(self.client, socket.SHUT_WR)  # FIN; the client pump waits for
                return False                            # the client to close it
        elif mode == "slow_close" and not self.response_started:
            data = say_close(data)
            self.hold_until = time.monotonic() + proxy.slow_close_s
            self.holding = True
            proxy._event("slow_close", self.request_line)
        self.response_started = True
        return self._to_client(data)

    def _to_client(self, data: bytes) -> bool:
        """Send ``data`` to the client; False if it is gone."""
        if not data:
            return True
        try:
            self.client.sendall(data)
        except OSError:
            return False
        self.proxy._count("bytes_to_client", len(data))
        return True
