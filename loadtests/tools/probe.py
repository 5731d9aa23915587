# loadtests/tools/probe.py -- the size of one full response, the yardstick of every run.
#
# Strategy: a run is valid only when it transferred requests x one full
# response, so the tooling first sends the very request its load generator
# sends (each tool module builds its own bytes) and counts what comes back:
# the head and a Content-Length body, or everything up to the close when
# there is no Content-Length.
from __future__ import annotations

import re
import socket
import ssl

_LENGTH_RE = re.compile(rb"\r\ncontent-length: *(\d+)", re.I)


def response_size(host: str, port: int, request: bytes, timeout: float = 10.0,
                  tls: bool = False) -> int:
    """Bytes of the one full response ``host:port`` sends to ``request``
    (over TLS when ``tls``, the certificate unchecked, as ab does)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    with sock:
        sock.sendall(request)
        data = b""
        while True:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                match = _LENGTH_RE.search(data[:head_end])
                if match and len(data) >= head_end + 4 + int(match.group(1)):
                    return head_end + 4 + int(match.group(1))
            chunk = sock.recv(65536)
            if not chunk:
                return len(data)
            data += chunk
