# tests/raw_client.py -- a raw client of the balancer that reads one response at a time.
#
# Strategy: a plain socket speaks bytes, and a small parser of its own
# (sharing nothing with gservers.http) reads exactly one response -- by
# Content-Length, chunked framing, close, or none for HEAD/1xx/204/304 --
# so a test sees framing and connection reuse as a client receives them.
from __future__ import annotations

import socket
from dataclasses import dataclass

from tests.support import HeaderAccess

HANG = 15.0          #: socket timeout: only to stop a hang


@dataclass
class Response(HeaderAccess):
    status: int
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw_head: bytes
    framing: str             #: "length", "chunked", "close" or "none"


class Client:
    """One client connection to the balancer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=HANG)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        self.buf += data
        return bool(data)

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise EOFError(f"closed while waiting for {marker!r}; have {self.buf[:200]!r}")
        end = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def _exactly(self, n: int) -> bytes:
        parts, have = [self.buf], len(self.buf)
        while have < n:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError(f"closed with {have} of {n} bytes")
            parts.append(data)
            have += len(data)
        joined = b"".join(parts)
        out, self.buf = joined[:n], joined[n:]
        return out

    def read_response(self, method: bytes = b"GET") -> Response:
        """The next response (a 1xx is returned on its own)."""
        raw_head = self._until(b"\r\n\r\n")
        lines = raw_head[:-4].split(b"\r\n")
        version, status_text = lines[0].split(b" ", 2)[:2]
        status = int(status_text)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            assert name and name == name.strip(), f"malformed header line {line!r}"
            headers.append((name, value.strip()))
        lookup = {k.lower(): v for k, v in headers}
        if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
            return Response(status, version, headers, b"", raw_head, "none")
        if b"transfer-encoding" in lookup:
            assert lookup[b"transfer-encoding"].lower() == b"chunked"
            assert b"content-length" not in lookup, "both Content-Length and chunked"
            parts = []
            while True:
                size = int(self._until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    while self._until(b"\r\n") != b"\r\n":
                        pass
                    break
                parts.append(self._exactly(size))
                assert self._exactly(2) == b"\r\n"
            return Response(status, version, headers, b"".join(parts), raw_head, "chunked")
        if b"content-length" in lookup:
            body = self._exactly(int(lookup[b"content-length"]))
            return Response(status, version, headers, body, raw_head, "length")
        parts = [self.buf]
        while data := self.sock.recv(1 << 16):
            parts.append(data)
        body, self.buf = b"".join(parts), b""
        return Response(status, version, headers, body, raw_head, "close")

    def request(self, data: bytes, method: bytes = b"GET") -> Response:
        self.send(data)
        return self.read_response(method)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the balancer closes the connection with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            return not self.buf and self.sock.recv(1) == b""
        except ConnectionResetError:
            return not self.buf
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(HANG)

    def nothing_more(self, wait: float = 0.3) -> bool:
        """True when nothing further arrives within ``wait`` (and no EOF)."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            self.sock.recv(1)
            return False
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(HANG)


def get(path: str = "/", host: str = "example.test", extra: str = "") -> bytes:
    """The bytes of a GET request for ``path`` (``extra``: more header lines)."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
