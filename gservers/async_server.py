# gservers/async_server.py -- the asynchronous model: greenlets on one thread.
#
# Strategy: gevent's StreamServer with ``spawn=GreenletPool(max_connections)``: each
# accepted connection runs the shared blocking handler in a greenlet; a full
# pool stops accepting and the kernel backlog holds the rest.  The sockets are
# gevent's own, so nothing is monkey-patched.  SIGTERM/SIGINT close the
# listener, wake idle keep-alive connections, and wait (up to the grace
# period) for the pool to empty.
from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import gevent
from gevent import socket as gsocket
from gevent.event import Event
from gevent.server import StreamServer

from gservers.app import App
from gservers.config import BackendConfig
from gservers.connection import IDLE_LINGER, Tracker, serve
from gservers.greenpool import GreenletPool
from gservers.greensock import wrap_accepted
from gservers.netutil import bind, bound_port

log = logging.getLogger("gservers.async")

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
    #: A predicate: sockets for which it is true stay open when their handler
    #: returns (the balancer parks idle connections without a greenlet).
    keep_open: Callable[[Any], bool] | None = None

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


def run(config: BackendConfig) -> int:
    """Serve until SIGTERM or SIGINT; return the exit code."""
    tune_gevent()
    stop = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # before the port opens
        gevent.signal_handler(signum, stop.set)
    listener = bind(config.host, config.port, config.backlog, gsocket.socket)
    tracker = Tracker()
    pool = GreenletPool(config.max_connections)
    handler = partial(serve, app=App(config.root), config=config, tracker=tracker)
    server = Server(listener, handler, spawn=pool)
    server.start()
    log.info("async backend listening on http://%s:%d (pid %d, pool %d)",
             config.host, bound_port(listener), os.getpid(), config.max_connections)
    stop.wait()
    log.info("stopping: draining %d connection(s), grace %.1fs", len(pool), config.grace)
    server.close()
    deadline = time.monotonic() + config.grace
    tracker.drain(gevent.sleep, min(IDLE_LINGER, config.grace / 2))
    if not pool.join(timeout=max(0.0, deadline - time.monotonic())):
        log.warning("grace period over; closing %d connection(s)", len(pool))
        pool.kill(block=True, timeout=1)
    log.info("stopped")
    return 0

