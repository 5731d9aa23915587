# lb/server.py -- one balancer worker: listener, proxy, health, admin, signals.
#
# Strategy: a gevent StreamServer with ``spawn=GreenletPool(max_connections)`` runs
# the proxy handler (a full pool stops accepting; the backlog holds the
# rest).  Signals are queued onto events and dispatched by this module only:
# SIGTERM/SIGINT drain (stop accepting, close idle clients, let in-flight
# requests finish within the grace period), SIGHUP asks the entry module to
# re-read the configuration and swaps in the new backend set -- states and
# pools of backends that stay are kept, so no connection is dropped.  With
# --certfile the listener speaks TLS: each accepted connection is handshaken
# in its own handler greenlet (gservers.net.tls.accept, under
# --handshake-timeout) and then proxied exactly as a plain one; a reload
# re-reads the certificate and key, for the handshakes that follow.  Every
# control.TICK seconds a greenlet writes the worker's gauges into its shared
# block (lb.tally) and applies the operator's table (lb.control) if another
# worker changed it.  The run directory holding both is the supervisor's
# (``run_dir``) or, for a lone worker, its own, removed when it stops.
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

import gevent
from gevent import socket as gsocket
from gevent.event import Event

from gservers.net.greenpool import GreenletPool
from gservers.net.listen import bind, bound_port
from gservers.net.server import Server, tune_gevent
from gservers.net.tls import accept, server_context
from gservers.settings import ConfigError
from lb.admin import serve_admin
from lb.backends import Backends
from lb.config import LBConfig
from lb.control import TICK, Control
from lb.health import HealthChecker
from lb.proxy import SERVER, Proxy
from lb.stats import Snapshot, snapshot
from lb.tally import Tally, run_directory

log = logging.getLogger("lb")


def open_access_log(where: str) -> TextIO | None:
    """The access log stream for ``where`` (a path, ``-`` or ``off``)."""
    if where == "off":
        return None
    if where == "-":
        return sys.stderr
    return open(where, "a", buffering=1, encoding="utf-8")


