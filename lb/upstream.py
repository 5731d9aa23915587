# lb/upstream.py -- a keep-alive connection pool for one backend.
#
# Strategy: idle connections wait in a deque, newest on the right.  acquire()
# takes the newest (the one least likely to have been closed by the backend),
# after closing any that idled past ``idle_timeout`` from the left.  A taken
# connection is checked with a zero-timeout poll: readable while idle means
# the backend closed it (or sent something unasked), so it is dropped and a
# *fresh* connection is made -- never another pooled one that may be just as
# stale.  Connections are made to the address resolved at start, with no
# name lookup per connect.  At most ``max_busy`` connections are lent out at
# once; a request beyond that waits (in order) for one to come back, as
# haproxy's per-server maxconn queues, and gives up after ``queue_timeout``.
# What is lent is an ``Upstream``: the socket and the parser of its last
# response, kept for the next one, since a new parser costs about as much as
# parsing a short response.  An https:// backend's pool makes TLS
# connections (gservers.net.tls: the handshake is part of connecting, and a
# failed one -- a certificate that does not verify -- is a ConnectError);
# pooled TLS connections save the handshake as plain ones save the connect.
# Connects and reuses are counted into ``counts`` (the backend's shared
# block, lb.tally), so they survive a pool being replaced on reload.
from __future__ import annotations

import functools
import os
import socket
import ssl
import time
from collections import deque
from types import SimpleNamespace
from typing import Any

from gevent.lock import BoundedSemaphore

from gservers.http import ResponseParser
from gservers.net import tls
from gservers.net.greensock import GreenSocket


class ConnectError(Exception):
    """The backend could not be reached (refused, unreachable, timed out)."""


class Busy(Exception):
    """Every one of the backend's slots stayed taken for the whole wait."""


class Upstream:
    """A connection to a backend as the pool lends it: its socket, and the
    parser of its last response while that ended cleanly (the proxy takes
    it for the next response and puts it back)."""

    __slots__ = ("sock", "parser")

    def __init__(self, sock: GreenSocket) -> None:
        self.sock = sock
        self.parser: ResponseParser | None = None  #: kept for the next response

    def close(self) -> None:
        """Close the socket and release a kept parser."""
        if self.parser is not None:
            self.parser.release()
            self.parser = None
        self.sock.close()


def backend_context(cafile: str | None, verify: bool) -> ssl.SSLContext:
    """The TLS context for https:// backends (one for all of them): verify
    against ``cafile`` (None: the system's CAs), or not at all.  Made anew
    when the CA file has changed, so a reload picks a new one up.  Raises
    ValueError naming the file."""
    try:
        stamp = os.stat(cafile).st_mtime_ns if cafile else 0
    except OSError as exc:
        raise ValueError(f"--backend-ca: cannot read {cafile}: {exc.strerror}") from None
    return _context(cafile, verify, stamp)


@functools.lru_cache(maxsize=8)
def _context(cafile: str | None, verify: bool, stamp: int) -> ssl.SSLContext:
    return tls.client_context(cafile, verify)


class UpstreamPool:
    """Idle keep-alive connections to one backend address; TLS ones when
    ``context`` (a TLS client context) is given, checked against ``hostname``."""

    def __init__(self, family: int, sockaddr: tuple, max_idle: int, idle_timeout: float,
                 connect_timeout: float, max_busy: int = 0, queue_timeout: float = 10.0,
                 context: ssl.SSLContext | None = None, hostname: str = "",
                 counts: Any = None) -> None:
        """``counts``: where ``connects`` and ``reuses`` are counted (an
        object with those two attributes; by default a private one)."""
        self.family = family
        self.context = context
        self.hostname = hostname
        #: Connections lent out at once, at most: a backend is CPU-bound, so
        #: a connection per concurrent request adds connections, not
        #: throughput.  None: no limit.
        self.slots = BoundedSemaphore(max_busy) if max_busy else None
        self.queue_timeout = queue_timeout
        self.sockaddr = sockaddr
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._idle: deque[tuple[Upstream, float]] = deque()
        self.counts = counts if counts is not None else SimpleNamespace(connects=0, reuses=0)
        #: False while the backend is in maintenance: what comes back is closed.
        self.keep_idle = True

    @property
    def connects(self) -> int:
        """New connections made."""
        return int(self.counts.connects)

    @property
    def reuses(self) -> int:
        """Requests sent on a pooled connection."""
        return int(self.counts.reuses)

    @property
    def idle(self) -> int:
        """Connections waiting in the pool."""
        return len(self._idle)

    def connect(self) -> GreenSocket:
        """A new connection's socket; raises ConnectError."""
        # Our side closes first, so these sockets end in TIME_WAIT holding an
        # ephemeral port for a minute; SO_REUSEADDR lets a server listen on
        # such a port meanwhile (44444 itself is in Linux's ephemeral range).
        try:
            if self.context is None:
                sock = GreenSocket.connect(self.family, self.sockaddr, self.connect_timeout,
                                           reuse_addr=True)
            else:
                sock = tls.connect(self.family, self.sockaddr, self.connect_timeout,
                                   self.context, self.hostname, reuse_addr=True)
        except ssl.SSLError as exc:
            raise ConnectError(tls.describe(exc)) from None
        except OSError as exc:
            reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
            raise ConnectError(reason) from None
        self.counts.connects += 1
        return sock

    def acquire(self) -> tuple[Upstream, bool]:
        """(connection, reused): the newest live idle one, else a new one;
        waits for a slot when the limit is reached.  Raises Busy or
        ConnectError.  Give the connection back with ``release`` or
        ``discard``."""
        if self.slots is not None and not self.slots.acquire(timeout=self.queue_timeout):
            raise Busy()
        try:
            return self._take()
        except BaseException:
            if self.slots is not None:
                self.slots.release()
            raise

    def _take(self) -> tuple[Upstream, bool]:
        idle = self._idle
        if idle:
            now = time.monotonic()
            while idle and now - idle[0][1] > self.idle_timeout:
                idle.popleft()[0].close()
            if idle:
                conn = idle.pop()[0]
                if not conn.sock.readable():
                    self.counts.reuses += 1
                    return conn, True
                conn.close()
        return Upstream(self.connect()), False

    def release(self, conn: Upstream) -> None:
        """Give back a connection whose last response ended cleanly."""
        if self.slots is not None:
            self.slots.release()
        if self.keep_idle and len(self._idle) < self.max_idle:
            self._idle.append((conn, time.monotonic()))
        else:
            conn.close()

    def discard(self, conn: Upstream) -> None:
        """Close a lent connection that cannot be reused."""
        if self.slots is not None:
            self.slots.release()
        conn.close()

    def reap(self) -> None:
        """Close connections idle past the timeout."""
        now = time.monotonic()
        idle = self._idle
        while idle and now - idle[0][1] > self.idle_timeout:
            idle.popleft()[0].close()

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop()[0].close()
