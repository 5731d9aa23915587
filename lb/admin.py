# lb/admin.py -- the admin listener: /stats (JSON) and /metrics (Prometheus).
#
# Strategy: a separate small gevent WSGI server (loopback by default, never
# public unless asked) that reads the live state on each request: nothing is
# counted twice, the hot path only bumps plain integers.  /metrics is
# rendered by prometheus_client from a collector over the same figures.
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from lb.backends import Backends
from lb.proxy import Proxy

STATES = ("up", "ejected", "down")


def snapshot(proxy: Proxy, backends: Backends) -> dict[str, Any]:
    """Everything /stats shows."""
    stats = proxy.stats
    return {
        "pid": os.getpid(),
        "uptime_s": round(time.time() - stats.started, 3),
        "policy": proxy.config.policy,
        "totals": {
            "requests": stats.requests,
            "responses": {str(k): v for k, v in sorted(stats.responses.items())},
            "retries": stats.retries,
            "client_connections": stats.client_connections,
            "tunnels": stats.tunnels_open,
            "tunnels_total": stats.tunnels,
            # Read here, when asked, not counted per request: parked client
            # connections (no greenlet), and the greenlets running calls now.
            "parked": len(proxy.parked),
            "greenlets": len(proxy.pool),
            "draining": proxy.idle.draining,
        },
        "backends": [{
            "name": s.name,
            "weight": s.weight,
            "state": s.state,
            "in_flight": s.in_flight,
            "requests": s.requests,
            "failures": s.failures,
            "retries": s.retries,
            "ejections": s.ejections,
            "pool": {"idle": s.pool.idle, "connects": s.pool.connects, "reuses": s.pool.reuses},
            "latency_ms": s.percentiles(),
        } for s in backends.states],
    }


class _Collector:
    def __init__(self, view: Callable[[], dict[str, Any]]) -> None:
        self.view = view

    def collect(self) -> Iterable[Any]:
        snap = self.view()
        totals = snap["totals"]
        yield CounterMetricFamily("gservers_lb_requests", "client requests received",
                                  value=totals["requests"])
        responses = CounterMetricFamily("gservers_lb_responses", "responses sent, by status",
                                        labels=["code"])
        for code, n in totals["responses"].items():
            responses.add_metric([code], n)
        yield responses
        yield CounterMetricFamily("gservers_lb_retries", "requests retried on another backend",
                                  value=totals["retries"])
        yield GaugeMetricFamily("gservers_lb_client_connections", "open client connections",
                                value=totals["client_connections"])
        yield GaugeMetricFamily("gservers_lb_parked_connections",
                                "idle client connections parked without a greenlet",
                                value=totals["parked"])
        yield GaugeMetricFamily("gservers_lb_greenlets", "greenlets of the worker's pool in use",
                                value=totals["greenlets"])
        yield GaugeMetricFamily("gservers_lb_open_tunnels",
                                "upgraded connections (WebSocket...) open now",
                                value=totals["tunnels"])
        yield CounterMetricFamily("gservers_lb_tunnels", "upgraded connections, in all",
                                  value=totals["tunnels_total"])
        per = {
            "requests": CounterMetricFamily("gservers_lb_backend_requests",
                                            "requests sent to the backend", labels=["backend"]),
            "failures": CounterMetricFamily("gservers_lb_backend_failures",
                                            "failed requests at the backend", labels=["backend"]),
            "in_flight": GaugeMetricFamily("gservers_lb_backend_in_flight",
                                           "requests in flight", labels=["backend"]),
        }
        up = GaugeMetricFamily("gservers_lb_backend_state", "1 for the backend's state",
                               labels=["backend", "state"])
        latency = GaugeMetricFamily("gservers_lb_backend_latency_seconds",
                                    "recent upstream latency quantiles",
                                    labels=["backend", "quantile"])
        for b in snap["backends"]:
            for key, family in per.items():
                family.add_metric([b["name"]], b[key])
            for state in STATES:
                up.add_metric([b["name"], state], 1.0 if b["state"] == state else 0.0)
            for q, value in b["latency_ms"].items():
                if value is not None:
                    latency.add_metric([b["name"], "0." + q[1:]], value / 1000)
        yield from per.values()
        yield up
        yield latency


def make_app(view: Callable[[], dict[str, Any]]) -> Callable:
    """The admin WSGI application over ``view()`` (a fresh snapshot per call)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(view))

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b"405 method not allowed\n"]
        if path == "/stats":
            body = json.dumps(view(), indent=2).encode() + b"\n"
            ctype = "application/json"
        elif path == "/metrics":
            body = generate_latest(registry)
            ctype = "text/plain; version=0.0.4; charset=utf-8"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"404 not found: try /stats or /metrics\n"]
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve_admin(listener: Any, view: Callable[[], dict[str, Any]]) -> WSGIServer:
    """Start the admin server on an already bound ``listener``."""
    server = WSGIServer(listener, make_app(view), log=None, error_log=None)
    server.start()
    return server
