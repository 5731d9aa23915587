# gservers/backend/async_model.py -- the asynchronous model: greenlets on one thread.
#
# Strategy: the shared server base (gservers.net.server) with a pool of
# ``max_connections`` reused greenlets; each accepted connection runs the
# shared blocking connection loop on a GreenSocket.  A full pool stops
# accepting and the kernel backlog holds the rest.  Nothing is
# monkey-patched: the App is handed ``gevent.sleep`` for /work/wait, so a
# waiting request yields to the other connections.  SIGTERM/SIGINT drain:
# stop accepting, wake idle keep-alive connections, wait (up to the grace
# period) for the pool to empty.
from __future__ import annotations

import logging
import os
import signal
from functools import partial

import gevent
from gevent import socket as gsocket
from gevent.event import Event

from gservers.backend.app import App
from gservers.backend.config import BackendConfig
from gservers.backend.connection import serve
from gservers.net.greenpool import GreenletPool
from gservers.net.idle import IdleConnections
from gservers.net.listen import bind, bound_port
from gservers.net.server import Server, tune_gevent

log = logging.getLogger("gservers.async")


def run(config: BackendConfig) -> int:
    """Serve until SIGTERM or SIGINT; return the exit code."""
    tune_gevent()
    stop = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # before the port opens
        gevent.signal_handler(signum, stop.set)
    listener = bind(config.host, config.port, config.backlog, gsocket.socket)
    idle = IdleConnections()
    pool = GreenletPool(config.max_connections)
    app = App(config.root, gevent.sleep, config.cache_max_age, config.file_cache_bytes)
    handler = partial(serve, app=app, config=config, idle=idle)
    server = Server(listener, handler, pool)
    server.start()
    log.info("async backend listening on http://%s:%d (pid %d, pool %d)",
             config.host, bound_port(listener), os.getpid(), config.max_connections)
    stop.wait()
    server.drain(config.grace, idle, log)
    log.info("stopped")
    return 0

