# tests/faultproxy.py -- a small fault-injecting TCP proxy for the tests.
#
# Strategy: real bytes over real sockets instead of mocks.  A FaultProxy
# listens on 127.0.0.1:0 and forwards every accepted connection to one target
# (a real backend).  It runs in background threads: one acceptor, and per
# connection two pumps (client -> target, target -> client).  The connection
# to the target is opened lazily, when the first byte has to be forwarded,
# so faults that never reach the backend (reset, blackhole, garbage) never
# touch it.  The mode is read at the moment something happens, so it can be
# switched at runtime (``proxy.mode = "garbage"``) and applies to connections
# that already exist -- a balancer's pooled keep-alive connections included:
#
#   pass        forward both ways untouched
#   latency     sleep ``latency_ms`` before forwarding each chunk (both ways)
#   reset       RST the client side (SO_LINGER 0 close): on accept when
#               ``reset_on == "connect"``, else when a request arrives;
#               an existing connection is reset at its next request either way
#   slow_close  forward the request; in the response, state
#               ``Connection: close`` (inserted after the status line unless
#               there) and forward it, then hold the connection open for
#               ``slow_close_s`` seconds before closing it -- a backend that
#               says it closes but keeps the socket open
#   blackhole   accept and read requests, never answer
#   truncate    forward the request, then only the first ``truncate_bytes`` of
#               the response, then close: the target side at once, the client
#               side for writing (FIN), then wait for the client to close it
#   garbage     answer every request with non-HTTP bytes (the connection
#               stays open)
#
# After a truncation or a garbage answer the proxy keeps reading the client
# side: a request that still arrives there is counted
# (``request_after_truncate`` / ``garbage_reused``), and so is the client's
# close (``truncate_closed`` / ``garbage_closed``) -- discarding a connection
# that misbehaved is the client's job, and this makes it observable.
#
# The mode of a request (everything but latency) is fixed when its first
# chunk arrives.  A "request" is a client chunk that starts with an HTTP
# request line (a balancer writes a head in one piece); its request line is
# kept with each fault event, so a test can match what the proxy did to
# what each client saw (tests/loadclient.py puts a unique target in every
# request).  Counters and events sit behind one lock.  Sockets are only
# shut down from other threads (that wakes a blocked recv); the last pump of
# a connection closes both, so no descriptor is closed under a thread still
# using it.  ``stop()`` (or leaving the ``with`` block) ends everything.
from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections import Counter
from typing import Any

MODES = ("pass", "latency", "reset", "slow_close", "blackhole", "truncate", "garbage")
RESET_ON = ("connect", "request")
#: What a garbage-answering "backend" says: no status line, binary, and a
#: CRLF so that a client reading up to the first line break gets its answer.
GARBAGE = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP at all \xff\xfe\x00\r\n\r\n"
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


def _shutdown(sock: socket.socket | None, how: int = socket.SHUT_RDWR) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(how)
    except OSError:
        pass


