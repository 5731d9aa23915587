# lb/bodies.py -- a client's request body, on its way to a backend.
#
# Strategy: a body up to ``max_body_buffer`` bytes is read whole before the
# backend is chosen, which makes the request replayable on another backend
# if the first one fails; a bigger one is streamed, after the bytes already
# read, and re-framed for the backend (a chunked body is re-chunked, so the
# client's own chunk framing never passes through unchecked).  Errors in the
# body come out as the HttpError the framing gives (408 for a stall, 4xx for
# a malformed body).  A client connection makes its RequestBody for the
# first request with a body.
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from gservers.http import LAST_CHUNK, Data, End, Head, Rejected, chunk

if TYPE_CHECKING:
    from gservers.net.stream import ClientStream
    from lb.config import LBConfig


class ClientGone(Exception):
    """The client closed its connection mid-request."""


class RequestBody:
    """Reads request bodies from ``stream`` (a client connection's
    ClientStream), keeping up to ``config.max_body_buffer`` bytes."""

    __slots__ = ("stream", "config", "_prefix")

    def __init__(self, stream: ClientStream, config: LBConfig) -> None:
        self.stream = stream
        self.config = config
        self._prefix: Sequence[bytes] = ()  #: body pieces read before streaming began

    def read(self, head: Head) -> bytes | None:
        """The whole body if it fits the buffer, else None (then stream it
        with ``pieces``).

        Raises RequestTimeout, or HttpError for a malformed body."""
        limit = self.config.max_body_buffer
        if head.content_length is not None and head.content_length > limit:
            return None
        parts: list[bytes] = []
        size = 0
        while True:
            event = self.stream.next()
            if event is None:
                raise ClientGone()
            if isinstance(event, End):
                return b"".join(parts)
            if isinstance(event, Rejected):
                raise event.error
            assert isinstance(event, Data)
            parts.append(event.data)
            size += len(event.data)
            if size > limit:  # a chunked body too large to keep: stream the rest
                self._prefix = parts
                return None

    def pieces(self, head: Head) -> Iterator[bytes]:
        """Stream the rest of a large body, framed for the backend."""
        rechunk = head.chunked
        for data in self._prefix:
            yield chunk(data) if rechunk else data
        self._prefix = ()
        while True:
            event = self.stream.next()
            if event is None:
                raise ClientGone()
            if isinstance(event, End):
                if rechunk:
                    yield LAST_CHUNK
                return
            if isinstance(event, Rejected):
                raise event.error
            assert isinstance(event, Data)
            yield chunk(event.data) if rechunk else event.data
