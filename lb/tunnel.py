# lb/tunnel.py -- an upgraded connection (WebSocket and the like): bytes both ways.
#
# Strategy: once a backend has answered 101 Switching Protocols and the head
# has gone to the client, the two sockets carry a protocol the balancer does
# not speak, so it only copies: one greenlet per direction, each a blocking
# recv/sendall loop on the connections' own sockets.  The tunnel ends when
# either side closes (or errs): both sockets are then shut down, which wakes
# the other direction's read.  Idle means no byte in either direction: each
# read waits at most the idle timeout, and a read that times out while the
# other direction moved lately waits on.  The connection to the backend is
# never pooled afterwards; the proxy closes both when ``run`` returns.
from __future__ import annotations

import socket
import time
from typing import Any

import gevent

#: Bytes read per recv in each direction.
CHUNK = 65536


class Tunnel:
    """Copies bytes between ``client`` and ``upstream`` until one side
    closes or both stay idle for ``idle_timeout`` seconds."""

    def __init__(self, client: Any, upstream: Any, idle_timeout: float) -> None:
        self.client = client
        self.upstream = upstream
        self.idle_timeout = idle_timeout
        self.last = time.monotonic()  #: when a byte last moved either way
        self.up = 0                   #: bytes client -> backend
        self.down = 0                 #: bytes backend -> client
        self.idle = False             #: ended for idleness

    def run(self, first_down: bytes = b"") -> None:
        """Relay until the end; ``first_down``: bytes of the new protocol the
        backend sent with its 101, to pass on first."""
        if first_down:
            self.client.sendall(first_down)
            self.down += len(first_down)
        other = gevent.spawn(self._pump, self.upstream, self.client, False)
        try:
            self._pump(self.client, self.upstream, True)
        finally:
            self._shut()
            other.join()

    def _pump(self, src: Any, dst: Any, upstream: bool) -> None:
        """Copy ``src`` to ``dst`` until ``src`` ends; then end the tunnel."""
        try:
            while True:
                remaining = self.idle_timeout - (time.monotonic() - self.last)
                if remaining <= 0:
                    self.idle = True
                    return
                src.settimeout(remaining)
                try:
                    data = src.recv(CHUNK)
                except TimeoutError:
                    if time.monotonic() - self.last >= self.idle_timeout:
                        self.idle = True
                        return
                    continue  # the other direction moved: wait on
                if not data:
                    return
                dst.sendall(data)
                self.last = time.monotonic()
                if upstream:
                    self.up += len(data)
                else:
                    self.down += len(data)
        except OSError:
            return
        finally:
            self._shut()

    def _shut(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
