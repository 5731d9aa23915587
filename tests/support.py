# tests/support.py -- real processes and raw sockets for the tests.
#
# Strategy: every server under test is started through its real command line
# on port 0 by loadtests.supervisor, which reads the port from the
# "listening on http://HOST:PORT" line it logs and ends it by its own PID
# only; the names here are that supervisor's, as the tests use them.  Raw
# clients speak bytes over 127.0.0.1 so that tests see exactly what a server
# sent.
from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The supervisor's names, as the tests import them from here.
from gservers.net.listen import only_time_wait
from loadtests.supervisor import ADMIN_RE as ADMIN_RE
from loadtests.supervisor import LISTEN_RE as LISTEN_RE
from loadtests.supervisor import Balancer, Supervisor, python, spawn, wait_listening
from loadtests.supervisor import Process as Server
from loadtests.supervisor import free_ports as free_ports
from loadtests.supervisor import wait_until as wait_until

ROOT = Path(__file__).resolve().parent.parent


def start(module: str, *args: str, timeout: float = 20.0, env: dict | None = None,
          preexec_fn: Callable[[], None] | None = None) -> Server:
    """Start ``python -m module args`` and wait for its listening line;
    ``preexec_fn`` runs in the child before exec (e.g. to set rlimits).
    Raises supervisor.StartError (a RuntimeError) with its output."""
    proc = spawn(f"{module} {' '.join(args)}", python(module, *args), env=env, cwd=str(ROOT),
                 preexec_fn=preexec_fn)
    return wait_listening(proc, timeout)


def start_backend(model: str = "async", *args: str) -> Server:
    """A backend of ``model`` on a free port."""
    return start("gservers.backend", "--model", model, "0", *args)


def run_cli(module: str, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run a command line to completion (for flag and config errors)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def connect(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    return sock


def exchange(port: int, data: bytes, timeout: float = 10.0, host: str = "127.0.0.1") -> bytes:
    """Send ``data``, then read until the server closes (or ``timeout``)."""
    with connect(port, host, timeout) as sock:
        sock.sendall(data)
        return read_all(sock, timeout)


def send_and_read(port: int, data: bytes, timeout: float = 10.0,
                  half_close: bool = False) -> tuple[bytes, bool]:
    """Send ``data`` on a fresh connection and read until EOF; return (bytes,
    whether EOF came before ``timeout``).  A reset counts as a close (what was
    read before it is kept); a server that refuses early and closes while we
    still send is read all the same."""
    with connect(port, timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks: list[bytes] = []
        while True:
            try:
                block = sock.recv(65536)
            except TimeoutError:
                return b"".join(chunks), False
            except ConnectionResetError:
                return b"".join(chunks), True
            if not block:
                return b"".join(chunks), True
            chunks.append(block)


class HeaderAccess:
    """Header look-ups for anything with ``headers: list[(name, value)]``."""

    headers: list[tuple[bytes, bytes]]

    def header(self, name: str) -> bytes | None:
        """The first value of header ``name`` (any case), or None."""
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[bytes]:
        """Every value of header ``name`` (any case), in order."""
        lname = name.lower().encode()
        return [v for k, v in self.headers if k.lower() == lname]

    def names(self) -> set[bytes]:
        """The lower-cased header names present."""
        return {k.lower() for k, _ in self.headers}


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read until EOF or until ``timeout`` passes with nothing read."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


@dataclass
class Reply:
    """One response as received."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> bytes | None:
        lname = name.lower().encode()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


def parse_responses(data: bytes, methods: list[bytes]) -> list[Reply]:
    """Split ``data`` into responses to requests made with ``methods``."""
    out: list[Reply] = []
    pos = 0
    for method in methods:
        if pos >= len(data):
            break
        start = pos
        end = data.index(b"\r\n\r\n", pos)
        head = data[pos:end]
        lines = head.split(b"\r\n")
        _, status, reason = (lines[0].split(b" ", 2) + [b""])[:3]
        headers = [tuple(x.strip() for x in line.split(b":", 1)) for line in lines[1:]]
        pos = end + 4
        reply_headers = [(k, v) for k, v in headers]
        lookup = {k.lower(): v for k, v in reply_headers}
        code = int(status)
        if method == b"HEAD" or code in (204, 304) or 100 <= code < 200:
            body = b""
        elif b"content-length" in lookup:
            n = int(lookup[b"content-length"])
            body = data[pos:pos + n]
            pos += n
        elif lookup.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                eol = data.index(b"\r\n", pos)
                size = int(data[pos:eol].split(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    pos = data.index(b"\r\n", pos) + 2
                    break
                parts.append(data[pos:pos + size])
                pos += size + 2
            body = b"".join(parts)
        else:
            body = data[pos:]
            pos = len(data)
        out.append(Reply(code, reason, reply_headers, body, data[start:pos]))
    return out


def strip_date(raw: bytes) -> bytes:
    """A response with its Date header value blanked, for byte comparisons."""
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", raw)




def wait_port_closed(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


def start_lb(*args: str, backends: list[int] | None = None, admin: bool = True,
             timeout: float = 30.0, env: dict[str, str] | None = None) -> Balancer:
    """``python -m lb`` on a free port over ``backends`` (ports on 127.0.0.1),
    with its admin listener on a free port too (unless ``admin`` is False);
    ``env``: added to the environment."""
    return Supervisor().balancer(*args, backends=backends or [], admin=admin, timeout=timeout,
                                 cwd=str(ROOT), env=env)


def get_status(port: int, target: str = "/", source: str = "127.0.0.1") -> int:
    """GET ``target`` on a fresh connection from address ``source``; the
    status (0: no answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20,
                                  source_address=(source, 0)) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        replies = parse_responses(read_all(sock, 20), [b"GET"])
    return replies[0].status if replies else 0


def stop_clean(lb: Balancer) -> None:
    """Stop a balancer and check it stopped cleanly: exit code 0, no traceback."""
    code = lb.server.stop()
    assert "Traceback" not in lb.server.log, lb.server.log
    assert code == 0


def time_wait_port() -> int:
    """A port of 127.0.0.1 that only a TIME_WAIT socket holds, nothing
    listening: a client socket bound to it without SO_REUSEADDR (as the
    ephemeral port connect() picks is) connects to a listener of ours on
    another port and closes first, so its end lingers in TIME_WAIT for a
    minute.  On Linux that blocks a listener's bind even with SO_REUSEADDR."""
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client.bind(("127.0.0.1", 0))
        port = client.getsockname()[1]
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
        with accepted:
            client.close()  # the client's end closes first: it is the one to wait
            assert accepted.recv(1) == b""
    deadline = time.monotonic() + 10
    while not only_time_wait(port):  # the client's end: FIN_WAIT2, then TIME_WAIT
        assert time.monotonic() < deadline, f"port {port} never went to TIME_WAIT alone"
        time.sleep(0.02)
    return port
