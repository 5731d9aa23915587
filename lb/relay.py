# lb/relay.py -- a backend's response, relayed to the client as it arrives.
#
# Strategy: a Relay lives for one response.  Each read from the backend is
# fed to the connection's ResponseParser, and the events it completes become
# one write to the client: interim (1xx) heads go on to HTTP/1.1 clients, the
# final head is re-stated for the client (lb.rewrite), and a body with no
# length is re-chunked for an HTTP/1.1 client (an HTTP/1.0 one gets it
# close-delimited), so bodies of any size stream through without being held.
# What the parser does not track -- re-chunking, keep-alive on either side,
# an interim response open -- is the Relay's own state.  This runs for every
# request, so it stays lean: the Relay is also its attempt's Outcome (one
# object per response), and each read costs one parse and at most one send.
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gservers.http import (
    LAST_CHUNK,
    Data,
    End,
    Event,
    Head,
    HttpError,
    ResponseParser,
    chunk,
    has_body,
)
from gservers.net.stream import RECV_SIZE, set_nodelay
from lb.backends import Backends, BackendState
from lb.bodies import ClientGone
from lb.rewrite import client_response

#: Methods a backend that closed before answering may be asked again.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})


@dataclass
class Outcome:
    """How one attempt at a backend ended."""

    sent: int = 0                 #: response bytes sent to the client
    status: int = 0
    retry: bool = False           #: nothing reached the client and the request may be replayed
    error: HttpError | None = None
    client_keep_alive: bool = True
    upstream_time: float = 0.0
    unreachable: bool = False     #: no connection to the backend could be had
    upgraded: bool = False        #: the backend switched protocols (101): tunnel now


