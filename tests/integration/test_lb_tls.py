# tests/integration/test_lb_tls.py -- HTTPS on both sides of the balancer.
#
# Strategy: a test CA made by trustme issues the certificates; the balancer
# runs as a real ``python -m lb`` process with --certfile/--keyfile, and the
# clients are the stdlib's ssl sockets verifying against the test CA (ALPN
# http/1.1), so the handshake, the certificate and the framing are checked
# as a real client sees them.  Behind it sits tests/recording_backend.py,
# plain or wrapped in TLS by ``TLSBackend`` (the stdlib's ssl in the
# backend's threads, nothing shared with the balancer's TLS code), which
# shows what the balancer sent: X-Forwarded-Proto, and how many connections
# (a pooled TLS connection is used again).  Failed handshakes are read from
# the balancer's log (one line each, never a traceback) with the balancer
# still serving afterwards.  One test drives gservers.net.tls.TLSSocket
# in-process for what no black-box client can force: decrypted bytes
# buffered inside the SSL object.  Timeouts are hang protection only.
from __future__ import annotations

import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import Certs
from tests.recording_backend import (
    Connection,
    RecordingBackend,
    Responder,
    close_delimited,
    fixed,
    held,
)
from tests.support import run_cli, start_lb, wait_until

HANG = 15.0                          #: socket timeout: only to stop a hang
RARE_HEALTH = ("--health-interval", "3600")
GET = b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls") / "main")


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Another CA's certificate: the wrong one for ``certs``' clients."""
    return Certs(tmp_path_factory.mktemp("tls") / "other")


class TLSBackend(RecordingBackend):
    """A RecordingBackend whose connections are TLS with ``certs``' certificate."""

    def __init__(self, certs: Certs, responder: Responder | None = None) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certs.issued.configure_cert(self.context)
        self.failed_handshakes = 0
        super().__init__(responder)

    def _serve(self, sock: socket.socket, conn: Connection) -> None:
        try:
            tls = self.context.wrap_socket(sock, server_side=True)
        except OSError:
            self.failed_handshakes += 1
            conn.closed = True
            sock.close()
            return
        super()._serve(tls, conn)