class Worker:
    """Everything one balancer process runs."""

    def __init__(self, config: LBConfig, reload: Callable[[], LBConfig] | None = None,
                 reuse_port: bool = False, ready: Callable[[], None] | None = None,
                 run_dir: str | None = None, index: int = 0) -> None:
        tune_gevent()
        self.config = config
        self.reload_config = reload
        self.ready = ready
        self.listener = bind(config.listen.host, config.listen.port, config.backlog,
                             gsocket.socket, reuse_port)
        self.admin_listener = None
        if config.admin is not None:
            self.admin_listener = bind(config.admin.host, config.admin.port, 128,
                                       gsocket.socket, reuse_port)
        self.pool = GreenletPool(config.max_connections)
        self.tls = server_context(config.certfile, config.keyfile) if config.certfile else None
        self.own_dir = run_dir is None
        self.run_dir = run_dir or run_directory()
        self.tally = Tally(self.run_dir, index)
        self.control = Control(self.run_dir)
        backends = Backends(config, self.tally)
        self.control.poll()
        backends.apply(self.control.table)  # a restarted worker takes the states on
        self.proxy = Proxy(config, backends, self.pool, self.tally.worker,
                           open_access_log(config.access_log))
        # Parked (idle, greenlet-less) connections hold a pool slot and stay
        # open when their handler returns; see lb.proxy.Proxy.
        self.server = Server(self.listener,
                             self.proxy.handle if self.tls is None else self._handle_tls,
                             self.pool, keep_open=self.proxy.parked.__contains__)
        self.health = HealthChecker(lambda: self.proxy.backends, config.health_interval,
                                    config.health_timeout, config.health_path,
                                    config.rise, config.fall)
        self._stop = Event()
        self._hup = Event()

    def _handle_tls(self, sock: Any, address: Any) -> None:
        """The handler on a TLS listener: handshake, then proxy."""
        assert self.tls is not None
        conn = accept(sock, self.tls, self.config.handshake_timeout, address, SERVER)
        if conn is not None:
            self.proxy.handle(conn, address)

    def publish(self) -> None:
        """Write this worker's gauges into its shared block."""
        block, proxy = self.tally.worker, self.proxy
        block.parked, block.greenlets = len(proxy.parked), len(proxy.pool)
        block.draining = proxy.idle.draining
        for state in proxy.backends.states:
            state.publish()

    def snapshot(self) -> Snapshot:
        """The balancer's figures, all workers' (for the admin listener);
        an operator's change made through another worker shows at once."""
        self.refresh()
        return snapshot(self.run_dir, self.proxy.backends)

    def set_backend(self, name: str, change: dict[str, Any]) -> dict[str, Any] | None:
        """Change backend ``name``'s runtime state or weight, for every worker."""
        if self.proxy.backends.by_name(name) is None:
            return None
        self.proxy.backends.apply(self.control.change(name, change))
        return next(b for b in self.snapshot().view["backends"] if b["name"] == name)

    def refresh(self) -> None:
        """Take up an operator's change made through another worker, then
        write the gauges."""
        table = self.control.poll()
        if table is not None:
            self.proxy.backends.apply(table)
        self.publish()

    def _ticks(self) -> None:
        while True:
            gevent.sleep(TICK)
            self.refresh()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the exit code."""
        gevent.signal_handler(signal.SIGTERM, self._stop.set)
        gevent.signal_handler(signal.SIGINT, self._stop.set)
        gevent.signal_handler(signal.SIGHUP, self._hup.set)
        self.server.start()
        self.health.start()
        admin = (serve_admin(self.admin_listener, self, self.config.admin_token)
                 if self.admin_listener else None)
        cfg = self.config
        # Under a supervisor only the master says "listening on", once all are up.
        log.info("lb %s %s://%s:%d (pid %d, policy %s, backends %s%s)",
                 "worker serving" if self.ready else "listening on",
                 "http" if self.tls is None else "https", cfg.listen.host,
                 bound_port(self.listener), os.getpid(), cfg.policy,
                 " ".join(s.name for s in self.proxy.backends.states),
                 f", admin http://{cfg.admin.host}:{bound_port(self.admin_listener)}"
                 if admin else "")
        if self.ready:
            self.ready()
        helpers = [gevent.spawn(self._reloads), gevent.spawn(self._ticks)]
        self._stop.wait()
        for helper in helpers:
            helper.kill(block=False)
        self._drain()
        if admin is not None:
            admin.stop(timeout=1)
        if self.own_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return 0

    def _reloads(self) -> None:
        while True:
            self._hup.wait()
            self._hup.clear()
            self.reload()

    def reload(self) -> None:
        """Re-read the configuration; swap the backend set and settings."""
        if self.reload_config is None:
            log.warning("SIGHUP: no configuration file to re-read")
            return
        try:
            new = self.reload_config()
            tls = self.tls
            if tls is not None and new.certfile:  # re-read: a renewed certificate counts
                tls = server_context(new.certfile, new.keyfile)
            backends = Backends(new, self.tally, reuse=self.proxy.backends.states)
            self.control.poll()
            backends.apply(self.control.table)  # runtime states outlive a reload
        except (ConfigError, ValueError) as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc)
            return
        old = self.proxy.backends
        if (new.listen, new.admin, new.admin_token, new.workers, new.certfile is None) != (
                self.config.listen, self.config.admin, self.config.admin_token,
                self.config.workers, self.tls is None):
            log.warning("SIGHUP: listen, admin, admin token, workers and HTTP/HTTPS changes "
                        "need a restart")
        self.tls = tls
        self.config = new
        self.proxy.config = new
        self.proxy.backends = backends
        old.close(keep=backends.states)
        log.info("SIGHUP: reloaded; policy %s, backends %s", new.policy,
                 " ".join(s.name for s in backends.states))

    def _drain(self) -> None:
        self.server.drain(self.config.grace, self.proxy.idle, log)
        self.proxy.close_parked()
        self.health.stop()
        self.proxy.backends.close()
        log.info("stopped")
