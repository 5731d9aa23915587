# gservers/http/messages.py -- what the HTTP/1.1 framing produces: heads, body
# data, ends, rejections and the errors that carry a status.
#
# Strategy: plain immutable values with no behaviour beyond header lookup,
# shared by the parser (gservers/http.py), the writers, the backends and the
# balancer.  A Head is a named tuple: a proxied request makes two, and a
# named tuple is made several times faster than a frozen dataclass.
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

Headers = tuple[tuple[bytes, bytes], ...]

#: Headers that describe one hop, never forwarded by a proxy (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})


class HttpError(Exception):
    """A protocol error, carrying the status a server should answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Bounds on what one message head may hold."""

    max_target: int = 8192        #: request-target bytes before 414
    max_head: int = 32768         #: request line + header section bytes before 431
    max_headers: int = 100        #: header fields before 431


class Head(NamedTuple):
    """A request or response head.  ``method`` is empty for responses,
    ``status`` is 0 for requests.  (A named tuple: immutable like the other
    events, and made several times faster than a frozen dataclass, which
    counts at two heads per proxied request.)"""

    method: bytes
    target: bytes
    status: int
    version: str
    headers: Headers
    keep_alive: bool
    chunked: bool
    content_length: int | None
    #: The Connection header's tokens, lower-cased (gathered while parsing,
    #: since a proxy needs them for every message).
    connection: tuple[bytes, ...] = ()

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``default``."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default

    def tokens(self, name: bytes) -> list[bytes]:
        """Comma-separated, lower-cased tokens of every ``name`` header."""
        out: list[bytes] = []
        for key, value in self.headers:
            if key.lower() == name:
                out.extend(t.strip().lower() for t in value.split(b",") if t.strip())
        return out


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of a message body, with any transfer coding removed."""

    data: bytes


@dataclass(frozen=True, slots=True)
class End:
    """The end of a message."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The stream is malformed; answer ``error.status`` and close."""

    error: HttpError


Event = Head | Data | End | Rejected
END = End()
