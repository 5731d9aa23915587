# tests/integration/test_lb_upgrade.py -- WebSocket (and any upgrade) through the balancer.
#
# Strategy: a real WebSocket echo server (the ``websockets`` library, in a
# thread of the test process, answering the balancer's GET /health itself)
# behind a real ``python -m lb``, and a real WebSocket client library on
# the other side.  The upgrade request goes on with its Upgrade header, the
# backend's 101 comes back, and then the balancer only copies bytes both
# ways: text and binary messages echo byte-exact, in both directions and
# interleaved, until either side closes or the tunnel idles past
# --tunnel-timeout.  /stats counts tunnels; the backend connection of a
# tunnel is never pooled.  A 101 the client did not ask for is a 502.
from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect
from websockets.sync.server import Server as WSServer
from websockets.sync.server import serve

from tests.certs import Certs
from tests.raw_client import Client, get
from tests.recording_backend import RecordingBackend, Reply, head_bytes
from tests.support import Balancer, start_lb, wait_until

RARE_HEALTH = ("--health-interval", "3600")


def _echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


def _health(connection: Any, request: Any) -> Any:
    if request.path == "/health":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


@pytest.fixture()
def echo() -> Iterator[WSServer]:
    server = serve(_echo, "127.0.0.1", 0, process_request=_health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join(10)


def port_of(server: WSServer) -> int:
    return server.socket.getsockname()[1]


def test_websocket_echo_through_the_balancer(echo: WSServer) -> None:
    lb = start_lb(*RARE_HEALTH, backends=[port_of(echo)])
    try:
        with connect(f"ws://127.0.0.1:{lb.port}/chat", open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            blob = bytes(range(256)) * 4096  # 1 MiB, binary
            ws.send(blob)
            assert ws.recv(timeout=10) == blob
            for i in range(20):  # many small frames each way
                ws.send(f"m{i}")
            assert [ws.recv(timeout=10) for _ in range(20)] == [f"m{i}" for i in range(20)]
            assert lb.stats()["totals"]["tunnels"] == 1
        assert wait_until(lambda: lb.stats()["totals"]["tunnels"] == 0, 10)
        totals = lb.stats()["totals"]
        assert totals["tunnels_total"] == 1 and totals["responses"].get("101") == 1
        assert lb.stats()["backends"][0]["pool"]["idle"] == 0  # the tunnel's was not pooled
        metrics = lb.metrics()
        assert "gservers_lb_tunnels_total 1.0" in metrics
        assert "gservers_lb_open_tunnels 0.0" in metrics
    finally:
        lb.server.stop()


def test_websocket_echo_over_https(echo: WSServer, tmp_path: Path) -> None:
    """wss:// to the balancer (TLS ends there), ws:// to the backend."""
    certs = Certs(tmp_path / "tls")
    lb = start_lb(*certs.listen_args(), *RARE_HEALTH, backends=[port_of(echo)])
    try:
        with connect(f"wss://127.0.0.1:{lb.port}/chat", ssl=certs.client_context(),
                     open_timeout=10) as ws:
            ws.send("over tls")
            assert ws.recv(timeout=10) == "over tls"
            blob = b"\x00\xff" * 300000
            ws.send(blob)
            assert ws.recv(timeout=10) == blob
        assert wait_until(lambda: lb.stats()["totals"]["tunnels_total"] == 1, 10)
    finally:
        lb.server.stop()


def test_websocket_echo_to_an_https_backend(tmp_path: Path) -> None:
    """ws:// to the balancer, TLS from the balancer to the backend (its
    certificate verified against --backend-ca): the tunnel runs over the
    balancer's TLS client connection."""
    certs = Certs(tmp_path / "tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certs.cert), str(certs.key))
    server = serve(_echo, "127.0.0.1", 0, process_request=_health, ssl=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    lb = start_lb(*RARE_HEALTH, "--backend", f"https://127.0.0.1:{port_of(server)}",
                  "--backend-ca", str(certs.ca_file))
    try:
        with connect(f"ws://127.0.0.1:{lb.port}/chat", open_timeout=10) as ws:
            ws.send("to tls")
            assert ws.recv(timeout=10) == "to tls"
            blob = bytes(range(256)) * 4096  # 1 MiB: many TLS records each way
            ws.send(blob)
            assert ws.recv(timeout=10) == blob
            for i in range(20):
                ws.send(f"m{i}")
            assert [ws.recv(timeout=10) for _ in range(20)] == [f"m{i}" for i in range(20)]
        assert wait_until(lambda: lb.stats()["totals"]["tunnels"] == 0, 10)
        totals = lb.stats()["totals"]
        assert totals["tunnels_total"] == 1 and totals["responses"].get("101") == 1
        assert "Traceback" not in lb.server.log
    finally:
        lb.server.stop()
        server.shutdown()
        thread.join(10)


def test_an_idle_tunnel_is_closed_after_the_tunnel_timeout(echo: WSServer) -> None:
    lb = start_lb(*RARE_HEALTH, "--tunnel-timeout", "0.5", backends=[port_of(echo)])
    try:
        with connect(f"ws://127.0.0.1:{lb.port}/", open_timeout=10, ping_interval=None) as ws:
            ws.send("still here")
            assert ws.recv(timeout=10) == "still here"
            # then nothing either way: the balancer ends the tunnel by itself
            assert wait_until(lambda: lb.stats()["totals"]["tunnels"] == 0, 15)
    finally:
        lb.server.stop()


def test_a_plain_request_after_a_websocket_still_pools(echo: WSServer) -> None:
    """The tunnel took its own backend connection; plain requests keep working."""
    lb = start_lb(*RARE_HEALTH, backends=[port_of(echo)])
    try:
        with connect(f"ws://127.0.0.1:{lb.port}/", open_timeout=10) as ws:
            ws.send("a")
            assert ws.recv(timeout=10) == "a"
            with Client(lb.port) as c:  # a plain GET meanwhile: the server's health page
                assert c.request(get("/health")).status == 200
    finally:
        lb.server.stop()


def test_a_101_nobody_asked_for_is_a_502() -> None:
    def switch(req: Any) -> Reply:
        return Reply(head_bytes(101, "Switching Protocols",
                                [("Upgrade", "websocket"), ("Connection", "upgrade")]), ())
    origin = RecordingBackend(switch)
    lb: Balancer = start_lb(*RARE_HEALTH, backends=[origin.port])
    try:
        with Client(lb.port) as c:
            resp = c.request(get("/plain"))
            assert resp.status == 502, resp.raw_head
    finally:
        lb.server.stop()
        origin.stop()


def test_a_raw_upgrade_tunnels_bytes_the_balancer_does_not_parse() -> None:
    """Not WebSocket: any protocol after a 101 passes byte for byte, including
    bytes the backend sent in the same segment as its 101."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        while True:
            conn, _ = listener.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            if data.startswith(b"GET /health"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                conn.close()
                continue
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: toy\r\n"
                         b"Connection: upgrade\r\n\r\nHELLO\x00\xff")
            while chunk := conn.recv(4096):
                conn.sendall(chunk[::-1])  # the toy protocol: reverse what you hear
            conn.close()
            return

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    lb = start_lb(*RARE_HEALTH, backends=[port])
    try:
        with Client(lb.port) as c:
            resp = c.request(get("/", extra="Connection: upgrade\r\nUpgrade: toy\r\n"))
            assert resp.status == 101 and resp.header("Upgrade") == b"toy"
            assert resp.header("Connection") == b"upgrade"
            got = c.buf
            while len(got) < 7:
                got += c.sock.recv(100)
            assert got == b"HELLO\x00\xff"
            c.buf = b""
            c.sock.sendall(b"abc\x00")
            back = b""
            while len(back) < 4:
                back += c.sock.recv(100)
            assert back == b"\x00cba"
    finally:
        lb.server.stop()
        listener.close()
        thread.join(10)
