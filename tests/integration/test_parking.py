# tests/integration/test_parking.py -- idle client connections parked without a greenlet.
#
# Strategy: the balancer parks a client connection that has sent nothing yet,
# or has been idle for a second between requests (lb.proxy.PARK_AFTER).  A
# parked connection must behave exactly like a waiting one: it is served when
# it sends, it is closed at the keep-alive timeout, it counts toward
# --max-connections and /stats, and a stop closes it.  Real processes, raw
# sockets; timeouts are hang protection only.
from __future__ import annotations

import socket
import time

from tests.support import parse_responses, read_all, start_backend, start_lb, wait_until

GET = b"GET /page.html HTTP/1.1\r\nHost: t\r\n\r\n"


def get_on(sock: socket.socket) -> int:
    sock.sendall(GET)
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + 240:
        more = sock.recv(65536)
        assert more, data
        data += more
    return parse_responses(data, [b"GET"])[0].status


def test_parked_connections_are_served_and_counted() -> None:
    backend = start_backend("async")
    lb = start_lb("--keepalive-timeout", "30", backends=[backend.port])
    try:
        fresh = [socket.create_connection(("127.0.0.1", lb.port), timeout=10) for _ in range(20)]
        used = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
        assert get_on(used) == 200
        time.sleep(1.6)  # past PARK_AFTER: parked between requests
        assert wait_until(lambda: lb.stats()["totals"]["client_connections"] == 21)
        assert get_on(used) == 200  # woken and served
        for sock in fresh:  # parked before their first request
            assert get_on(sock) == 200
        for sock in fresh + [used]:
            sock.close()
        assert wait_until(lambda: lb.stats()["totals"]["client_connections"] == 0)
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
    lb = start_lb("--max-connections", "5", backends=[backend.port])
    try:
        held = [socket.create_connection(("127.0.0.1", lb.port), timeout=10) for _ in range(5)]
        assert wait_until(lambda: lb.stats()["totals"]["client_connections"] == 5)
        extra = socket.create_connection(("127.0.0.1", lb.port), timeout=10)  # in the backlog
        extra.sendall(GET)
        extra.settimeout(1.0)
        try:
            early = extra.recv(100)
        except TimeoutError:
            early = b""
        assert early == b"", "a sixth connection was served while five were held"
        held[0].close()  # a slot frees: the waiting one is accepted and served
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
        assert wait_until(lambda: lb.stats()["totals"]["client_connections"] == 10)
        assert lb.server.stop() == 0
        for sock in idle:
            assert read_all(sock, timeout=15) == b""
            sock.close()
    finally:
        lb.server.stop()
        backend.stop()
