# tests/unit/test_admin.py -- the admin listener's WSGI application, without a server.
#
# Strategy: make_app is a function of a small ``ops`` object, so it is driven
# in this process with WSGI environ dicts (through wsgiref's validator, which
# also checks the app keeps to WSGI).  The ops here answer a fixed Snapshot
# built by lb.stats from a real Tally and Backends in a temporary directory,
# and record the changes asked of them.  Covered: the token (401 with a
# challenge, the page as its own 401, a constant-time comparison, watched
# through a spy on hmac.compare_digest since timing is not measurable on a
# shared machine), the POST body's errors and limit, methods, HEAD, and the
# /metrics exposition as prometheus_client's own parser reads it.
from __future__ import annotations

import hmac
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
from prometheus_client.parser import text_string_to_metric_families

import lb.admin
from lb.admin import MAX_BODY, make_app
from lb.backends import Backends
from lb.config import Address, LBConfig
from lb.stats import Snapshot, snapshot
from lb.tally import Tally

TOKEN = "s3cret-admin-token"
A, B = "127.0.0.1:65001", "127.0.0.1:65002"


class FakeOps:
    """The worker's side: one fixed snapshot, and the changes asked for."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.changes: list[tuple[str, dict[str, Any]]] = []

    def snapshot(self) -> Snapshot:
        return self.snap

    def set_backend(self, name: str, change: dict[str, Any]) -> dict[str, Any] | None:
        self.changes.append((name, change))
        return {"name": name, **change} if name in (A, B) else None


@pytest.fixture
def ops(tmp_path: Path) -> FakeOps:
    tally = Tally(str(tmp_path), 0)
    config = LBConfig(backend=(Address("127.0.0.1", 65001), Address("127.0.0.1", 65002)))
    backends = Backends(config, tally)
    tally.worker.requests = 4
    for seconds in (0.0004, 0.002, 0.002, 90.0):
        tally.backend(A).observe(seconds)
    return FakeOps(snapshot(str(tmp_path), backends))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json"
        return json.loads(self.body)


def call(app: Callable, method: str = "GET", path: str = "/", body: bytes = b"",
         auth: str | None = None, length: int | None = None) -> Reply:
    """One request through the app; ``auth``: the Authorization header."""
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path,
                               "QUERY_STRING": "", "wsgi.input": io.BytesIO(body)}
    if body or length is not None:
        environ["CONTENT_LENGTH"] = str(len(body) if length is None else length)
    if auth is not None:
        environ["HTTP_AUTHORIZATION"] = auth
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)
        return lambda data: None

    result = validator(app)(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        result.close()
    return Reply(int(seen["status"].split()[0]), seen["headers"], data)


def bearer(token: str = TOKEN) -> str:
    return f"Bearer {token}"


GUARDED = [("GET", "/stats"), ("GET", "/metrics"), ("GET", "/backends"),
           ("GET", f"/backends/{A}"), ("POST", f"/backends/{A}")]


@pytest.mark.parametrize(("method", "path"), GUARDED)
@pytest.mark.parametrize("auth", [None, "", bearer("wrong-token-1234"), bearer(TOKEN + "x"),
                                  bearer(""), f"Basic {TOKEN}", TOKEN, f"Token {TOKEN}"])
def test_a_request_without_the_token_is_refused(ops: FakeOps, method: str, path: str,
                                                auth: str | None) -> None:
    reply = call(make_app(ops, TOKEN), method, path, b'{"state": "drain"}', auth)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer ")
    assert "Bearer" in reply.json()["error"]
    assert ops.changes == []


@pytest.mark.parametrize(("method", "path"), GUARDED + [("GET", "/")])
@pytest.mark.parametrize("auth", [bearer(), f"bearer {TOKEN}", f"  Bearer   {TOKEN} "])
def test_the_token_lets_a_request_through(ops: FakeOps, method: str, path: str,
                                          auth: str) -> None:
    reply = call(make_app(ops, TOKEN), method, path, b'{"state": "drain"}', auth)
    assert reply.status == 200
    assert ops.changes == ([(A, {"state": "drain"})] if method == "POST" else [])


def test_the_page_is_its_own_401(ops: FakeOps) -> None:
    app = make_app(ops, TOKEN)
    refused, page = call(app), call(app, auth=bearer())
    assert (refused.status, page.status) == (401, 200)
    assert refused.headers["Content-Type"].startswith("text/html")
    assert "WWW-Authenticate" in refused.headers
    assert refused.body == page.body and refused.body.strip()
    stats = call(app, path="/stats")
    assert stats.status == 401 and set(stats.json()) == {"error"}


def test_without_a_token_everything_answers(ops: FakeOps) -> None:
    app = make_app(ops, None)
    for method, path in GUARDED + [("GET", "/"), ("HEAD", "/stats")]:
        assert call(app, method, path, b'{"weight": 2}').status == 200, path
    assert call(app, "GET", "/stats", auth=bearer("anything-at-all")).status == 200


def test_the_token_is_compared_in_constant_time(ops: FakeOps,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(lb.admin.hmac, "compare_digest", spy)
    app = make_app(ops, TOKEN)
    assert call(app, path="/stats", auth=bearer("wrong-token-1234")).status == 401
    assert call(app, path="/stats", auth=bearer()).status == 200
    assert calls == [(b"wrong-token-1234", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


@pytest.mark.parametrize(("body", "why"), [
    (b"drain", "not JSON"), (b"[]", "JSON object"), (b'{"state": "off"}', "state must be"),
    (b'{"weight": 1001}', "weight must be"), (b'{"colour": 1}', "unknown field")])
def test_a_bad_change_is_a_400(ops: FakeOps, body: bytes, why: str) -> None:
    reply = call(make_app(ops), "POST", f"/backends/{A}", body)
    assert reply.status == 400 and why in reply.json()["error"]
    assert ops.changes == []


def test_a_change_to_an_unknown_backend_is_a_404(ops: FakeOps) -> None:
    reply = call(make_app(ops), "POST", "/backends/10.9.9.9:1", b'{"state": "drain"}')
    assert reply.status == 404 and "10.9.9.9:1" in reply.json()["error"]
    assert ops.changes == [("10.9.9.9:1", {"state": "drain"})]
    assert call(make_app(ops), "GET", "/backends/10.9.9.9:1").status == 404


def test_the_body_limit(ops: FakeOps) -> None:
    app = make_app(ops)
    fits = b'{"weight": 5}'.ljust(MAX_BODY)  # trailing spaces are still JSON
    assert call(app, "POST", f"/backends/{A}", fits).status == 200
    reply = call(app, "POST", f"/backends/{A}", fits + b" ")
    assert reply.status == 413 and str(MAX_BODY) in reply.json()["error"]
    assert ops.changes == [(A, {"weight": 5})]


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", f"/backends/{A}", "GET, HEAD, POST"), ("DELETE", f"/backends/{A}", "GET, HEAD, POST"),
    ("POST", "/stats", "GET, HEAD"), ("PUT", "/", "GET, HEAD")])
def test_other_methods_are_a_405_with_allow(ops: FakeOps, method: str, path: str,
                                            allow: str) -> None:
    reply = call(make_app(ops), method, path, b'{"state": "drain"}')
    assert (reply.status, reply.headers["Allow"]) == (405, allow)
    assert method in reply.json()["error"] and ops.changes == []


def test_an_unknown_path_is_a_404(ops: FakeOps) -> None:
    reply = call(make_app(ops), "GET", "/nowhere")
    assert reply.status == 404 and "/nowhere" in reply.json()["error"]


@pytest.mark.parametrize("path", ["/", "/stats", "/metrics", "/backends", f"/backends/{A}"])
def test_head_sends_the_headers_of_get_and_no_body(ops: FakeOps, path: str) -> None:
    app = make_app(ops)
    got, head = call(app, "GET", path), call(app, "HEAD", path)
    assert head.status == got.status == 200 and head.body == b""
    assert head.headers == got.headers
    assert int(head.headers["Content-Length"]) == len(got.body) > 0


def test_metrics_parse_and_the_latency_histogram_adds_up(ops: FakeOps) -> None:
    reply = call(make_app(ops), "GET", "/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}
    latency = families["gservers_lb_backend_latency_seconds"]
    assert latency.type == "histogram"
    for name, observed in ((A, 4), (B, 0)):
        samples = {(s.name, s.labels.get("le")): s.value for s in latency.samples
                   if s.labels["backend"] == name}
        count = samples[("gservers_lb_backend_latency_seconds_count", None)]
        assert count == samples[("gservers_lb_backend_latency_seconds_bucket", "+Inf")]
        assert count == observed
    a = {s.labels.get("le"): s.value for s in latency.samples
         if s.labels["backend"] == A and s.name.endswith("_bucket")}
    assert (a["0.0003"], a["0.0005"], a["0.002"], a["60.0"]) == (0, 1, 3, 3)  # cumulative
    total = next(s.value for s in latency.samples
                 if s.labels["backend"] == A and s.name.endswith("_sum"))
    assert total == pytest.approx(0.0004 + 0.002 + 0.002 + 90.0)
    assert families["gservers_lb_requests"].samples[0].value == 4
