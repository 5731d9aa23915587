# lb/parking.py -- idle client connections held without a greenlet.
#
# Strategy: a greenlet blocked in recv costs several times the memory of an
# I/O watcher and a timer, and a balancer holding thousands of idle
# keep-alive clients would spend most of its memory on such greenlets.  A
# connection waiting for a request -- one that has sent nothing yet at once,
# one between requests after PARK_AFTER seconds, so busy keep-alive traffic
# never pays for it -- instead keeps an I/O watcher, a keep-alive timer and a
# slot of the server's pool, so --max-connections still bounds active plus
# parked connections.  When bytes (or EOF) arrive it gets a greenlet again
# from the same pool; when the timer fires it is closed.  A client connection
# makes its Parking the first time it parks.  A TLS connection parks the
# same way: its watcher is on the descriptor, and what the SSL object holds
# decrypted is checked first (parking is refused while any waits).
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gevent import get_hub

from gservers.net.stream import readable

if TYPE_CHECKING:
    from gservers.net.greenpool import GreenletPool

#: Seconds a client connection waits for its next request in a greenlet before
#: it is parked (parking costs a greenlet and two watchers per wake-up).
PARK_AFTER = 1.0

#: What a parked connection holds: (io watcher, timer, serve, close).
Held = tuple[Any, Any, Callable[[], None], Callable[[], None]]


class Parking:
    """Parks one client connection: ``sock`` and its ``stream`` (a
    ClientStream), a slot of ``pool`` held while parked,
    and ``parked``, the proxy's map of parked sockets to their Parking."""

    __slots__ = ("sock", "stream", "pool", "parked", "_held")

    def __init__(self, sock: Any, stream: Any, pool: GreenletPool,
                 parked: dict[Any, Parking]) -> None:
        self.sock = sock
        self.stream = stream
        self.pool = pool
        self.parked = parked
        #: Set while parked.  The connection's callbacks are held only then:
        #: held for good they would make a reference cycle, which only the
        #: garbage collector frees.
        self._held: Held | None = None

    def park(self, keepalive: float, serve: Callable[[], None],
             close: Callable[[], None]) -> bool:
        """Wait for the next request, up to ``keepalive`` seconds, without a
        greenlet, then ``serve`` in a new one (or ``close`` if the time runs
        out); False if that cannot be done now."""
        pool, sock = self.pool, self.sock
        # Bytes already here are served at once.  On a TLS connection this
        # also sees decrypted bytes buffered in the SSL object, which the
        # descriptor's watcher would never report (TLSSocket.readable).
        if readable(sock):
            return False
        if not pool.hold():
            return False
        if not self.stream.go_idle():
            pool.release()
            return False
        loop = get_hub().loop
        io, timer = loop.io(sock.fileno(), 1), loop.timer(max(keepalive, 0.001))
        self._held = (io, timer, serve, close)
        self.parked[sock] = self
        io.start(self._wake, False)
        timer.start(self._wake, True)
        return True

    def _unpark(self) -> Held | None:
        """Stop waiting and give back the pool slot held while parked; what
        was held, or None if not parked."""
        held = self._held
        if held is None:
            return None
        self._held = None
        for watcher in held[:2]:
            watcher.stop()
            watcher.close()
        self.parked.pop(self.sock, None)
        self.pool.release()  # type: ignore[union-attr]  # parked: there is a pool
        return held

    def _wake(self, expired: bool) -> None:
        """In the hub: bytes (or EOF) arrived, or the keep-alive time ran out."""
        held = self._unpark()
        if held is None:
            return
        _, _, serve, close = held
        if expired:
            close()
        else:  # the slot just given back is taken again at once: spawn never waits
            self.stream.park_after = PARK_AFTER
            self.stream.expect_data = True
            self.pool.spawn(serve)  # type: ignore[union-attr]

    def close(self) -> None:
        """Close a parked connection (the end of a stop)."""
        held = self._unpark()
        if held is not None:
            _, _, _, close = held
            close()
