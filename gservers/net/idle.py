# gservers/net/idle.py -- which connections of a server sit idle, for a graceful stop.
#
# Strategy: the server models count their live handlers themselves (a pool,
# a thread counter); this registry only knows which connections wait for
# their next request, so a stop can give those a moment to send one, then
# wake them to close, while busy ones finish their response first.
from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from gservers.net.stream import readable

#: Seconds idle keep-alive connections may still send a request during a stop.
IDLE_LINGER = 1.0

class IdleConnections:
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
