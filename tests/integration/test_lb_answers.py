# tests/integration/test_lb_answers.py -- what counts against a backend, and Expect done right.
#
# Strategy: real ``python -m lb`` processes over real backends (gservers
# backends started with their CLI, or tests/recording_backend.py scripted per
# test) and raw client sockets.  What the balancer counts is read from its
# /stats: a backend's failures and state, and the totals.  A 4xx is the
# client's business and never counts; a 5xx counts unless --no-fail-on-5xx;
# a backend that refuses an upload early (413) and closes is relayed, not
# turned into a 502, and is not ejected; when no backend takes a connection
# the answer is 503 with Retry-After.  With ``Expect: 100-continue`` the
# client hears 100 only once a backend is ready (the backend's own 100
# passed on), an early final answer reaches it before it sends its body,
# and with no backend it gets 503 before uploading anything.  Timeouts here
# only stop hangs; nothing is timed.
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.raw_client import HANG, Client, get
from tests.recording_backend import RecordingBackend, fixed
from tests.support import Balancer, Server, free_ports, start_backend, start_lb

RARE_HEALTH = ("--health-interval", "3600")


def backend_stats(lb: Balancer) -> dict:
    [entry] = lb.stats()["backends"]
    return entry


@pytest.fixture()
def small_backend() -> Iterator[Server]:
    """A gservers backend that takes bodies up to 1000 bytes (413 beyond)."""
    server = start_backend("async", "--max-body", "1000")
    yield server
    server.stop()


def post_head(size: int, expect: bool = False) -> bytes:
    return (b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n" % size
            + (b"Expect: 100-continue\r\n" if expect else b"") + b"\r\n")


def test_an_early_413_is_relayed_and_never_ejects_the_backend(small_backend: Server) -> None:
    lb = start_lb(*RARE_HEALTH, backends=[small_backend.port])
    try:
        body = b"x" * (4 << 20)  # far past the backend's limit and the lb's buffer
        for _ in range(4):  # --eject-failures is 3: four such uploads would have ejected it
            with Client(lb.port) as c:
                c.send(post_head(len(body)))
                try:
                    c.send(body)
                except OSError:
                    pass  # the balancer may stop reading once the answer came
                resp = c.read_response()
                assert resp.status == 413, resp.raw_head
        stats = backend_stats(lb)
        assert stats["failures"] == 0 and stats["state"] == "up", stats
        with Client(lb.port) as c:
            assert c.request(get("/page.html")).status == 200
        assert lb.stats()["totals"]["responses"].get("502") is None
    finally:
        lb.server.stop()


def test_client_errors_never_count_against_the_backend() -> None:
    server = start_backend("async")
    lb = start_lb(*RARE_HEALTH, backends=[server.port])
    try:
        with Client(lb.port) as c:
            for _ in range(5):
                assert c.request(get("/missing.html")).status == 404
        stats = backend_stats(lb)
        assert stats["failures"] == 0 and stats["state"] == "up" and stats["ejections"] == 0
    finally:
        lb.server.stop()
        server.stop()


@pytest.mark.parametrize("flag", [(), ("--no-fail-on-5xx",)])
def test_server_errors_count_unless_told_not_to(flag: tuple[str, ...]) -> None:
    origin = RecordingBackend(fixed(b"boom", status=500, reason="Internal Server Error"))
    lb = start_lb(*RARE_HEALTH, *flag, backends=[origin.port])
    try:
        with Client(lb.port) as c:
            for _ in range(3):
                resp = c.request(get("/"))
                assert resp.status == 500 and resp.body == b"boom"  # relayed as it is
        stats = backend_stats(lb)
        if flag:
            assert stats["failures"] == 0 and stats["state"] == "up", stats
        else:
            assert stats["failures"] == 3 and stats["state"] == "ejected", stats
            with Client(lb.port) as c:
                resp = c.request(get("/"))
                assert resp.status == 503 and resp.header("Retry-After") == b"1"
    finally:
        lb.server.stop()
        origin.stop()


def test_backends_refusing_connections_give_503_with_retry_after() -> None:
    """Both backends pass the health check at start, then stop listening: with
    health checks rare they stay "up", so each request tries both and is
    refused by both -- "no backend can take this", a 503, not a 502."""
    servers = [start_backend("async"), start_backend("async")]
    lb = start_lb(*RARE_HEALTH, "--eject-failures", "100",
                  backends=[s.port for s in servers])
    try:
        for server in servers:
            server.stop()
        with Client(lb.port) as c:
            resp = c.request(get("/"))
        assert resp.status == 503, resp.raw_head
        assert resp.header("Retry-After") == b"1"
        assert b"no backend could take the request" in resp.body
        assert sum(b["failures"] for b in lb.stats()["backends"]) == 2  # each was tried
        assert all(b["state"] == "up" for b in lb.stats()["backends"])
    finally:
        lb.server.stop()


def test_expect_with_no_backend_up_is_503_before_any_upload() -> None:
    dead = free_ports(1)
    lb = start_lb(*RARE_HEALTH, backends=dead)
    try:
        with Client(lb.port) as c:
            c.send(post_head(100000, expect=True))
            resp = c.read_response()  # the body has not been sent
            assert resp.status == 503 and resp.header("Retry-After") == b"1"
            assert resp.header("Connection") == b"close" and c.closed_by_peer()
    finally:
        lb.server.stop()


def test_expect_passes_on_the_backends_own_100_then_the_body() -> None:
    server = start_backend("async")
    lb = start_lb(*RARE_HEALTH, backends=[server.port])
    try:
        with Client(lb.port) as c:
            c.send(post_head(300000, expect=True))
            interim = c.read_response()
            assert interim.status == 100
            assert interim.header("Via") == b"1.1 gservers-lb"  # the backend's, passed on
            c.send(b"y" * 300000)
            final = c.read_response()
            assert final.status == 200 and final.body == b"OK\n"
            assert c.request(get("/page.html")).status == 200  # still usable
    finally:
        lb.server.stop()
        server.stop()


def test_expect_an_early_refusal_reaches_the_client_before_its_body(
        small_backend: Server) -> None:
    lb = start_lb(*RARE_HEALTH, backends=[small_backend.port])
    try:
        with Client(lb.port) as c:
            c.send(post_head(5 << 20, expect=True))
            resp = c.read_response()  # no body sent: the backend's 413 must come anyway
            assert resp.status == 413, resp.raw_head
            assert resp.header("Connection") == b"close" and c.closed_by_peer(HANG)
        assert backend_stats(lb)["failures"] == 0
    finally:
        lb.server.stop()
