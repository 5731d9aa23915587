# lb/health.py -- active health checks.
#
# Strategy: one greenlet per balancer walks the backends every
# ``health_interval`` and checks each in its own greenlet: a fresh
# connection, ``GET <health_path>``, and a 2xx status line within
# ``health_timeout``.  ``rise`` passes in a row bring a down backend back,
# ``fall`` failures in a row take it down; the first check after start counts
# as enough either way, so a backend that is not there at start is out within
# one check.  Idle pooled connections past their timeout are reaped on the
# same tick.  A check connects as requests do (state.pool.connect), so an
# https:// backend is checked over TLS, its certificate verified; why a
# check failed is said when the backend goes down.  A backend an operator put
# in maintenance (lb.control) is not checked; its first check after it comes
# back counts as enough either way, as at start.
from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
from gevent.pool import Group

from lb.backends import Backends, BackendState
from lb.upstream import ConnectError

log = logging.getLogger("lb.health")


def check_once(state: BackendState, path: str, timeout: float) -> str | None:
    """One health check of ``state``: None when it answers 2xx in time, else
    why not."""
    try:
        with gevent.Timeout(timeout, False):
            sock = state.pool.connect()
            try:
                sock.settimeout(timeout)
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                             b"User-Agent: gservers-lb-health\r\n\r\n"
                             % (path.encode(), state.name.encode()))
                data = b""
                while b"\r\n" not in data and len(data) < 4096:
                    more = sock.recv(4096)
                    if not more:
                        break
                    data += more
                parts = data.split(b" ", 2)
                if (len(parts) >= 2 and parts[0].startswith(b"HTTP/1.")
                        and parts[1][:1] == b"2" and len(parts[1]) == 3):
                    return None
                return f"answered {data[:40]!r}" if data else "closed without answering"
            finally:
                sock.close()
        return f"no answer within {timeout:g}s"  # the timeout fired
    except ConnectError as exc:
        return f"connect: {exc}"
    except OSError as exc:  # TimeoutError included
        return exc.strerror or str(exc) or type(exc).__name__


class HealthChecker:
    """Runs the checks over whatever ``get_backends()`` returns now."""

    def __init__(self, get_backends: Callable[[], Backends], interval: float, timeout: float,
                 path: str, rise: int, fall: int) -> None:
        self.get_backends = get_backends
        self.interval = interval
        self.timeout = min(timeout, interval)
        self.path = path
        self.rise = rise
        self.fall = fall
        self._passes: dict[int, int] = {}
        self._fails: dict[int, int] = {}
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        while True:
            backends = self.get_backends()
            group = Group()
            for state in backends.states:
                if state.admin_state == "maint":
                    self._passes.pop(id(state), None)
                    continue
                group.spawn(self._check, backends, state)
                state.pool.reap()
            group.join()
            gevent.sleep(self.interval)

    def _check(self, backends: Backends, state: BackendState) -> None:
        why = check_once(state, self.path, self.timeout)
        ok = why is None
        key = id(state)
        first = key not in self._passes
        if ok:
            self._passes[key] = self._passes.get(key, 0) + 1
            self._fails[key] = 0
            if not state.healthy and (first or self._passes[key] >= self.rise):
                state.healthy = True
                state.consecutive_failures = 0
                state.ejected_until = 0.0
                log.warning("backend %s is up", state.name)
                backends.invalidate()
        else:
            self._fails[key] = self._fails.get(key, 0) + 1
            self._passes[key] = 0
            if state.healthy and (first or self._fails[key] >= self.fall):
                state.healthy = False
                log.warning("backend %s is down (health check failed: %s)", state.name, why)
                backends.invalidate()
