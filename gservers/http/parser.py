# gservers/http/parser.py -- bytes in, message events out: requests, and what both parsers share.
#
# Strategy: no sockets here.  Bytes go in through ``feed()``, events come out
# (a message head, body data, end of message: gservers.http.messages).  The
# tokenising is done by httptools (llhttp, the parser behind Node.js): it is
# strict by default (RFC 9112: CRLF only, no obs-fold, no CL+TE, no duplicate
# Content-Length, no bad chunk sizes) and several times faster than a
# pure-Python parser such as h11 (scripts/bench_parser.py measures it).
# What llhttp leaves to us we check here, once, when a head completes: the
# size limits (414, 431), the versions we speak (505), the transfer codings
# we implement (501), Host on HTTP/1.1 (400), the request-target (400,
# gservers.http.targets).  llhttp refuses BWS in chunk extensions, so
# RequestParser feeds it bytes cut and re-stated by gservers.http.chunked.
# Every error carries the status a server should answer with; after an
# error the parser is dead and the connection must close.  The response
# parser builds on the same machinery (gservers.http.response_parser).
from __future__ import annotations

import re
from typing import Any

import httptools

from gservers.http.chunked import Cuts
from gservers.http.messages import END, Data, End, Event, Head, HttpError, Limits, Rejected
from gservers.http.targets import CHECKED, check_target

_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
#: Headers the parser takes note of as they go by.
_NOTED = _FRAMING | {b"host", b"connection"}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?: |\Z)")
# Host = uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2); empty is allowed.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?\Z")


def _classify(exc: Exception, message_start: bytes) -> HttpError:
    """Turn an llhttp error into the status a server should answer with.

    ``message_start`` holds the first bytes of the failing message: an
    unknown but well-formed method token is a 501, anything else a 400."""
    text = str(exc)
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        if _TOKEN.match(message_start):
            return HttpError(501, "method not implemented")
        return HttpError(400, "malformed request line")
    if "invalid `Transfer-Encoding`" in text:
        # chunked is not the final coding: the length cannot be known (RFC 9112 6.3)
        return HttpError(400, "chunked must be the final transfer coding")
    return HttpError(400, text.strip().rstrip(".") or "malformed message")


def _message_tail(data: bytes, completed: bool) -> bytes:
    """The bytes of ``data`` that belong to the message still being parsed:
    all of it, or what follows the last completed head when one ended here."""
    if not completed:
        return data
    end = data.rfind(b"\r\n\r\n")
    return data[end + 4:] if end >= 0 else b""


