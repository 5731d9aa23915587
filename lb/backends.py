# lb/backends.py -- what the balancer knows of each backend.
#
# Strategy: one BackendState per configured backend holds everything the
# policies, the health checks, the proxy and /stats look at: its resolved
# address (looked up once, never per connect), its keep-alive pool, requests
# in flight, the active health verdict, passive ejection after consecutive
# failures, and counters.  ``Backends`` keeps the list of usable backends
# cached, rebuilt only when a verdict changes or an ejection runs out, so the
# per-request choice costs one policy call.  Counters live in this worker's
# shared-memory block for the backend (lb.tally), so every worker's admin
# listener can add them up.  An operator's runtime state (ready, drain,
# maint) and weight come from lb.control; a drained or weight-0 backend is
# left out of the usable list, so no policy ever sees it.  Everything here
# runs in one thread of greenlets and never blocks.
from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence

from lb.config import Address, LBConfig
from lb.control import STATES as ADMIN_STATES
from lb.policies import Policy, make
from lb.tally import HEALTH, BackendBlock, Tally
from lb.upstream import UpstreamPool, backend_context

log = logging.getLogger("lb.backends")



def resolve(where: Address) -> tuple[int, tuple]:
    """(family, sockaddr) for ``where``, looked up once at start."""
    try:
        info = socket.getaddrinfo(where.host, where.port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ValueError(f"--backend: cannot resolve {where}: {exc.strerror}") from None
    return info[0], info[4]


def _tls(where: Address, config: LBConfig) -> ssl.SSLContext | None:
    """The TLS client context for an https:// backend, None for http."""
    return backend_context(config.backend_ca, not config.backend_insecure) if where.tls else None


class BackendState:
    """One backend: address, pool, health, an operator's state; its counters
    are ``counts``, this worker's shared block for its name."""

    def __init__(self, where: Address, config: LBConfig, counts: BackendBlock) -> None:
        self.address = where
        self.name = str(where)
        self.weight = where.weight  #: the weight policies use (an operator may change it)
        self.admin_state = "ready"
        self.counts = counts
        family, sockaddr = resolve(where)
        self.pool = UpstreamPool(family, sockaddr, config.pool_size, config.pool_idle_timeout,
                                 config.connect_timeout, config.max_per_backend,
                                 config.response_timeout, _tls(where, config), where.host,
                                 counts)
        self.in_flight = 0
        self.healthy = True
        self.ejected_until = 0.0
        self.consecutive_failures = 0

    @property
    def health(self) -> str:
        """up, down (failed its health checks) or ejected (failing requests)."""
        if not self.healthy:
            return "down"
        if self.ejected_until > time.monotonic():
            return "ejected"
        return "up"

    def publish(self) -> None:
        """Write the gauges into the shared block (the counters are live)."""
        counts = self.counts
        counts.in_flight = self.in_flight
        counts.idle = self.pool.idle
        counts.health = HEALTH.index(self.health)


class RetryBudget:
    """Retries allowed: ``ratio`` of requests, plus ``per_second`` a second,
    so that a failing fleet is not hit with a multiple of its load.  Unused
    allowance is kept for up to ``window`` requests' worth, so the burst of
    retries when a busy backend dies (every request in flight at once) fits.
    A ``ratio`` of 0 allows no retry at all."""

    def __init__(self, ratio: float, per_second: float = 10.0, window: int = 10_000) -> None:
        self.ratio = ratio
        self.per_second = per_second if ratio > 0 else 0.0
        self.cap = self.per_second + ratio * window
        self.tokens = self.cap
        self._stamp = time.monotonic()
        self.refused = 0

    def deposit(self) -> None:
        """One request arrived."""
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def withdraw(self) -> bool:
        """Take one retry if the budget allows it."""
        now = time.monotonic()
        self.tokens = min(self.cap, self.tokens + (now - self._stamp) * self.per_second)
        self._stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.refused += 1
        if self.refused == 1 or self.refused % 100 == 0:
            log.warning("retry budget spent: %d retries refused so far", self.refused)
        return False


class Backends:
    """The backend set, its policy and the cached list of usable ones."""

    def __init__(self, config: LBConfig, tally: Tally, reuse: Iterable[BackendState] = ()) -> None:
        known = {(s.address.host, s.address.port): s for s in reuse}
        self.states: list[BackendState] = []
        for where in config.backend:
            state = known.get((where.host, where.port))
            if state is None or state.address != where:  # weight or scheme changed
                state = BackendState(where, config, tally.backend(str(where)))
            elif where.tls:  # a new --backend-ca counts for its new connections
                state.pool.context = _tls(where, config)
            self.states.append(state)
        self.policy_name = config.policy
        self.policy: Policy = make(config.policy, self.states)
        self.eject_failures = config.eject_failures
        self.fail_on_5xx = config.fail_on_5xx
        self.eject_time = config.eject_time
        self._usable: list[BackendState] = list(self.states)
        self._recheck_at = float("inf")

    def invalidate(self) -> None:
        """A verdict changed: rebuild the usable list on the next choice."""
        self._recheck_at = 0.0

    def by_name(self, name: str) -> BackendState | None:
        """The backend called ``name`` (HOST:PORT), if it is in the set."""
        return next((s for s in self.states if s.name == name), None)

    def apply(self, control: Mapping[str, Mapping[str, object]]) -> None:
        """Take the operator's states and weights (lb.control's table, by
        name); backends it does not name are ready at their configured
        weight.  maint closes the idle pooled connections."""
        reweighed = False
        for state in self.states:
            entry = control.get(state.name, {})
            admin = str(entry.get("state", "ready"))
            weight = entry.get("weight", state.address.weight)
            if isinstance(weight, int) and weight != state.weight:
                state.weight = weight
                reweighed = True
            if admin != state.admin_state and admin in ADMIN_STATES:
                log.info("backend %s: %s (was %s)", state.name, admin, state.admin_state)
                state.admin_state = admin
            state.pool.keep_idle = state.admin_state != "maint"
            if not state.pool.keep_idle:
                state.pool.close()
        if reweighed:  # a ring or a schedule is built over the weights
            self.policy = make(self.policy_name, self.states)
        self.invalidate()

    def usable(self) -> Sequence[BackendState]:
        """Backends ready, weighted, up and not ejected, in configuration order."""
        now = time.monotonic()
        if now >= self._recheck_at:
            self._usable = [s for s in self.states if s.healthy and s.ejected_until <= now
                            and s.admin_state == "ready" and s.weight > 0]
            pending = [s.ejected_until for s in self.states if s.healthy and s.ejected_until > now]
            self._recheck_at = min(pending, default=float("inf"))
        return self._usable

    def choose(self, key: str, tried: Sequence[BackendState] = ()) -> BackendState | None:
        """A backend for client ``key`` that was not ``tried`` yet, or None."""
        usable = self.usable()
        if tried:
            usable = [s for s in usable if s not in tried]
        if not usable:
            return None
        return self.policy.pick(usable, key)  # type: ignore[return-value]

    def answered(self, state: BackendState, status: int, latency: float) -> None:
        """``state`` gave a whole response with ``status``: a 5xx counts as its
        failure (unless --no-fail-on-5xx), anything else as a success (a 4xx
        is the client's business)."""
        state.counts.observe(latency)
        if status >= 500 and self.fail_on_5xx:
            self.failed(state, f"answered {status}")
        else:
            state.consecutive_failures = 0

    def failed(self, state: BackendState, why: str) -> None:
        """A request failed at ``state``: count it, eject it if it keeps failing."""
        state.counts.failures += 1
        state.consecutive_failures += 1
        if (state.consecutive_failures >= self.eject_failures
                and state.ejected_until <= time.monotonic()):
            state.ejected_until = time.monotonic() + self.eject_time
            state.counts.ejections += 1
            # After the cool-down one more failure ejects it again at once.
            state.consecutive_failures = self.eject_failures - 1
            log.warning("backend %s ejected for %.1fs after repeated failures (%s)",
                        state.name, self.eject_time, why)
            self.invalidate()

    def close(self, keep: Iterable[BackendState] = ()) -> None:
        """Close the idle pools of backends not in ``keep``."""
        kept = set(map(id, keep))
        for state in self.states:
            if id(state) not in kept:
                state.pool.close()
