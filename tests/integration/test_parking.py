# tests/integration/test_parking.py -- idle client connections parked without a greenlet.
#
# Strategy: the balancer parks a client connection that has sent nothing yet,
# or has been idle for a second between requests (lb.proxy.PARK_AFTER).  A
# parked connection must behave exactly like a waiting one: it is served when
# it sends, it is closed at the keep-alive timeout, it counts toward
# --max-connections and /stats, and a stop closes it.  /stats counts the
# parked ones ("parked") and the greenlets in use ("greenlets"), so the tests
# wait for parking itself, not for time to pass: a balancer that never parks
# fails them.  Real processes, raw sockets; timeouts are hang protection only.
from __future__ import annotations

import resource
import socket
import time
from typing import Any

from tests.support import parse_responses, read_all, start_backend, start_lb, wait_until

GET = b"GET /page.html HTTP/1.1\r\nHost: t\r\n\r\n"


def get_on(sock: socket.socket, request: bytes = GET) -> int:
    """Send ``request`` (GET, or the rest of it) and read one response."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + 240:
        more = sock.recv(65536)
        assert more, data
        data += more
    return parse_responses(data, [b"GET"])[0].status


def totals(lb: Any) -> dict[str, Any]:
    return lb.stats()["totals"]


def parked_are(lb: Any, parked: int, connections: int) -> bool:
    now = totals(lb)
    return now["parked"] == parked and now["client_connections"] == connections


def test_parked_connections_are_served_and_counted() -> None:
    backend = start_backend("async")
    lb = start_lb("--keepalive-timeout", "30", backends=[backend.port])
    try:
        fresh = [socket.create_connection(("127.0.0.1", lb.port), timeout=10) for _ in range(20)]
        used = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
        assert get_on(used) == 200
        # the fresh ones at once, the used one after PARK_AFTER between requests
        assert wait_until(lambda: parked_are(lb, 21, 21)), totals(lb)
        assert get_on(used) == 200  # woken and served
        for sock in fresh:  # parked before their first request
            assert get_on(sock) == 200
        for sock in fresh + [used]:
            sock.close()
        assert wait_until(lambda: parked_are(lb, 0, 0)), totals(lb)
    finally:
        lb.server.stop()
        backend.stop()


def test_parked_connection_closes_at_the_keepalive_timeout() -> None:
    backend = start_backend("async")
    lb = start_lb("--keepalive-timeout", "2", backends=[backend.port])
    try:
        idle = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
        used = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
        assert get_on(used) == 200
        began = time.monotonic()
        assert read_all(idle, timeout=10) == b""   # closed, without a response
        assert read_all(used, timeout=10) == b""
        assert time.monotonic() - began < 9      # by the timeout, not by the hang guard
    finally:
        lb.server.stop()
        backend.stop()


def test_parked_connections_count_toward_max_connections() -> None:
    backend = start_backend("async")
    lb = start_lb("--max-connections", "6", backends=[backend.port])
    try:
        # Five parked (parking takes a free slot before the greenlet gives
        # its own back, so a full pool parks nothing), then a sixth: full.
        held = [socket.create_connection(("127.0.0.1", lb.port), timeout=10) for _ in range(5)]
        assert wait_until(lambda: parked_are(lb, 5, 5)), totals(lb)
        held.append(socket.create_connection(("127.0.0.1", lb.port), timeout=10))
        assert wait_until(lambda: totals(lb)["client_connections"] == 6), totals(lb)
        extra = socket.create_connection(("127.0.0.1", lb.port), timeout=10)  # in the backlog
        extra.sendall(GET)
        extra.settimeout(1.0)
        try:
            early = extra.recv(100)
        except TimeoutError:
            early = b""
        assert early == b"", "a seventh connection was served while six were held"
        held[0].close()  # a parked one: its slot frees, the waiting one is accepted and served
        extra.settimeout(10)
        data = b""
        while len(data) < 100:
            more = extra.recv(65536)
            assert more
            data += more
        assert data.startswith(b"HTTP/1.1 200")
        for sock in held[1:] + [extra]:
            sock.close()
    finally:
        lb.server.stop()
        backend.stop()


def test_stop_closes_parked_connections() -> None:
    backend = start_backend("async")
    lb = start_lb("--keepalive-timeout", "60", backends=[backend.port])
    try:
        idle = [socket.create_connection(("127.0.0.1", lb.port), timeout=15) for _ in range(10)]
        assert wait_until(lambda: parked_are(lb, 10, 10)), totals(lb)
        assert lb.server.stop() == 0
        for sock in idle:
            assert read_all(sock, timeout=15) == b""
            sock.close()
    finally:
        lb.server.stop()
        backend.stop()


def raise_open_files() -> None:
    """This process's open-files soft limit up to the hard limit (the lb
    raises its own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def test_a_thousand_idle_connections_are_parked_without_greenlets() -> None:
    raise_open_files()
    backend = start_backend("async")
    lb = start_lb("--keepalive-timeout", "300", "--header-timeout", "120",
                  backends=[backend.port])
    fresh: list[socket.socket] = []
    used: list[socket.socket] = []
    try:
        for _ in range(600):  # never send a byte
            fresh.append(socket.create_connection(("127.0.0.1", lb.port), timeout=30))
        for _ in range(400):  # one keep-alive request, then idle
            used.append(socket.create_connection(("127.0.0.1", lb.port), timeout=30))
            assert get_on(used[-1]) == 200

        def all_parked() -> bool:
            now = totals(lb)
            return (now["parked"] == now["client_connections"] == 1000
                    and now["greenlets"] < 50)

        assert wait_until(all_parked, timeout=120), totals(lb)
        metrics = lb.metrics()
        assert "gservers_lb_parked_connections 1000.0" in metrics, metrics
        assert "gservers_lb_client_connections 1000.0" in metrics, metrics

        # Half a head wakes a parked connection; waiting for the rest, it
        # holds a greenlet and is not parked.
        woken = fresh[:10] + used[:10]
        for sock in woken:
            sock.sendall(GET[:-2])

        def woken_waiting() -> bool:
            now = totals(lb)
            return (now["parked"] == 980 and now["client_connections"] == 1000
                    and now["greenlets"] >= 20)

        assert wait_until(woken_waiting, timeout=60), totals(lb)
        for sock in woken:
            assert get_on(sock, GET[-2:]) == 200
        for sock in woken:
            sock.close()
        assert wait_until(lambda: parked_are(lb, 980, 980), timeout=60), totals(lb)
        for sock in fresh[10:] + used[10:]:
            sock.close()
        assert wait_until(lambda: parked_are(lb, 0, 0), timeout=60), totals(lb)
        assert "gservers_lb_parked_connections 0.0" in lb.metrics()
    finally:
        for sock in fresh + used:
            sock.close()
        lb.server.stop()
        backend.stop()
