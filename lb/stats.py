# lb/stats.py -- the balancer as a whole: every worker's figures added up.
#
# Strategy: read every worker's shared block (lb.tally) at the moment of
# asking and combine: counters are summed over all workers, the dead ones'
# included (a restarted worker does not take its counts with it); gauges
# (connections, in flight, idle pooled connections) over the living ones;
# a backend's health is the worst any living worker sees; latency
# quantiles come from the summed histogram.  The answering worker's
# configuration names the backends and its copy of the operator's table
# (lb.control) gives their runtime state and weight.  ``Snapshot.view`` is
# what /stats and /backends show; ``collect`` turns the same snapshot into
# Prometheus families, latency as a histogram that sums across scrapes and
# processes as Prometheus expects.
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from lb.backends import Backends, BackendState
from lb.tally import BOUNDS, FIRST_CODE, HEALTH, BackendBlock, WorkerFigures, quantiles, read_all

#: Every state /stats and /metrics may show for a backend.
STATES = ("up", "ejected", "down", "drain", "maint")
_COUNTERS = ("requests", "failures", "retries", "ejections", "connects", "reuses")


@dataclass
class Snapshot:
    """The combined figures: the JSON view, and each backend's histogram."""

    view: dict[str, Any]
    histograms: dict[str, tuple[list[int], float]] = field(default_factory=dict)


def _backend(state: BackendState, blocks: list[tuple[BackendBlock, bool]]
             ) -> tuple[dict[str, Any], list[int], float]:
    sums = {key: sum(getattr(b, key) for b, _ in blocks) for key in _COUNTERS}
    living = [b for b, alive in blocks if alive]
    health = HEALTH[max((b.health for b in living), default=HEALTH.index(state.health))]
    buckets = [sum(b.buckets[i] for b, _ in blocks) for i in range(len(BOUNDS) + 1)]
    p50, p90, p99 = quantiles(buckets, (0.5, 0.9, 0.99))
    entry = {
        "name": state.name,
        "state": state.admin_state if state.admin_state != "ready" else health,
        "admin_state": state.admin_state,
        "health": health,
        "weight": state.weight,
        "configured_weight": state.address.weight,
        "in_flight": sum(b.in_flight for b in living),
        "requests": sums["requests"],
        "failures": sums["failures"],
        "retries": sums["retries"],
        "ejections": sums["ejections"],
        "pool": {"idle": sum(b.idle for b in living), "connects": sums["connects"],
                 "reuses": sums["reuses"]},
        "latency_ms": {k: None if v is None else round(v * 1000, 3)
                       for k, v in (("p50", p50), ("p90", p90), ("p99", p99))},
    }
    return entry, buckets, sum(b.latency_sum for b, _ in blocks)


def _worker(f: WorkerFigures, now: float) -> dict[str, Any]:
    w = f.worker
    return {
        "index": w.index, "pid": w.pid, "alive": f.alive,
        "uptime_s": round(now - w.started, 3), "requests": w.requests, "retries": w.retries,
        "client_connections": w.client_connections if f.alive else 0,
        "tunnels": w.tunnels_open if f.alive else 0,
        "parked": w.parked if f.alive else 0, "greenlets": w.greenlets if f.alive else 0,
        "backends": {name: HEALTH[b.health] for name, b in f.backends.items()},
    }


def snapshot(directory: str, backends: Backends) -> Snapshot:
    """Everything /stats shows, summed over the workers whose files are in
    ``directory``, for the backends of ``backends``."""
    figures = list(read_all(directory))
    living = [f for f in figures if f.alive]
    now = time.time()
    responses: dict[str, int] = {}
    for f in figures:
        for i, n in enumerate(f.worker.responses):
            if n:
                code = str(FIRST_CODE + i)
                responses[code] = responses.get(code, 0) + n
    snap = Snapshot({
        "pid": os.getpid(),
        "uptime_s": round(now - min((f.worker.started for f in figures), default=now), 3),
        "policy": backends.policy_name,
        "workers_alive": len(living),
        "totals": {
            "requests": sum(f.worker.requests for f in figures),
            "responses": dict(sorted(responses.items())),
            "retries": sum(f.worker.retries for f in figures),
            "client_connections": sum(f.worker.client_connections for f in living),
            "tunnels": sum(f.worker.tunnels_open for f in living),
            "tunnels_total": sum(f.worker.tunnels for f in figures),
            "parked": sum(f.worker.parked for f in living),
            "greenlets": sum(f.worker.greenlets for f in living),
            "draining": any(f.worker.draining for f in living),
        },
        "backends": [],
        "workers": [_worker(f, now) for f in figures],
    })
    for state in backends.states:
        blocks = [(f.backends[state.name], f.alive) for f in figures if state.name in f.backends]
        entry, buckets, total = _backend(state, blocks)
        snap.view["backends"].append(entry)
        snap.histograms[state.name] = (buckets, total)
    return snap


