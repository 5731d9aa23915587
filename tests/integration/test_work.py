# tests/integration/test_work.py -- the synthetic work endpoints of both backend models.
#
# Strategy: real backend processes (one of each model, started through the
# CLI by the ``both_backends`` fixture) spoken to in raw bytes over
# 127.0.0.1.  Answers must be byte-identical across models once Date is
# blanked, and bodies of a fixed length whatever N is.  What the endpoints
# do is observed from outside: the server process's CPU seconds rise by at
# least 40% of the asked-for amount for /work/cpu and stay flat for
# /work/wait, which lasts at least N ms of wall time.  That waiting is
# cooperative is shown by 20 concurrent waits finishing in half the time they
# would take one after another; that CPU work holds up every connection of
# the async model (and not of the thread model) is shown by the order of two
# answers, not by a clock.  Wall-clock bounds are lower bounds or generous
# factors only.  Refusals (400/404 with a reason) keep the connection open.
from __future__ import annotations

import selectors
import socket
import time

import pytest

from tests.support import (
    Reply,
    Server,
    connect,
    exchange,
    parse_responses,
    strip_date,
    wait_until,
)

MODELS = ("async", "thread")
HANG = 30.0  # seconds; hang protection only


def request(path: str, method: str = "GET", close: bool = True) -> bytes:
    """One request as raw bytes."""
    extra = "Connection: close\r\n" if close else ""
    return f"{method} {path} HTTP/1.1\r\nHost: work\r\n{extra}\r\n".encode("ascii")


def fetch(server: Server, path: str, method: str = "GET") -> Reply:
    """One request on a fresh connection; the parsed answer (raw kept)."""
    raw = exchange(server.port, request(path, method), timeout=HANG)
    replies = parse_responses(raw, [method.encode()])
    assert len(replies) == 1 and replies[0].raw == raw, raw
    return replies[0]