class Relay(Outcome):
    """Relays the response to ``head`` from ``upstream`` (a GreenSocket,
    parsed by ``parser``) to the client socket ``sock``.  ``keep``: whether
    the client connection may stay open afterwards, as far as the request
    goes; ``replayable``: the request could be sent again; ``began``: when
    it was sent.  Failures and successes are reported to ``backends``
    against ``backend``.

    A Relay is the Outcome of its attempt: ``run`` fills the Outcome fields
    in as the response goes by, so one object per response carries both."""

    def __init__(self, sock: Any, upstream: Any, parser: ResponseParser, backends: Backends,
                 backend: BackendState, head: Head, replayable: bool, began: float,
                 keep: bool) -> None:
        self.sock = sock
        self.upstream = upstream
        self.parser = parser
        self.backends = backends
        self.backend = backend
        self.head = head
        self.replayable = replayable
        self.began = began
        self.client_11 = head.version == "1.1"
        # The Outcome fields, set here although Outcome has defaults: reading
        # a class attribute through an instance is the slow path.
        self.sent = self.status = 0
        self.retry = False
        self.error: HttpError | None = None
        self.client_keep_alive = True
        self.upstream_time = 0.0
        self.unreachable = self.upgraded = False
        #: Waiting for the backend's 100 Continue: ``run`` returns (``paused``)
        #: once it has gone to the client, or when none came in time.
        self.pause = self.paused = False
        #: The request may go again even if not idempotent: the send was cut
        #: short, or no body byte was read yet (waiting for 100 Continue).
        self.resend_ok = False
        self.keep = keep              #: the client connection stays open after this
        self.rechunk = False          #: the body is re-chunked for the client
        self.upstream_keep = False    #: the backend keeps its connection open
        self.done = False             #: the final response ended
        self.interim = False          #: inside an interim (1xx) response
        self.nodelay = False          #: TCP_NODELAY is set on the client socket

    def run(self) -> bool:
        """Relay until the response ends or fails; True (clean) when the
        backend connection may carry the next request.  Raises ClientGone
        when the client cannot be written to."""
        upstream, parser = self.upstream, self.parser
        recv = upstream.recv_later  # the first read: the answer cannot be here yet
        self.paused = False
        while not self.done:
            try:
                data = recv(RECV_SIZE)
                recv = upstream.recv
            except TimeoutError:
                if self.pause:  # no 100 Continue in time: the body goes without it
                    self.pause, self.paused = False, True
                    return False
                self.backends.failed(self.backend, "response timeout")
                return self._failed(HttpError(504, "backend response timed out"), self.keep)
            except OSError:
                data = b""  # a reset reads as a close
            events = parser.feed(data) if data else parser.finish()
            if not data and not events and self.sent == 0 and not parser.in_message:
                return self._closed_unanswered()
            pieces = self._translate(events)
            if pieces is None:  # the response is malformed or cut short
                return False
            if pieces:
                payload = b"".join(pieces)
                try:
                    if self.sent and not self.nodelay:  # a response in several writes: no Nagle
                        set_nodelay(self.sock)
                        self.nodelay = True
                    self.sock.sendall(payload)
                except OSError:
                    raise ClientGone() from None
                self.sent += len(payload)
            if self.paused:  # the backend's 100 Continue went to the client
                self.pause = False
                return False
            if not data and not self.done:
                break
        if self.error is None:
            self.backends.answered(self.backend, self.status, self.upstream_time)
        self.client_keep_alive = self.keep and self.error is None
        return self.done and self.error is None and self.upstream_keep and not parser.in_message

    def _translate(self, events: list[Event]) -> list[bytes] | None:
        """The bytes for the client that ``events`` make, in order; None
        (the outcome says why) when the backend's response is rejected."""
        pieces: list[bytes] = []
        for event in events:
            kind = type(event)
            if kind is Data:
                pieces.append(chunk(event.data) if self.rechunk else event.data)
            elif kind is Head:
                if event.status == 101:  # asked for: the tunnel follows (lb.tunnel)
                    self.status, self.upgraded = 101, True
                    self.upstream_time = time.monotonic() - self.began
                    pieces.append(client_response(event, True, True, False, True))
                elif event.status < 200:
                    self.interim = True  # forwarded to HTTP/1.1 clients (RFC 9110 15.2)
                    if self.client_11:
                        pieces.append(client_response(event, True, True, False))
                    if event.status == 100 and self.pause:
                        self.paused = True  # returns once this is sent
                else:
                    pieces.append(self._final_head(event))
            elif kind is End:
                if self.interim:
                    self.interim = False
                else:
                    if self.rechunk:
                        pieces.append(LAST_CHUNK)
                    self.done = True
            else:  # Rejected: the backend's response is malformed or cut short
                self.backends.failed(self.backend, event.error.reason)
                self._failed(event.error, self.keep and self.sent == 0)
                return None
        return pieces

    def _final_head(self, event: Head) -> bytes:
        """The final response's head, re-stated for the client; settles how
        the body is framed and whether the client connection stays open."""
        self.status = event.status
        self.upstream_time = time.monotonic() - self.began
        self.upstream_keep = event.keep_alive
        client_11 = self.client_11
        framed = event.content_length is not None or not has_body(self.head.method, event.status)
        if not framed and not client_11:
            self.keep = False  # close-delimited to an HTTP/1.0 client
        self.rechunk = not framed and client_11
        return client_response(event, self.keep, client_11, self.rechunk)

    def _closed_unanswered(self) -> bool:
        """The backend closed before answering: the keep-alive race on a
        reused connection, or a backend that died.  Replay only what is safe."""
        self.backends.failed(self.backend, "closed before responding")
        self.retry = self.replayable and (self.resend_ok or self.head.method in IDEMPOTENT)
        return self._failed(HttpError(502, "backend closed the connection"), self.keep)

    def _failed(self, error: HttpError, client_keep_alive: bool) -> bool:
        """Record the failure; False (the backend connection is not clean)."""
        self.error = error
        self.client_keep_alive = client_keep_alive
        return False
