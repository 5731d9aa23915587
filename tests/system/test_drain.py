# tests/system/test_drain.py -- the graceful stop: the idle linger and the grace period.
#
# Strategy: real processes, real sockets, SIGTERM by PID.  "Within the grace
# period" is never timed: a request that would otherwise be in flight far
# longer than any hang protection here (a backend response held for a
# minute, a request body paused under a minute-long body timeout) is cut,
# and the process exits 0 well inside the hang protection -- a server that
# ignored --grace would still be waiting.  The idle linger is checked by
# sending a keep-alive request only after the listener is seen closed
# (so the drain has begun) and seeing it answered, with Connection: close.
from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.recording_backend import RecordingBackend, fixed, held
from tests.support import (
    Server,
    parse_responses,
    read_all,
    start_backend,
    start_lb,
    wait_port_closed,
    wait_until,
)

#: Hang protection for a process to exit after SIGTERM (its grace is 1 s).
EXIT_WAIT = 30.0
#: How long the held request would otherwise take: beyond EXIT_WAIT.
HOLD = 60.0
#: Seconds a keep-alive client waits after a response before it counts as
#: idle: a server thread goes back to wait for the next request right after
#: sending, but a drain that starts before it does gives it no linger.
IDLE_AFTER = 0.5


def wait_exit(server: Server) -> int | None:
    try:
        return server.proc.wait(EXIT_WAIT)
    except subprocess.TimeoutExpired:
        return None


def read_response(sock: socket.socket) -> bytes:
    """One Content-Length response from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        block = sock.recv(65536)
        assert block, f"closed before a whole head: {data!r}"
        data += block
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        block = sock.recv(65536)
        assert block, "closed mid-body"
        body += block
    return head + b"\r\n\r\n" + body


# -- --grace cuts a request that takes longer ---------------------------------------------

def test_lb_grace_cuts_a_slow_response() -> None:
    release = threading.Event()
    origin = RecordingBackend(held(release, fixed(), timeout=HOLD))
    lb = start_lb("--health-interval", "3600", "--grace", "1",
                  "--response-timeout", str(HOLD * 2), backends=[origin.port])
    try:
        origin.wait_health_check()
        with socket.create_connection(("127.0.0.1", lb.port), timeout=EXIT_WAIT) as client:
            client.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            assert wait_until(lambda: origin.requests, timeout=20)
            lb.server.signal(signal.SIGTERM)
            code = wait_exit(lb.server)
            assert code == 0, f"exit {code} after SIGTERM with --grace 1:\n{lb.server.log}"
            got = read_all(client, 5)
        assert b" 200 " not in got and b" 504 " not in got, got
        assert "grace period over" in lb.server.log
    finally:
        release.set()
        lb.server.stop()
        origin.stop()


@pytest.mark.parametrize("model", ["async", "thread"])
def test_backend_grace_cuts_a_request_in_flight(model: str) -> None:
    """A POST whose body pauses (under a body timeout longer than any wait
    here) is in flight when SIGTERM comes; --grace 1 ends it."""
    server = start_backend(model, "--grace", "1", "--header-timeout", str(HOLD * 2))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=EXIT_WAIT) as client:
            client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf")
            client.sendall(b" of the body")
            # Both writes must reach the backend; nothing observable says when,
            # so it is given a moment (the test holds either way, see below).
            time.sleep(0.3)
            server.signal(signal.SIGTERM)
            code = wait_exit(server)
            assert code == 0, f"exit {code} after SIGTERM with --grace 1:\n{server.log}"
            got = read_all(client, 5)
        assert b" 200 " not in got, got
    finally:
        server.stop()


# -- the idle linger: a keep-alive client's next request is still answered ---------------

@pytest.mark.parametrize("model", ["async", "thread"])
def test_idle_keep_alive_request_in_the_linger_is_answered(model: str) -> None:
    server = start_backend(model)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            first = parse_responses(read_response(client), [b"GET"])[0]
            assert first.status == 200
            assert (first.header("connection") or b"").lower() != b"close"
            # An idle client: let the server go back to waiting for a request
            # (nothing observable says when).  A drain that starts between its
            # sending a response and marking the connection idle closes it
            # with no linger (gservers/backend/connection.py, net/idle.py).
            time.sleep(IDLE_AFTER)
            server.signal(signal.SIGTERM)
            # The listener closes as the drain begins; the linger starts there.
            assert wait_port_closed(server.port, timeout=20)
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            data = read_all(client, 20)
        replies = parse_responses(data, [b"GET"])
        assert replies, f"the request sent in the linger got no answer: {data!r}"
        assert replies[0].status == 200
        assert (replies[0].header("connection") or b"").lower() == b"close"
        assert replies[0].body == first.body
        assert wait_exit(server) == 0
    finally:
        server.stop()
