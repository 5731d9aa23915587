# gservers/http/response_parser.py -- a backend's response: bytes in, message events out.
#
# Strategy: the machinery of gservers.http.parser (llhttp through httptools,
# the same limits and events) with what only a response needs: interim (1xx)
# heads before the final one, the methods and statuses whose responses have
# no body whatever their headers say (HEAD, 204, 304), a body read until the
# connection closes, a 101 taken only when the request asked to upgrade
# (the bytes after it kept for the tunnel), and every error turned into a
# 502, the status a proxy answers for a bad upstream response.  A parser
# whose response ended cleanly is made ready for the next one with
# ``expect`` rather than made anew.
from __future__ import annotations

import httptools

from gservers.http.messages import END, Event, Head, HttpError, Limits, Rejected
from gservers.http.parser import _Parser


class ResponseParser(_Parser):
    """Parses one HTTP/1.x response to a request made with ``method``,
    with any interim (1xx) responses before it: each comes as a Head with
    its status and an End.

    A final response to HEAD, and a 204 or 304, has no body whatever its
    headers say, which llhttp cannot be told, so parsing stops at the end of
    such a head and the parser is dead.  After any other keep-alive response
    that ended cleanly, ``expect`` readies it for the next response on the
    same (or another, fresh) stream: making an llhttp parser costs about as
    much as parsing a short response."""

    _kind = httptools.HttpResponseParser

    def __init__(self, method: bytes = b"GET", limits: Limits = Limits(),
                 upgrade: bool = False) -> None:
        super().__init__(limits)
        self._head_only = method == b"HEAD"
        self._until_close = False
        self._upgrade = upgrade
        self.status = 0
        #: After a 101 to a request that asked to upgrade: the bytes that came
        #: after its head (the new protocol's first); the parser is then done.
        self.tunnel: bytes | None = None

    def expect(self, method: bytes, upgrade: bool = False) -> None:
        """Parse the next response, to a request made with ``method``
        (only after a keep-alive response ended, not dead); ``upgrade``: the
        request asked to switch protocols, so a 101 is its answer."""
        self._head_only = method == b"HEAD"
        self._until_close = False
        self._upgrade = upgrade
        self.status = 0

    def on_url(self, part: bytes) -> None:  # pragma: no cover - llhttp never calls it
        pass

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self._p
        version = p.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HttpError(502, "upstream spoke an unsupported HTTP version")
        self.status = status = p.get_status_code()
        if status < 200:
            # An interim response (100, 103...): no body; llhttp then parses
            # the next response on the same stream.  A 101 switches protocols:
            # the answer to a request that asked to upgrade (then the head
            # and an End come, and _upgraded keeps what follows), else wrong.
            if status == 101 and not self._upgrade:
                raise HttpError(502, "unexpected 101 Switching Protocols")
            if status == 101 and b"upgrade" not in self._connection:  # RFC 9110 7.8
                raise HttpError(502, "101 Switching Protocols without Connection: upgrade")
            self._events.append(Head(b"", b"", status, version, tuple(self._headers),
                                     True, False, None, tuple(self._connection)))
            return
        try:
            chunked, length = self._framing()
        except HttpError as exc:
            raise HttpError(502, f"upstream framing: {exc.reason}") from None
        self._events.append(Head(
            b"", b"", status, version, tuple(self._headers),
            p.should_keep_alive(), chunked, length, tuple(self._connection),
        ))
        self._until_close = not chunked and length is None
        if self._head_only or status in (204, 304):
            self._in_message = False
            self._events.append(END)
            self.dead = True
            raise _HeadOnly()

    def _upgraded(self, data: bytes, offset: int) -> list[Event]:
        """llhttp stopped after a 101 head: the rest of ``data`` is the new
        protocol's, kept in ``tunnel``; this parser is done."""
        if self.status != 101 or not self._upgrade:  # pragma: no cover - llhttp pauses on 101 only
            self._fail(HttpError(502, "unexpected protocol switch"))
            return self._events
        self.tunnel = data[offset:]
        self.dead = True
        self._in_message = False
        return self._events

    def _fail(self, error: HttpError) -> None:
        if isinstance(error, _HeadOnly):
            self.dead = True
            return
        if error.status < 500:
            error = HttpError(502, f"bad upstream response: {error.reason}")
        super()._fail(error)

    def finish(self) -> list[Event]:
        """The upstream closed: end a read-until-close body, or reject."""
        if not self._in_message or self.dead:
            return []
        self.dead = True
        if self._until_close:
            self._in_message = False
            return [END]
        return [Rejected(HttpError(502, "upstream closed mid-response"))]


class _HeadOnly(HttpError):
    def __init__(self) -> None:
        super().__init__(0, "head only")