class TLSClient:
    """One HTTPS connection to the balancer, reading whole responses."""

    def __init__(self, port: int, certs: Certs, **wrap: object) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=HANG)
        self.sock = certs.client_context().wrap_socket(raw, server_hostname="localhost",
                                                       **wrap)  # type: ignore[arg-type]
        self.buf = b""

    def request(self, data: bytes = GET) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send ``data``, read one response: (status, headers, body)."""
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(b":") for line in lines[1:])}
        size = int(headers.get(b"content-length", b"0"))
        while len(self.buf) < size:
            self._more()
        body, self.buf = self.buf[:size], self.buf[size:]
        return int(lines[0].split()[1]), headers, body

    def _more(self) -> None:
        data = self.sock.recv(65536)
        assert data, f"closed mid-response; have {self.buf[:200]!r}"
        self.buf += data

    def read_to_end(self) -> bytes:
        chunks = [self.buf]
        while data := self.sock.recv(65536):
            chunks.append(data)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def origin() -> Iterator[RecordingBackend]:
    backend = RecordingBackend(fixed(b"hello"))
    yield backend
    backend.stop()


def totals(lb: object) -> dict:
    return lb.stats()["totals"]  # type: ignore[attr-defined]


# -- the HTTPS listener ------------------------------------------------------------

def test_get_and_post_over_https(certs: Certs, origin: RecordingBackend) -> None:
    lb = start_lb(*certs.listen_args(), *RARE_HEALTH, backends=[origin.port])
    try:
        client = TLSClient(lb.port, certs)
        assert client.sock.selected_alpn_protocol() == "http/1.1"
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        status, _, body = client.request()
        assert (status, body) == (200, b"hello")
        client.close()
        post = TLSClient(lb.port, certs)
        status, _, body = post.request(b"POST /form HTTP/1.1\r\nHost: t\r\n"
                                       b"Content-Length: 11\r\n\r\nhello world")
        assert (status, body) == (200, b"hello")
        post.close()
        get, sent = origin.wait_requests(2)
        assert (get.method, sent.method, sent.body) == (b"GET", b"POST", b"hello world")
        for req in (get, sent):
            assert req.all("X-Forwarded-Proto") == [b"https"]
            assert req.all("X-Forwarded-For") == [b"127.0.0.1"]
    finally:
        lb.server.stop()


def test_keep_alive_and_parking_over_tls(certs: Certs, origin: RecordingBackend) -> None:
    lb = start_lb(*certs.listen_args(), *RARE_HEALTH, "--keepalive-timeout", "30",
                  backends=[origin.port])
    try:
        client = TLSClient(lb.port, certs)
        assert client.request()[0] == 200
        # idle past PARK_AFTER: parked without a greenlet, then woken by the next request
        assert wait_until(lambda: totals(lb)["parked"] == 1), totals(lb)
        assert client.request()[0] == 200
        assert client.request()[0] == 200  # and a third, straight after
        assert len(origin.wait_requests(3)) == 3
        assert totals(lb)["client_connections"] == 1
        client.close()
        assert wait_until(lambda: totals(lb)["client_connections"] == 0), totals(lb)
    finally:
        lb.server.stop()


def test_a_close_delimited_response_ends_with_close_notify(certs: Certs) -> None:
    backend = RecordingBackend(close_delimited(b"to the end"))
    lb = start_lb(*certs.listen_args(), *RARE_HEALTH, backends=[backend.port])
    try:  # a client that does not take a bare FIN as the end (a truncation attack)
        client = TLSClient(lb.port, certs, suppress_ragged_eofs=False)
        client.sock.sendall(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        data = client.read_to_end()  # raises SSLEOFError without close_notify
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nto the end")
        client.close()
    finally:
        lb.server.stop()
        backend.stop()


def handshake_lines(lb: object, port: int) -> list[str]:
    log = lb.server.log  # type: ignore[attr-defined]
    return [line for line in log.splitlines() if f"TLS handshake with 127.0.0.1:{port} " in line]


def test_plain_http_to_the_tls_port(certs: Certs, origin: RecordingBackend) -> None:
    lb = start_lb(*certs.listen_args(), *RARE_HEALTH, backends=[origin.port])
    try:
        with socket.create_connection(("127.0.0.1", lb.port), timeout=HANG) as plain:
            port = plain.getsockname()[1]
            plain.sendall(GET)
            answer = b""
            while data := plain.recv(65536):
                answer += data
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"plain HTTP request sent to the HTTPS port" in answer
        assert wait_until(lambda: handshake_lines(lb, port)), lb.server.log
        assert len(handshake_lines(lb, port)) == 1
        assert "Traceback" not in lb.server.log
        assert TLSClient(lb.port, certs).request()[0] == 200  # still serving
        assert len(origin.requests) == 1  # the plain request never went on
    finally:
        lb.server.stop()


def test_a_silent_client_times_out_the_handshake(certs: Certs, origin: RecordingBackend) -> None:
    lb = start_lb(*certs.listen_args(), *RARE_HEALTH, "--handshake-timeout", "1",
                  backends=[origin.port])
    try:
        with socket.create_connection(("127.0.0.1", lb.port), timeout=HANG) as silent:
            port = silent.getsockname()[1]
            assert silent.recv(100) == b""  # closed by the balancer, not by the hang guard
        assert wait_until(lambda: handshake_lines(lb, port)), lb.server.log
        lines = handshake_lines(lb, port)
        assert len(lines) == 1 and "timed out" in lines[0], lines
        assert "Traceback" not in lb.server.log
        assert TLSClient(lb.port, certs).request()[0] == 200
    finally:
        lb.server.stop()


def test_two_workers_over_tls(certs: Certs, origin: RecordingBackend) -> None:
    # the key in the certificate file, no --keyfile
    lb = start_lb("--certfile", str(certs.both), *RARE_HEALTH, "--workers", "2",
                  backends=[origin.port], admin=False)
    try:
        assert lb.server.log.count("worker serving https://") == 2, lb.server.log
        for _ in range(6):
            client = TLSClient(lb.port, certs)
            assert client.request()[0] == 200
            client.close()
        assert len(origin.wait_requests(6)) == 6
    finally:
        lb.server.stop()


def test_sighup_reloads_the_certificate(certs: Certs, other: Certs, origin: RecordingBackend,
                                        tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(certs.cert.read_bytes())
    key.write_bytes(certs.key.read_bytes())
    config = tmp_path / "lb.toml"
    config.write_text(f'certfile = "{cert}"\nkeyfile = "{key}"\n'
                      f'backend = ["127.0.0.1:{origin.port}"]\nhealth-interval = 3600\n')
    lb = start_lb("--config", str(config))
    try:
        assert TLSClient(lb.port, certs).request()[0] == 200
        cert.write_bytes(other.cert.read_bytes())  # renewed: now the other CA's
        key.write_bytes(other.key.read_bytes())
        lb.server.signal(signal.SIGHUP)
        assert wait_until(lambda: "SIGHUP: reloaded" in lb.server.log), lb.server.log
        assert TLSClient(lb.port, other).request()[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            TLSClient(lb.port, certs)
    finally:
        lb.server.stop()


def test_a_stop_lets_a_tls_request_finish(certs: Certs) -> None:
    release = threading.Event()
    backend = RecordingBackend(held(release, fixed(b"late")))
    lb = start_lb(*certs.listen_args(), *RARE_HEALTH, backends=[backend.port])
    try:
        idle, busy = TLSClient(lb.port, certs), TLSClient(lb.port, certs)
        assert idle.request()[0] == 200
        busy.sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        assert wait_until(lambda: any(r.target == b"/slow" for r in backend.requests))
        lb.server.signal(signal.SIGTERM)
        assert idle.read_to_end() == b""  # the idle one is closed
        release.set()
        assert busy.request(b"")[::2] == (200, b"late")
        assert busy.read_to_end() == b""  # then closed, with close_notify
        assert lb.server.proc.wait(HANG) == 0
    finally:
        release.set()
        lb.server.stop()
        backend.stop()


# -- HTTPS backends --------------------------------------------------------------------

def test_an_https_backend_is_verified_pooled_and_health_checked(certs: Certs) -> None:
    backend = TLSBackend(certs, fixed(b"secret"))
    lb = start_lb("--backend", f"https://127.0.0.1:{backend.port}", "--backend-ca",
                  str(certs.ca_file), *RARE_HEALTH)
    try:
        backend.wait_health_check()  # over TLS: the backend speaks nothing else
        with socket.create_connection(("127.0.0.1", lb.port), timeout=HANG) as client:
            for _ in range(2):
                client.sendall(GET)
                data = b""
                while not data.endswith(b"secret"):
                    more = client.recv(65536)
                    assert more, data
                    data += more
                assert data.startswith(b"HTTP/1.1 200")
        requests = backend.wait_requests(2)
        assert [r.all("X-Forwarded-Proto") for r in requests] == [[b"http"]] * 2
        assert len(backend.proxied_connections()) == 1  # the second went on the pooled one
        assert backend.failed_handshakes == 0
    finally:
        lb.server.stop()
        backend.stop()


@pytest.mark.parametrize("wrong", ["CA", "hostname"])
def test_an_https_backend_that_does_not_verify_is_refused(certs: Certs, other: Certs,
                                                          tmp_path: Path, wrong: str) -> None:
    issued = other if wrong == "CA" else Certs(tmp_path, ("backend.example",))
    backend = TLSBackend(issued)
    ca = certs.ca_file if wrong == "CA" else issued.ca_file
    lb = start_lb("--backend", f"https://127.0.0.1:{backend.port}", "--backend-ca", str(ca),
                  *RARE_HEALTH)
    try:
        assert wait_until(lambda: "is down (health check failed: connect: TLS: certificate "
                                  "verify failed" in lb.server.log), lb.server.log
        with socket.create_connection(("127.0.0.1", lb.port), timeout=HANG) as client:
            client.sendall(GET)
            answer = client.recv(65536)
        assert answer.split(b" ")[1] in (b"502", b"503"), answer
        assert backend.requests == [] and backend.failed_handshakes >= 1
        assert "Traceback" not in lb.server.log
    finally:
        lb.server.stop()
        backend.stop()


def test_backend_insecure_accepts_an_unverified_backend(other: Certs) -> None:
    backend = TLSBackend(other, fixed(b"anyway"))  # the system's CAs know nothing of it
    lb = start_lb("--backend", f"https://127.0.0.1:{backend.port}", "--backend-insecure",
                  *RARE_HEALTH)
    try:
        assert "--backend-insecure" in lb.server.log and "NOT verified" in lb.server.log
        with socket.create_connection(("127.0.0.1", lb.port), timeout=HANG) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while more := client.recv(65536):
                data += more
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"anyway"), data
    finally:
        lb.server.stop()
        backend.stop()


# -- bad TLS flags: one line naming the file, exit 2 -------------------------------------

def bad_tls_cases(certs: Certs, other: Certs,
                  folder: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (flags, what the error line must say: the file first)."""
    missing = str(folder / "absent.pem")
    cert, key, ca = str(certs.cert), str(certs.key), str(certs.ca_file)
    return {
        "no key in the certificate file": (["--certfile", cert], [cert, "no private key"]),
        "missing certificate file": (["--certfile", missing], [missing, "No such file"]),
        "a directory as certificate": (["--certfile", str(folder)], [str(folder), "directory"]),
        "missing key file": (["--certfile", cert, "--keyfile", missing],
                             [missing, "No such file"]),
        "not a key": (["--certfile", cert, "--keyfile", ca], [ca, "no PEM private key"]),
        "not a certificate": (["--certfile", key, "--keyfile", key], [key, "no PEM certificate"]),
        "key of another certificate": (["--certfile", cert, "--keyfile", str(other.key)],
                                       [str(other.key), "does not match", cert]),
        "key without certificate": (["--keyfile", key], ["--keyfile", "needs --certfile"]),
        "missing CA file": (["--backend", "https://127.0.0.1:9", "--backend-ca", missing],
                            [missing, "No such file"]),
        "not a CA file": (["--backend", "https://127.0.0.1:9", "--backend-ca", key],
                          [key, "no PEM CA certificate"]),
        "two workers, no key": (["--workers", "2", "--certfile", cert],
                                [cert, "no private key"]),
    }


