# gservers/http/responses.py -- responses before and after framing, no sockets.
#
# Strategy: a Response is what a handler decides (status, headers, a body or
# a file to stream, whether to close); ``frame`` turns it into the status line
# and headers every response of ours carries (Date, Server, Connection), so
# the backends and the balancer answer in the same shape.  Errors become a
# short text/plain Response carrying the HttpError's status and reason.
from __future__ import annotations

from dataclasses import dataclass

from gservers.http.messages import Head, Headers, HttpError
from gservers.http.writers import http_date, status_line

#: What a backend's responses name in their Server header.
SERVER = b"gservers/0.1"
#: The methods the backends serve, named by 405 answers (RFC 9110 15.5.6).
ALLOW = b"GET, HEAD, POST, OPTIONS"
#: The interim answer to ``Expect: 100-continue``.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Response:
    """A response before framing: the connection adds Date, Server and
    Connection.  ``path`` names a file to stream after the head instead of
    ``body``: ``count`` bytes of it from ``offset`` (None: to its end);
    ``close`` asks the connection to close after sending it.  ``framed``,
    when given, is ``headers`` already serialised (``header_lines``), for an
    answer made once and sent many times."""

    status: int
    headers: Headers
    body: bytes = b""
    path: str | None = None
    close: bool = False
    offset: int = 0
    count: int | None = None
    framed: bytes | None = None


def header_lines(headers: Headers) -> bytes:
    """``Name: value\r\n`` for each header, as ``frame`` writes them."""
    return b"".join(b"%s: %s\r\n" % kv for kv in headers)


def error_response(error: HttpError, close: bool = True) -> Response:
    """A short text/plain answer for ``error``."""
    body = b"%d %s\n" % (error.status, error.reason.encode("ascii", "replace"))
    headers: Headers = ((b"Content-Type", b"text/plain; charset=utf-8"),
                        (b"Content-Length", b"%d" % len(body)))
    if error.status == 405:
        headers += ((b"Allow", ALLOW),)
    return Response(error.status, headers, body, close=close)


def expects_continue(head: Head) -> bool:
    """Whether the client waits for 100 Continue before sending its body
    (RFC 9110 10.1.1; never to an HTTP/1.0 client, 15.2)."""
    return (bool(head.chunked or head.content_length) and head.version == "1.1"
            and b"100-continue" in head.tokens(b"expect"))


def frame(response: Response, head: Head | None, keep_alive: bool,
          server: bytes = SERVER) -> bytes:
    """Status line and headers for ``response`` (Date, Server, Connection added)."""
    parts = [status_line(response.status), b"Date: ", http_date(), b"\r\nServer: ", server, b"\r\n"]
    if response.framed is None:
        parts.extend(b"%s: %s\r\n" % kv for kv in response.headers)
    else:
        parts.append(response.framed)
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif head is not None and head.version == "1.0":
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