class _Parser:
    """Shared machinery of the request and response parsers."""

    _kind: type = httptools.HttpRequestParser

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._max_head = limits.max_head
        self._max_headers = limits.max_headers
        # llhttp's parser is made on the first feed: an idle connection that
        # never sends a byte costs no parser.
        self._p: Any = None
        self._events: list[Event] = []
        self._in_head = False
        self._in_message = False
        self._head_bytes = 0
        self._raw_head = 0
        self._carry = b""
        self._target: list[bytes] = []
        self._target_len = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._framing_headers: list[tuple[bytes, bytes]] = []
        self._hosts = 0
        self._host = b""
        self._connection: list[bytes] = []
        self.dead = False

    @property
    def in_message(self) -> bool:
        """True between the first byte of a message and its end."""
        return self._in_message

    @property
    def in_head(self) -> bool:
        """True while a message head has begun but not completed."""
        return self._in_head

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``; return the events it completes, in order.

        After a ``Rejected`` event (always the last) the parser is dead."""
        if self.dead:
            return []
        events = self._events = []
        head_before = self._in_head
        if self._p is None:
            self._p = self._new()
        try:
            self._p.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            return self._upgraded(data, exc.args[0] if exc.args else len(data))
        except HttpError as exc:
            self._fail(exc)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, HttpError)
                       else HttpError(400, "malformed message"))
        except httptools.HttpParserError as exc:
            completed = any(type(e) is End for e in events)
            start = (b"" if completed else self._carry) + _message_tail(data, completed)
            self._fail(_classify(exc, start))
        else:
            if self._in_head:
                if head_before:
                    # Still no end of head after a whole further chunk: count it,
                    # so that a never-ending header line cannot grow without bound.
                    self._raw_head += len(data)
                    if self._raw_head > 2 * self.limits.max_head:
                        self._fail(HttpError(431, "request header fields too large"))
                if not self._target_len and not self._headers:  # still in the method
                    completed = any(type(e) is End for e in events)
                    self._carry = ((b"" if completed or not head_before else self._carry)
                                   + _message_tail(data, completed))[:64]
        return events

    def _upgraded(self, data: bytes, offset: int) -> list[Event]:
        """llhttp stopped after a request asking to Upgrade (or CONNECT).  We
        implement no upgrades, so the request is served as an ordinary one
        (RFC 9110 7.8) -- unless it declared a body, which llhttp skipped:
        parsing on would read that body as the next request, so refuse it."""
        events = self._events
        head = next((e for e in reversed(events) if type(e) is Head), None)
        if head is not None and (head.chunked or head.content_length):
            while events and type(events[-1]) is not Head:
                events.pop()
            events.pop()
            self._fail(HttpError(400, "Upgrade with a request body is not supported"))
            return events
        self._reset()
        rest = data[offset:]
        return events + (self.feed(rest) if rest else [])

    def _fail(self, error: HttpError) -> None:
        self.dead = True
        self._events.append(Rejected(error))

    def release(self) -> None:
        """Drop the llhttp parser once the stream is done with: it refers
        back to this object, a cycle that only the garbage collector would
        otherwise free (memory piling up between collections)."""
        self._p = None
        self.dead = True

    def _new(self) -> Any:
        return self._kind(self)

    def _reset(self) -> None:
        self._p = self._new()
        self._in_head = self._in_message = False

    # -- llhttp callbacks -------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = self._in_message = True
        self._head_bytes = 0
        self._raw_head = 0
        self._carry = b""
        self._target = []
        self._target_len = 0
        self._headers = []
        self._framing_headers = []
        self._hosts = 0
        self._host = b""
        self._connection = []

    def on_url(self, part: bytes) -> None:
        self._target_len += len(part)
        if self._target_len > self.limits.max_target:
            raise HttpError(414, "request-target too long")
        self._target.append(part)

    def on_header(self, name: bytes, value: bytes) -> None:
        # The hottest callback (every header of every message): locals only.
        size = self._head_bytes + len(name) + len(value) + 4
        self._head_bytes = size
        headers = self._headers
        if size > self._max_head or len(headers) >= self._max_headers:
            raise HttpError(431, "request header fields too large")
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace (OWS)
        headers.append((name, value))
        lname = name.lower()
        if lname not in _NOTED:
            return
        if lname in _FRAMING:
            self._framing_headers.append((lname, value))
        elif lname == b"host":
            self._hosts += 1
            self._host = value
        elif lname == b"connection":
            self._connection.extend(t.strip().lower() for t in value.split(b",") if t.strip())

    def on_body(self, data: bytes) -> None:
        if data:
            self._events.append(Data(data))

    def on_message_complete(self) -> None:
        self._in_message = False
        self._events.append(END)

    def _framing(self) -> tuple[bool, int | None]:
        """Validate the body framing headers; return (chunked, content_length)."""
        codings: list[bytes] = []
        lengths: list[bytes] = []
        for lname, value in self._framing_headers:
            if lname == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b","))
            elif lname == b"content-length":
                lengths.append(value)
        if codings:
            if lengths:
                raise HttpError(400, "both Content-Length and Transfer-Encoding")
            if codings[-1] != b"chunked":
                raise HttpError(400, "chunked must be the final transfer coding")
            if codings.count(b"chunked") != 1:
                raise HttpError(400, "chunked applied more than once")
            if len(codings) != 1:
                raise HttpError(501, "transfer coding not implemented")
            return True, None
        if len(lengths) > 1:
            raise HttpError(400, "more than one Content-Length")
        if lengths:
            value = lengths[0].strip()
            if not value.isdigit():
                raise HttpError(400, "invalid Content-Length")
            return False, int(value)
        return False, None


class RequestParser(_Parser):
    """Parses a stream of (possibly pipelined) HTTP/1.x requests."""

    _kind = httptools.HttpRequestParser
    _cuts: Cuts | None = None  # while bytes must be cut: a split head, a body, pipelining

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``; return the events it completes (see _Parser.feed)."""
        if self._cuts is None and not self._in_head and data.find(b"\r\n\r\n") == len(data) - 4:
            return _Parser.feed(self, data)  # one whole head: nothing to cut
        events: list[Event] = []
        while data and not self.dead:
            cuts = self._cuts
            if cuts is None:
                cuts = self._cuts = Cuts(self._max_head)
            data, rest = cuts.piece(data, self._in_head)
            events += _Parser.feed(self, data)
            if cuts.error is not None and not self.dead:  # a malformed chunked body
                self.dead = True
                events.append(Rejected(cuts.error))
            data = rest
        if self._cuts is not None and self._cuts.idle and not self._in_head:
            self._cuts = None
        return events

    def _new(self) -> Any:
        parser = self._kind(self)
        parser.set_dangerous_leniencies(lenient_version=True)
        return parser

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self._p
        version = p.get_http_version()
        if version != "1.1" and version != "1.0":
            # RFC 9110 2.5: a later HTTP/1.x minor is served as HTTP/1.1;
            # llhttp parses any digits here so that we can decide.
            if not version.startswith("1.") or not version[2:].isdigit():
                raise HttpError(505, "HTTP version not supported")
            version = "1.1"
        hosts = self._hosts
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise HttpError(400, "exactly one Host header is required")
        if hosts and not _HOST.match(self._host):
            raise HttpError(400, "invalid Host header")
        method, target = p.get_method(), b"".join(self._target)
        if method == b"CONNECT" or target not in CHECKED:  # most targets come again
            check_target(method, target)
        chunked, length = self._framing() if self._framing_headers else (False, None)
        # HTTP/1.0 has no chunked coding: answer, then close (RFC 9112 6.1).
        keep_alive = p.should_keep_alive() and not (chunked and version == "1.0")
        self._events.append(Head(
            method, target, 0, version, tuple(self._headers),
            keep_alive, chunked, length, tuple(self._connection),
        ))
        if chunked or length:  # a body follows: fed apart (gservers.http.chunked)
            self._cuts = self._cuts or Cuts(self._max_head)
            self._cuts.body(chunked, length)