CASES = ["no key in the certificate file", "missing certificate file",
         "a directory as certificate", "missing key file", "not a key", "not a certificate",
         "key of another certificate", "key without certificate", "missing CA file",
         "not a CA file", "two workers, no key"]


@pytest.mark.parametrize("case", CASES)
def test_bad_tls_flags(certs: Certs, other: Certs, tmp_path: Path, case: str) -> None:
    argv, words = bad_tls_cases(certs, other, tmp_path)[case]
    result = run_cli("lb", "--listen", "127.0.0.1:0", "--admin", "off", *argv)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m lb: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


# -- TLSSocket itself: bytes the SSL object holds -----------------------------------------

def test_decrypted_bytes_inside_the_ssl_object_count_as_readable(certs: Certs) -> None:
    """After a short read the rest of a TLS record waits decrypted inside the
    SSL object, where no watcher on the descriptor sees it: readable() (what
    parking and the upstream pool ask) and recv_later() must look there."""
    from gservers.net import tls
    listener = socket.create_server(("127.0.0.1", 0))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.issued.configure_cert(context)

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as peer:
            peer.sendall(b"x" * 100)  # one record
            peer.recv(1)  # hold the connection open until the client is done

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = tls.connect(socket.AF_INET, listener.getsockname(), HANG,
                         certs.client_context(), "127.0.0.1")
    try:
        client.settimeout(2.0)
        assert client.recv(10) == b"x" * 10
        assert client.readable()
        assert client.recv_later(1000) == b"x" * 90  # no wait: it would time out
        assert not client.readable()
    finally:
        client.close()
        thread.join(HANG)
        listener.close()
