# lb/upstream.py -- a keep-alive connection pool for one backend.
#
# Strategy: idle connections wait in a deque, newest on the right.  acquire()
# takes the newest (the one least likely to have been closed by the backend),
# after closing any that idled past ``idle_timeout`` from the left.  A taken
# connection is checked with a zero-timeout select: readable while idle means
# the backend closed it (or sent something unasked), so it is dropped and a
# *fresh* connection is made -- never another pooled one that may be just as
# stale.  Connections are made to the address resolved at start, with no
# name lookup per connect.
from __future__ import annotations

import socket
import time
from collections import deque
from typing import Any

from gservers.greensock import GreenSocket


class ConnectError(Exception):
    """The backend could not be reached (refused, unreachable, timed out)."""


class UpstreamPool:
    """Idle keep-alive connections to one backend address."""

    def __init__(self, family: int, sockaddr: tuple, max_idle: int, idle_timeout: float,
                 connect_timeout: float) -> None:
        self.family = family
        self.sockaddr = sockaddr
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._idle: deque[tuple[Any, float]] = deque()
        self.connects = 0      #: new connections made
        self.reuses = 0        #: requests sent on a pooled connection

    @property
    def idle(self) -> int:
        """Connections waiting in the pool."""
        return len(self._idle)

    def connect(self) -> Any:
        """A new connection; raises ConnectError."""
        # Our side closes first, so these sockets end in TIME_WAIT holding an
        # ephemeral port for a minute; SO_REUSEADDR lets a server listen on
        # such a port meanwhile (44444 itself is in Linux's ephemeral range).
        try:
            sock = GreenSocket.connect(self.family, self.sockaddr, self.connect_timeout,
                                       reuse_addr=True)
        except OSError as exc:
            reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
            raise ConnectError(reason) from None
        self.connects += 1
        return sock

    def acquire(self) -> tuple[Any, bool]:
        """(connection, reused): the newest live idle one, else a new one."""
        idle = self._idle
        if idle:
            now = time.monotonic()
            while idle and now - idle[0][1] > self.idle_timeout:
                idle.popleft()[0].close()
            if idle:
                sock = idle.pop()[0]
                if not sock.readable():
                    self.reuses += 1
                    return sock, True
                sock.close()
        return self.connect(), False

    def release(self, sock: Any) -> None:
        """Give back a connection whose last response ended cleanly."""
        if len(self._idle) < self.max_idle:
            self._idle.append((sock, time.monotonic()))
        else:
            sock.close()

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
