# loadtests/faults/proxy.py -- a small fault-injecting TCP proxy.
#
# Strategy: real bytes over real sockets instead of mocks.  A FaultProxy
# listens on 127.0.0.1:0 and forwards every accepted connection to one target
# (a real backend).  It runs in background threads: one acceptor, and per
# connection two pumps (client -> target, target -> client; _relay.py).  The
# connection to the target is opened lazily, when the first byte has to be
# forwarded, so faults that never reach the backend (reset, blackhole,
# garbage) never touch it.  The mode is read at the moment something
# happens, so it can be switched at runtime (``proxy.mode = "garbage"``) and
# applies to connections that already exist -- a balancer's pooled
# keep-alive connections included:
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
# kept with each fault event, so a caller can match what the proxy did to
# what each client saw (load.py puts a unique target in every request).
# Counters and events sit behind one lock.  ``stop()`` (or leaving the
# ``with`` block) ends everything.
from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from typing import Any

from loadtests.faults._relay import Relay, request_line, rst_close, target_of

__all__ = ["GARBAGE", "MODES", "RESET_ON", "FaultProxy", "request_line", "target_of"]

MODES = ("pass", "latency", "reset", "slow_close", "blackhole", "truncate", "garbage")
RESET_ON = ("connect", "request")
#: What a garbage-answering "backend" says: no status line, binary, and a
#: CRLF so that a client reading up to the first line break gets its answer.
GARBAGE = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP at all \xff\xfe\x00\r\n\r\n"


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
        self._conns: set[Relay] = set()
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
        """The fault applied from now on (one of MODES)."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown mode {value!r}; choose one of {', '.join(MODES)}")
        self._mode = value

    # -- life -------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Start accepting; returns self."""
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
        """Forget every counter and event so far."""
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

    def _forget(self, conn: Relay) -> None:
        with self._lock:
            self._conns.discard(conn)

    # -- accepting --------------------------------------------------------------
    def _accept_loop(self) -> None:
        """Accept until stopped: a Relay and its client pump per connection."""
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
                rst_close(client)
                continue
            conn = Relay(self, client)
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