def read_reply(sock: socket.socket, method: bytes = b"GET") -> Reply:
    """Read exactly one answer (framed by Content-Length) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        block = sock.recv(65536)
        assert block, f"closed after {data!r}"
        data += block
    head_end = data.index(b"\r\n\r\n") + 4
    length = 0
    for line in data[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if method == b"HEAD":
        length = 0
    while len(data) < head_end + length:
        block = sock.recv(65536)
        assert block, f"closed after {data!r}"
        data += block
    assert len(data) == head_end + length, data  # nothing stray behind the answer
    return parse_responses(data, [method])[0]


def cpu_delta(server: Server, path: str) -> tuple[float, float, Reply]:
    """(server CPU seconds, wall seconds, answer) for one request."""
    cpu = server.cpu_seconds()
    start = time.monotonic()
    reply = fetch(server, path)
    wall = time.monotonic() - start
    return server.cpu_seconds() - cpu, wall, reply


@pytest.mark.parametrize("path, method", [
    ("/work/cpu?ms=5", "GET"), ("/work/wait?ms=5", "GET"), ("/work/cpu?ms=0", "GET"),
    ("/work/wait?ms=0050", "GET"), ("/work/cpu?ms=5", "HEAD"), ("/work/wait?ms=5", "HEAD"),
    ("/work/cpu?ms=-1", "GET"), ("/work/wait", "GET"), ("/work/other?ms=1", "GET"),
    ("/work/cpu?ms=5&x=1", "GET"),
])
def test_both_models_answer_the_same_bytes(both_backends: dict[str, Server], path: str,
                                           method: str) -> None:
    answers = {model: strip_date(fetch(server, path, method).raw)
               for model, server in both_backends.items()}
    assert answers["async"] == answers["thread"], answers


@pytest.mark.parametrize("model", MODELS)
def test_answers_and_fixed_length_bodies(both_backends: dict[str, Server], model: str) -> None:
    server = both_backends[model]
    for kind in ("cpu", "wait"):
        replies = [fetch(server, f"/work/{kind}?ms={ms}") for ms in (0, 5, 99)]
        for reply, ms in zip(replies, (0, 5, 99), strict=True):
            assert reply.status == 200, reply.raw
            assert reply.body == f"{kind} {ms:05d} ms\n".encode(), reply.raw
            assert reply.header("Content-Type") == b"text/plain; charset=utf-8"
            assert reply.header("Content-Length") == b"%d" % len(reply.body)
        assert len({len(r.body) for r in replies}) == 1, [r.body for r in replies]
        assert len(f"{kind} {10000:05d} ms\n") == len(replies[0].body)  # the widest N fits


@pytest.mark.parametrize("model", MODELS)
def test_head_is_get_without_the_body(both_backends: dict[str, Server], model: str) -> None:
    """HEAD then GET pipelined on one connection: both frame correctly."""
    with connect(both_backends[model].port, timeout=HANG) as sock:
        sock.sendall(request("/work/wait?ms=5", "HEAD", close=False)
                     + request("/work/wait?ms=5", close=False))
        head = read_reply(sock, b"HEAD")
        get = read_reply(sock)
    assert head.status == get.status == 200
    assert head.body == b"" and get.body == b"wait 00005 ms\n"
    assert head.header("Content-Length") == get.header("Content-Length") == b"14"


@pytest.mark.parametrize("model", MODELS)
def test_cpu_work_uses_cpu(both_backends: dict[str, Server], model: str) -> None:
    server = both_backends[model]
    fetch(server, "/work/cpu?ms=1")  # calibrated by now
    cpu, _, reply = cpu_delta(server, "/work/cpu?ms=200")
    assert reply.status == 200, reply.raw
    # A generous bound: a calibration made while a busy neighbour halved the
    # machine's speed makes a request burn about half as much once it is gone.
    assert cpu >= 0.08, f"/work/cpu?ms=200 cost the server only {cpu:.3f} CPU seconds"


@pytest.mark.parametrize("model", MODELS)
def test_wait_work_waits_without_cpu(both_backends: dict[str, Server], model: str) -> None:
    server = both_backends[model]
    cpu, wall, reply = cpu_delta(server, "/work/wait?ms=300")
    assert reply.status == 200, reply.raw
    assert wall >= 0.3, f"answered after {wall:.3f} s"
    assert cpu < 0.1, f"/work/wait?ms=300 cost the server {cpu:.3f} CPU seconds"


@pytest.mark.parametrize("model", MODELS)
def test_concurrent_waits_overlap(both_backends: dict[str, Server], model: str) -> None:
    """20 waits of 0.3 s at once take well under the 6 s they would take in
    turn: the async model's sleep yields, the thread model's blocks one
    thread each.  (3 s is half the serial time: a generous bound.)"""
    port = both_backends[model].port
    socks = [connect(port, timeout=HANG) for _ in range(20)]
    try:
        start = time.monotonic()
        for sock in socks:
            sock.sendall(request("/work/wait?ms=300", close=False))
        replies = [read_reply(sock) for sock in socks]
        elapsed = time.monotonic() - start
    finally:
        for sock in socks:
            sock.close()
    assert all(r.status == 200 and r.body == b"wait 00300 ms\n" for r in replies)
    assert 0.3 <= elapsed < 3.0, f"20 concurrent waits of 0.3 s took {elapsed:.2f} s"


@pytest.mark.parametrize("model, first", [("async", "cpu"), ("thread", "health")])
def test_cpu_work_holds_up_the_async_model_only(both_backends: dict[str, Server], model: str,
                                                first: str) -> None:
    """/health asked while /work/cpu?ms=1000 burns (seen as the server's CPU
    seconds rising): the async model answers it after the burn (one thread
    for all connections), the thread model first."""
    server = both_backends[model]
    fetch(server, "/work/cpu?ms=1")  # calibrated by now
    with connect(server.port, timeout=HANG) as cpu, connect(server.port, timeout=HANG) as health:
        before = server.cpu_seconds()
        cpu.sendall(request("/work/cpu?ms=1000", close=False))
        assert wait_until(lambda: server.cpu_seconds() - before >= 0.05, 10.0, 0.01)
        health.sendall(request("/health", close=False))
        with selectors.DefaultSelector() as selector:
            selector.register(cpu, selectors.EVENT_READ, "cpu")
            selector.register(health, selectors.EVENT_READ, "health")
            ready = selector.select(timeout=HANG)
        names = sorted(key.data for key, _ in ready)
        # Async: /health may land in the same wake-up, just after the burn.
        assert names == [first] or (first == "cpu" and names == ["cpu", "health"]), names
        assert read_reply(cpu).status == read_reply(health).status == 200


BAD = [
    ("/work/cpu?ms=-1", 400, b"ms must be a whole number 0..10000"),
    ("/work/cpu?ms=10001", 400, b"ms must be a whole number 0..10000"),
    ("/work/wait?ms=10001", 400, b"ms must be a whole number 0..10000"),
    ("/work/cpu?ms=abc", 400, b"ms must be a whole number 0..10000"),
    ("/work/wait?ms=", 400, b"ms must be a whole number 0..10000"),
    ("/work/cpu?ms=1.5", 400, b"ms must be a whole number 0..10000"),
    ("/work/cpu", 400, b"ms=N is required (0..10000)"),
    ("/work/wait?", 400, b"ms=N is required (0..10000)"),
    ("/work/cpu?ms=5&x=1", 400, b"only one query parameter, ms=N, is accepted"),
    ("/work/wait?n=5", 400, b"only one query parameter, ms=N, is accepted"),
    ("/work/other", 404, b"no such work endpoint (/work/cpu, /work/wait)"),
    ("/work/", 404, b"no such work endpoint (/work/cpu, /work/wait)"),
]


@pytest.mark.parametrize("model", MODELS)
def test_bad_requests_are_refused_and_the_connection_stays(both_backends: dict[str, Server],
                                                           model: str) -> None:
    with connect(both_backends[model].port, timeout=HANG) as sock:
        for path, status, reason in BAD:
            sock.sendall(request(path, close=False))
            reply = read_reply(sock)
            assert reply.status == status, (path, reply.raw)
            assert reply.body == b"%d %s\n" % (status, reason), (path, reply.raw)
            assert reply.header("Connection") is None, (path, reply.raw)
        sock.sendall(request("/work/cpu?ms=1", close=False))
        assert read_reply(sock).body == b"cpu 00001 ms\n"
