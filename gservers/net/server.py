# gservers/net/server.py -- the server base every gevent server here runs on.
#
# Strategy: gevent's StreamServer with a GreenletPool as its spawn: each
# accepted connection runs a plain blocking handler in a reused greenlet on
# a GreenSocket; a full pool stops accepting and the kernel backlog holds the
# rest.  On top of gevent's lifecycle this adds what every server of ours
# needs: riding out a shortage of descriptors without a traceback per accept,
# the graceful drain, and the process-wide gevent settings applied at start.
from __future__ import annotations

import errno
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.server import StreamServer

from gservers.net.greenpool import GreenletPool
from gservers.net.greensock import wrap_accepted
from gservers.net.idle import IDLE_LINGER, IdleConnections

#: Net allocations between generation-0 garbage collections (Python's default: 700).
GC_THRESHOLD = 20000


class Server(StreamServer):
    """StreamServer that hands handlers a GreenSocket and rides out running
    out of file descriptors.

    gevent would print a traceback for every failed accept; here a failed
    accept for want of descriptors (or memory) is one warning a few seconds
    at most, and accepting pauses briefly -- no busy loop, no crash -- and
    resumes by itself once connections close."""

    PAUSE = 0.1
    _warned = 0.0

    def __init__(self, listener: Any, handle: Callable[[Any, Any], Any], pool: GreenletPool,
                 keep_open: Callable[[Any], bool] | None = None,
                 backlog: int | None = None) -> None:
        """Serve ``listener`` (a listening socket, or an address to bind
        with ``backlog``) with ``handle(sock, address)`` in greenlets of
        ``pool``.  ``keep_open``: a predicate; a socket for which it is true
        stays open when its handler returns (a server that holds idle
        connections without a greenlet closes them itself)."""
        super().__init__(listener, handle, backlog=backlog, spawn=pool)
        self.pool: GreenletPool = pool
        self.keep_open = keep_open

    def do_close(self, sock: Any, *args: Any) -> None:
        if self.keep_open is None or not self.keep_open(sock):
            sock.close()

    def do_read(self):  # type: ignore[no-untyped-def]
        try:
            fd, address = self.socket._accept()
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            now = time.monotonic()
            if now - self._warned > 5:
                self._warned = now
                logging.getLogger("gservers.server").warning(
                    "cannot accept: %s; pausing accepts", exc.strerror)
            self.stop_accepting()
            gevent.get_hub().loop.timer(self.PAUSE).start(self._resume)
            return None
        # Our own socket, not gevent's: see gservers.greensock.
        return wrap_accepted(fd, self.socket.family), address

    def _resume(self) -> None:
        if self.started and not self.closed:
            self.start_accepting()

    def drain(self, grace: float, idle: IdleConnections, log: logging.Logger) -> None:
        """A graceful stop: stop accepting, give idle keep-alive connections
        a moment to send one more request (then wake them to close), let
        busy ones finish within ``grace`` seconds, then kill what is left."""
        log.info("stopping: draining %d connection(s), grace %.1fs", len(self.pool), grace)
        self.close()
        deadline = time.monotonic() + grace
        idle.drain(gevent.sleep, min(IDLE_LINGER, grace / 2))
        if not self.pool.join(timeout=max(0.0, deadline - time.monotonic())):
            log.warning("grace period over; closing %d connection(s)", len(self.pool))
            self.pool.kill(block=True, timeout=1)


def tune_gevent() -> None:
    """Process-wide settings for a gevent server, applied at start (never on
    import): no spawn-tree bookkeeping (a stack capture per greenlet, i.e. per
    connection, that nothing here reads), and rarer cyclic garbage
    collection.  A request allocates a hundred or so objects, nearly all
    freed at once by reference counting, yet each one counts towards the
    collector's generation-0 threshold (700), so a collection ran every few
    requests; what was loaded at start is frozen out of the collections."""
    gevent.config.track_greenlet_tree = False
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