def _rst_close(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Conn:
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
            _shutdown(self.client)
        _shutdown(self.upstream)

    def pump_ended(self) -> None:
        with self.lock:
            self.live -= 1
            last = self.live == 0
        if last:
            self.close()

    def close(self) -> None:
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
        _shutdown(self.upstream)
        if upstream_thread is not None and upstream_thread is not threading.current_thread():
            upstream_thread.join(5.0)  # nobody else touches the client socket now
        _rst_close(self.client)

    # -- client -> target -------------------------------------------------------
    def client_pump(self) -> None:
        proxy = self.proxy
        try:
            while True:
                try:
                    data = self.client.recv(RECV_SIZE)
                except OSError:
                    data = b""
                if not data or self.done:
                    if data == b"" and not self.done:  # the client closed it
                        if self.truncated:
                            proxy._count("truncate_closed")
                        elif self.garbage_replies:
                            proxy._count("garbage_closed")
                    _shutdown(self.upstream, socket.SHUT_WR)
                    return
                proxy._count("bytes_from_client", len(data))
                line = request_line(data)
                if line is not None:
                    self.requests += 1
                    proxy._count("requests")
                if self.holding:  # slow_close: the "backend" said close; ignore the rest
                    if line is not None:
                        proxy._event("request_while_held", line)
                    continue
                if self.truncated:  # nothing can be answered here any more
                    if line is not None:
                        proxy._event("request_after_truncate", line)
                    continue
                mode = proxy.mode
                if mode == "reset":
                    proxy._event("reset", line or "")
                    self.reset_client()
                    return
                if mode == "blackhole":
                    if line is not None:
                        proxy._event("blackhole", line)
                    continue
                if mode == "garbage":
                    if line is not None:
                        proxy._event("garbage", line)
                        self.garbage_replies += 1
                        if self.garbage_replies > 1:
                            proxy._count("garbage_reused")
                        try:
                            self.client.sendall(proxy.garbage)
                        except OSError:
                            return
                        proxy._count("bytes_to_client", len(proxy.garbage))
                    continue
                if line is not None:
                    self.request_line = line
                    self.response_started = False
                    self.response_mode = mode if mode in ("truncate", "slow_close") else "pass"
                    self.response_left = proxy.truncate_bytes
                if mode == "latency" and proxy._stop.wait(proxy.latency_ms / 1000):
                    return
                if not self._send_upstream(data):
                    return
        finally:
            self.pump_ended()

    def _send_upstream(self, data: bytes) -> bool:
        proxy = self.proxy
        if self.upstream is None:
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
        try:
            self.upstream.sendall(data)
        except OSError:
            return False
        proxy._count("bytes_to_upstream", len(data))
        return True

    # -- target -> client -------------------------------------------------------
    def upstream_pump(self) -> None:
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
                mode = self.response_mode
                if mode == "truncate":
                    data = data[:self.response_left]
                    self.response_left -= len(data)
                    if self.response_left <= 0:
                        proxy._event("truncate", self.request_line)
                        self._to_client(data)
                        self.truncated = True
                        _shutdown(self.client, socket.SHUT_WR)  # FIN; the client pump
                        break                                    # waits for the close
                elif mode == "slow_close" and not self.response_started:
                    data = _say_close(data)
                    self.hold_until = time.monotonic() + proxy.slow_close_s
                    self.holding = True
                    proxy._event("slow_close", self.request_line)
                self.response_started = True
                if not self._to_client(data):
                    break
        finally:
            if self.truncated:
                _shutdown(upstream)
            else:
                self.shutdown()
            self.pump_ended()

    def _to_client(self, data: bytes) -> bool:
        if not data:
            return True
        try:
            self.client.sendall(data)
        except OSError:
            return False
        self.proxy._count("bytes_to_client", len(data))
        return True


def _say_close(data: bytes) -> bytes:
    """``data`` (a response's first bytes) stating ``Connection: close``."""
    eol = data.find(b"\r\n")
    if eol < 0 or not data.startswith(b"HTTP/1."):
        return data
    end = data.find(b"\r\n\r\n")
    head = data[:end + 2] if end >= 0 else data
    if _CONNECTION_CLOSE.search(head):
        return data
    return data[:eol + 2] + b"Connection: close\r\n" + data[eol + 2:]


class FaultProxy:
    """A TCP proxy on 127.0.0.1:``port`` in front of ``target`` with a
    switchable fault ``mode``.  Use as a context manager, or start()/stop()."""

    def __init__(self, target: tuple[str, int], mode: str = "pass", *,
                 latency_ms: float = 300.0, reset_on: str = "request",
                 slow_close_s: float = 5.0, truncate_bytes: int = 100,
                 garbage: bytes = GARBAGE, host: str = "127.0.0.1",
                 connect_timeout: float = 2.0) -> None:
        self.target = target
        self.latency_ms = latency_ms
        self.reset_on = reset_on
        self.slow_close_s = slow_close_s
        self.truncate_bytes = truncate_bytes
        self.garbage = garbage
        self.connect_timeout = connect_timeout
        self._mode = "pass"
        self.mode = mode
        if reset_on not in RESET_ON:
            raise ValueError(f"reset_on must be one of {RESET_ON}")
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._events: list[tuple[float, str, str]] = []
        self._conns: set[_Conn] = set()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(1024)
        self._listener.settimeout(0.1)  # the acceptor polls the stop flag
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._acceptor: threading.Thread | None = None

    # -- mode -------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; choose one of {', '.join(MODES)}")
        self._mode = value

    # -- life -------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"faultproxy-{self.port}")
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every connection, wait for the threads."""
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.shutdown()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self._listener.close()
        except OSError:
            pass

    def __enter__(self) -> FaultProxy:
        return self.start() if self._acceptor is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- figures ----------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counters: connections, upstream_connections, requests, bytes_*,
        one per fault kind (reset, truncate, garbage, blackhole, slow_close),
        request_while_held, request_after_truncate, garbage_reused,
        truncate_closed, garbage_closed (connections the client closed after
        such a fault), active (connections open now)."""
        with self._lock:
            out = dict(self._counts)
            out["active"] = len(self._conns)
        return out

    def events(self, kind: str | None = None) -> list[tuple[float, str, str]]:
        """(monotonic time, kind, request line) of each fault applied."""
        with self._lock:
            return [e for e in self._events if kind is None or e[1] == kind]

    def targets(self, kind: str) -> list[str]:
        """Request targets that suffered fault ``kind``."""
        return [target_of(line) for _, _, line in self.events(kind) if line]

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._events.clear()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _event(self, kind: str, line: str) -> None:
        with self._lock:
            self._counts[kind] += 1
            self._events.append((time.monotonic(), kind, line))

    def _track(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.ident is None or t.is_alive()]
            self._threads.append(thread)

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)

    # -- accepting --------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                time.sleep(0.01)
                continue
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._count("connections")
            if self._mode == "reset" and self.reset_on == "connect":
                self._event("reset", "")
                _rst_close(client)
                continue
            conn = _Conn(self, client)
            thread = threading.Thread(target=conn.client_pump, daemon=True,
                                      name=f"faultproxy-{self.port}-in")
            with self._lock:
                self._conns.add(conn)
            self._track(thread)
            thread.start()
        try:
            self._listener.close()
        except OSError:
            pass
