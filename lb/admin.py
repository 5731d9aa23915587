# lb/admin.py -- the admin listener: the status page, /stats, /metrics and /backends.
#
# Strategy: a separate small gevent WSGI server (loopback by default, never
# public without a token) in each worker.  Whichever worker the kernel hands
# a request to answers for the balancer as a whole: figures come from every
# worker's shared block (lb.stats), and a change to a backend goes through
# the shared table (lb.control) that every worker applies within a second.
# JSON in, JSON out; errors are {"error": reason} with a 4xx.  With a token
# every request must carry ``Authorization: Bearer TOKEN`` (compared in
# constant time); without one, the page's 401 is the page itself, which
# then asks for the token and sends it on its own requests.
from __future__ import annotations

import hmac
import importlib.resources
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, generate_latest

from lb.control import parse_change
from lb.stats import Snapshot, collect

log = logging.getLogger("lb.admin")

#: The largest POST body read.
MAX_BODY = 65536
_JSON = "application/json"
_METRICS = "text/plain; version=0.0.4; charset=utf-8"


class Operations(Protocol):
    """What the admin listener asks of its worker (lb.server.Worker)."""

    def snapshot(self) -> Snapshot:
        """The combined figures now."""

    def set_backend(self, name: str, change: dict[str, Any]) -> dict[str, Any] | None:
        """Apply ``change`` to backend ``name`` everywhere; its new JSON, or
        None when there is no such backend."""


def _page() -> bytes:
    try:
        return (importlib.resources.files("lb") / "status.html").read_bytes()
    except OSError:
        return b"<!doctype html><p>the status page is not installed; see /stats</p>"


def authorized(environ: dict, token: str | None) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (always,
    when no token is set), compared in constant time."""
    if token is None:
        return True
    scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class _Answer(Exception):
    """An answer other than 200 (or a 200 decided early)."""

    def __init__(self, status: str, body: Any, ctype: str = _JSON,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status)
        self.status, self.body, self.ctype, self.headers = status, body, ctype, headers


def _error(status: str, reason: str, *headers: tuple[str, str]) -> _Answer:
    return _Answer(status, {"error": reason}, _JSON, headers)


def _body(environ: dict) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _error("400 Bad Request", "Content-Length is not a number") from None
    if length > MAX_BODY:
        raise _error("413 Content Too Large", f"the body is larger than {MAX_BODY} bytes")
    return environ["wsgi.input"].read(length) if length else b""


class _Collector:
    """prometheus_client's view of a fresh snapshot per scrape."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def collect(self) -> Iterable[Any]:
        return collect(self.ops.snapshot())


def make_app(ops: Operations, token: str | None = None) -> Callable:
    """The admin WSGI application over ``ops``; ``token``: the Bearer token
    every request must carry (None: none needed)."""
    page = _page()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(ops))

    def route(method: str, path: str, environ: dict) -> _Answer:
        if path == "/" and method in ("GET", "HEAD"):
            return _Answer("200 OK", page, "text/html; charset=utf-8")
        if path == "/stats" and method in ("GET", "HEAD"):
            return _Answer("200 OK", ops.snapshot().view)
        if path == "/metrics" and method in ("GET", "HEAD"):
            return _Answer("200 OK", generate_latest(registry), _METRICS)
        if path == "/backends" and method in ("GET", "HEAD"):
            return _Answer("200 OK", {"backends": ops.snapshot().view["backends"]})
        if path.startswith("/backends/"):
            return _backend(method, path[len("/backends/"):], environ)
        if path in ("/", "/stats", "/metrics", "/backends"):
            raise _error("405 Method Not Allowed", f"{method} is not allowed on {path}",
                         ("Allow", "GET, HEAD"))
        raise _error("404 Not Found", f"no {path} here: try /, /stats, /metrics or /backends")

    def _backend(method: str, name: str, environ: dict) -> _Answer:
        if method in ("GET", "HEAD"):
            found = [b for b in ops.snapshot().view["backends"] if b["name"] == name]
            if not found:
                raise _error("404 Not Found", f"no backend {name}")
            return _Answer("200 OK", found[0])
        if method != "POST":
            raise _error("405 Method Not Allowed", f"{method} is not allowed on a backend",
                         ("Allow", "GET, HEAD, POST"))
        try:
            change = parse_change(_body(environ))
        except ValueError as exc:
            raise _error("400 Bad Request", str(exc)) from None
        entry = ops.set_backend(name, change)
        if entry is None:
            raise _error("404 Not Found", f"no backend {name}")
        log.info("admin: %s set backend %s to %s", environ.get("REMOTE_ADDR", "?"), name,
                 json.dumps(change, sort_keys=True))
        return _Answer("200 OK", entry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        try:
            if not authorized(environ, token):
                challenge = ("WWW-Authenticate", 'Bearer realm="gservers-lb"')
                if path == "/" and method in ("GET", "HEAD"):  # the page asks for the token
                    raise _Answer("401 Unauthorized", page, "text/html; charset=utf-8",
                                  (challenge,))
                raise _error("401 Unauthorized", "a valid Authorization: Bearer token is "
                             "required", challenge)
            answer = route(method, path, environ)
        except _Answer as exc:
            answer = exc
        body = answer.body
        if not isinstance(body, bytes):
            body = json.dumps(body, indent=2).encode() + b"\n"
        start_response(answer.status, [("Content-Type", answer.ctype),
                                       ("Content-Length", str(len(body))),
                                       ("Cache-Control", "no-store"), *answer.headers])
        return [body] if method != "HEAD" else [b""]

    return app


def serve_admin(listener: Any, ops: Operations, token: str | None = None) -> WSGIServer:
    """Start the admin server on an already bound ``listener``."""
    server = WSGIServer(listener, make_app(ops, token), log=None, error_log=None)
    server.start()
    return server
