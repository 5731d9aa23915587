# tests/integration/test_lb_policies_live.py -- which backend gets a request, live.
#
# Strategy: recording origins behind a real ``python -m lb``; every request
# goes on a fresh client connection, and where it went is read off the
# origins (which one received it, and the X-Forwarded-For the balancer
# added), never off the balancer's own counters.  The consistent hash is
# keyed by the client's address, so clients are given distinct addresses by
# binding their sockets to different addresses of 127.0.0.0/8.  Reloads are
# checked the same way: after SIGHUP to the master of two workers, new
# connections -- spread over both workers by SO_REUSEPORT -- all land on the
# new backend.
from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.recording_backend import RecordingBackend, Request, counts, fixed, held, running
from tests.support import (
    Balancer,
    get_status,
    parse_responses,
    read_all,
    start_lb,
    stop_clean,
    wait_until,
)

QUIET = ("--health-interval", "3600")


def backends_by(origins: list[RecordingBackend],
                mark: Callable[[Request], bytes | None]) -> dict[bytes, set[int]]:
    """Which origins (by index) received the requests of each ``mark``."""
    where: dict[bytes, set[int]] = {}
    for index, origin in enumerate(origins):
        for req in origin.requests:
            where.setdefault(mark(req) or b"?", set()).add(index)
    return where


@pytest.fixture
def origins() -> Iterator[list[RecordingBackend]]:
    with running(3) as made:
        yield made


def balancer(origins: list[RecordingBackend], *args: str) -> Balancer:
    lb = start_lb(*QUIET, *args, backends=[o.port for o in origins])
    for origin in origins:
        origin.wait_health_check()
    return lb


# -- consistent_hash --------------------------------------------------------------------

CLIENTS = [f"127.0.0.{i}" for i in range(1, 24)]  # 23: no round-robin period fits
PER_CLIENT = 4


def test_consistent_hash_keeps_each_client_on_one_backend(
        origins: list[RecordingBackend]) -> None:
    lb = balancer(origins, "--policy", "consistent_hash")
    try:
        for _ in range(PER_CLIENT):
            for client in CLIENTS:
                assert get_status(lb.port, source=client) == 200
    finally:
        stop_clean(lb)
    where = backends_by(origins, lambda req: req.header("x-forwarded-for"))
    assert set(where) == {c.encode() for c in CLIENTS}
    spread = {client: sorted(backends) for client, backends in where.items()
              if len(backends) > 1}
    assert not spread, f"one client's requests went to several backends: {spread}"
    assert sum(counts(origins)) == PER_CLIENT * len(CLIENTS)
    # Keyed by the client, not one backend for all: 23 clients over 3 backends.
    assert len({next(iter(b)) for b in where.values()}) > 1


def get_with(port: int, target: str, header: str = "") -> int:
    """GET ``target`` with an extra header line on a fresh connection; the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n{header}Connection: close"
                     f"\r\n\r\n".encode())
        data = read_all(sock, 20)
    replies = parse_responses(data, [b"GET"])
    return replies[0].status if replies else 0


@pytest.mark.parametrize(("key", "header", "target"), [
    ("header:X-User", "X-User: u{n}\r\n", "/"),
    ("cookie:sid", "Cookie: theme=dark; sid=s{n}\r\n", "/"),
    ("uri", "", "/item?id={n}"),
])
def test_hash_keys_keep_each_key_on_one_backend(origins: list[RecordingBackend], key: str,
                                                header: str, target: str) -> None:
    """All from one address (as behind a NAT): keyed by the request, 20 keys
    spread over the backends and each stays on its own."""
    lb = balancer(origins, "--policy", "consistent_hash", "--hash-key", key)
    try:
        for _ in range(3):
            for n in range(20):
                assert get_with(lb.port, target.format(n=n), header.format(n=n)) == 200
    finally:
        stop_clean(lb)
    where = backends_by(origins, lambda req: req.header("x-user") or req.header("cookie")
                        or req.target)
    assert len(where) == 20 and all(len(b) == 1 for b in where.values()), where
    assert len({next(iter(b)) for b in where.values()}) > 1  # not all on one backend


def test_without_the_key_a_request_falls_back_to_the_client(
        origins: list[RecordingBackend]) -> None:
    """No X-User: keyed by the client address, so each client stays on one
    backend and the clients spread (a constant key would put all on one)."""
    lb = balancer(origins, "--policy", "consistent_hash", "--hash-key", "header:X-User")
    try:
        for _ in range(2):
            for client in CLIENTS:
                assert get_status(lb.port, source=client) == 200
    finally:
        stop_clean(lb)
    where = backends_by(origins, lambda req: req.header("x-forwarded-for"))
    assert len(where) == len(CLIENTS) and all(len(b) == 1 for b in where.values())
    assert len({next(iter(b)) for b in where.values()}) > 1


# -- random_two -------------------------------------------------------------------------

def test_random_two_uses_several_backends(origins: list[RecordingBackend]) -> None:
    lb = balancer(origins, "--policy", "random_two")
    try:
        statuses = [get_status(lb.port) for _ in range(60)]
    finally:
        stop_clean(lb)
    assert statuses == [200] * 60
    seen = counts(origins)
    assert sum(seen) == 60
    assert sum(1 for n in seen if n) > 1, f"every request went to one backend: {seen}"


# -- least_connections ------------------------------------------------------------------

def test_least_connections_avoids_the_busy_backend(origins: list[RecordingBackend]) -> None:
    release = threading.Event()
    for origin in origins:
        origin.responder = held(release, fixed())
    lb = balancer(origins, "--policy", "least_connections")
    slow: list[int] = []
    client = threading.Thread(target=lambda: slow.append(get_status(lb.port, "/slow")), daemon=True)
    try:
        client.start()
        assert wait_until(lambda: any(o.requests for o in origins), timeout=20)
        busy = next(i for i, o in enumerate(origins) if o.requests)
        statuses = [get_status(lb.port, "/fast") for _ in range(12)]
        seen = counts(origins)
        release.set()
        client.join(30)
    finally:
        release.set()
        stop_clean(lb)
    assert statuses == [200] * 12
    assert slow == [200]
    assert seen[busy] == 1, f"a new request went to the backend holding one in flight: {seen}"
    assert sum(seen) == 13


# -- SIGHUP through the master to every worker ------------------------------------------

def test_sighup_reaches_every_worker(tmp_path: Path) -> None:
    old, new = RecordingBackend(), RecordingBackend()
    config = tmp_path / "lb.toml"
    config.write_text(f'backend = ["127.0.0.1:{old.port}"]\n')
    lb = start_lb(*QUIET, "--workers", "2", "--config", str(config))
    try:
        before = [get_status(lb.port) for _ in range(20)]
        assert before == [200] * 20
        assert (len(old.requests), len(new.requests)) == (20, 0)
        config.write_text(f'backend = ["127.0.0.1:{new.port}"]\n')
        lb.server.signal(signal.SIGHUP)
        assert wait_until(lambda: lb.server.log.count("SIGHUP: reloaded") >= 2, timeout=30), \
            lb.server.log
        old.reset()
        after = [get_status(lb.port) for _ in range(60)]
    finally:
        stop_clean(lb)
        old.stop()
        new.stop()
    assert after == [200] * 60
    assert (len(old.requests), len(new.requests)) == (0, 60), \
        "a worker still sent requests to the old backend list"
