# lb/parking.py -- idle client connections held without a greenlet.
#
# Strategy: a greenlet blocked in recv costs about 9 KB; a balancer holding
# thousands of idle keep-alive clients spends most of its memory on them.  A
# connection waiting for a request -- one that has sent nothing yet at once,
# one between requests after PARK_AFTER seconds, so busy keep-alive traffic
# never pays for it -- instead keeps an I/O watcher and a keep-alive timer
# (about 2 KB in all) and a slot of the server's pool, so --max-connections
# still bounds active plus parked connections.  When bytes (or EOF) arrive
# it gets a greenlet again from the same pool; when the timer fires it is
# closed.  The proxy's connection class mixes this in.
from __future__ import annotations

from typing import Any

from gevent import get_hub

from gservers.net.stream import readable

#: Seconds a client connection waits for its next request in a greenlet before
#: it is parked (parking costs a greenlet and two watchers per wake-up).
PARK_AFTER = 1.0


class Parking:
    """Parking for a client connection; the host class provides ``proxy``
    (with ``pool`` and ``parked``), ``sock``, ``stream``, ``run()`` and
    ``_close()``."""

    proxy: Any
    sock: Any
    stream: Any
    _watchers: tuple[Any, Any] | None = None  #: (io, timer) while parked

    def _park(self, keepalive: float) -> bool:
        """Wait for the next request, up to ``keepalive`` seconds, without a
        greenlet; False if that cannot be done now."""
        proxy, sock = self.proxy, self.sock
        if proxy.pool is None or readable(sock):
            return False
        if not proxy.pool.hold():
            return False
        if not self.stream.go_idle():
            proxy.pool.release()
            return False
        loop = get_hub().loop
        io, timer = loop.io(sock.fileno(), 1), loop.timer(max(keepalive, 0.001))
        self._watchers = (io, timer)
        proxy.parked[sock] = self
        io.start(self._wake, False)
        timer.start(self._wake, True)
        return True

    def _unpark(self) -> None:
        """Stop waiting and give back the pool slot held while parked."""
        if self._watchers is not None:
            for watcher in self._watchers:
                watcher.stop()
                watcher.close()
            self._watchers = None
            self.proxy.parked.pop(self.sock, None)
            self.proxy.pool.release()

    def _wake(self, expired: bool) -> None:
        """In the hub: bytes (or EOF) arrived, or the keep-alive time ran out."""
        self._unpark()
        if expired:
            self._close()
        else:  # the slot just given back is taken again at once: spawn never waits
            self.stream.park_after = PARK_AFTER
            self.stream.expect_data = True
            self.proxy.pool.spawn(self.run)

    def unpark_and_close(self) -> None:
        """Close a parked connection (the end of a stop)."""
        self._unpark()
        self._close()