def _cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    out, running = [], 0
    for bound, n in zip((*map(str, BOUNDS), "+Inf"), buckets, strict=True):
        running += n
        out.append((bound, running))
    return out


def collect(snap: Snapshot) -> Iterable[Any]:
    """The Prometheus families of one snapshot."""
    view, totals = snap.view, snap.view["totals"]
    yield CounterMetricFamily("gservers_lb_requests", "client requests received",
                              value=totals["requests"])
    responses = CounterMetricFamily("gservers_lb_responses", "responses sent, by status",
                                    labels=["code"])
    for code, n in totals["responses"].items():
        responses.add_metric([code], n)
    yield responses
    yield CounterMetricFamily("gservers_lb_retries", "requests retried on another backend",
                              value=totals["retries"])
    yield CounterMetricFamily("gservers_lb_tunnels", "upgraded connections, in all",
                              value=totals["tunnels_total"])
    for key, name, doc in (
            ("client_connections", "client_connections", "open client connections"),
            ("parked", "parked_connections", "idle client connections parked without a greenlet"),
            ("greenlets", "greenlets", "greenlets of the workers' pools in use"),
            ("tunnels", "open_tunnels", "upgraded connections (WebSocket...) open now")):
        yield GaugeMetricFamily(f"gservers_lb_{name}", doc, value=totals[key])
    yield GaugeMetricFamily("gservers_lb_workers", "worker processes alive",
                            value=view["workers_alive"])
    yield from _backend_families(snap)


def _backend_families(snap: Snapshot) -> Iterable[Any]:
    per: dict[str, Any] = {
        key: CounterMetricFamily(f"gservers_lb_backend_{key}", doc, labels=["backend"])
        for key, doc in (("requests", "requests sent to the backend"),
                         ("failures", "failed requests at the backend"),
                         ("retries", "requests retried elsewhere after failing here"),
                         ("ejections", "times the backend was ejected"))}
    gauges = {key: GaugeMetricFamily(f"gservers_lb_backend_{key}", doc, labels=["backend"])
              for key, doc in (("in_flight", "requests in flight"),
                               ("weight", "the weight the policy uses now"),
                               ("pool_idle", "idle keep-alive connections pooled"))}
    connects = CounterMetricFamily("gservers_lb_backend_connects",
                                   "new connections made to the backend", labels=["backend"])
    state = GaugeMetricFamily("gservers_lb_backend_state", "1 for the backend's state",
                              labels=["backend", "state"])
    latency = HistogramMetricFamily("gservers_lb_backend_latency_seconds",
                                    "upstream latency: request sent to response ended",
                                    labels=["backend"])
    for b in snap.view["backends"]:
        name = b["name"]
        for key, family in per.items():
            family.add_metric([name], b[key])
        gauges["in_flight"].add_metric([name], b["in_flight"])
        gauges["weight"].add_metric([name], b["weight"])
        gauges["pool_idle"].add_metric([name], b["pool"]["idle"])
        connects.add_metric([name], b["pool"]["connects"])
        for s in STATES:
            state.add_metric([name, s], 1.0 if b["state"] == s else 0.0)
        buckets, total = snap.histograms[name]
        latency.add_metric([name], _cumulative(buckets), total)
    yield from per.values()
    yield connects
    yield from gauges.values()
    yield state
    yield latency
