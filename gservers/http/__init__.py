"""HTTP/1.1 framing shared by the backends and the balancer, with no sockets.

Bytes go in to a parser's ``feed()`` and come out as events (``Head``,
``Data``, ``End``, ``Rejected``); writers return bytes; a ``Response`` is
framed by ``gservers.http.responses``.  Every error is an ``HttpError``
carrying the status a server should answer with.  The names below are the
whole API: import them from here.
"""
from gservers.http.messages import (
    END,
    HOP_BY_HOP,
    Data,
    End,
    Event,
    Head,
    Headers,
    HttpError,
    Limits,
    Rejected,
)
from gservers.http.parser import RequestParser
from gservers.http.response_parser import ResponseParser
from gservers.http.targets import check_target, origin_form
from gservers.http.writers import (
    LAST_CHUNK,
    chunk,
    has_body,
    http_date,
    request_head,
    response_head,
    status_line,
)

__all__ = [
    "END", "HOP_BY_HOP", "LAST_CHUNK", "Data", "End", "Event", "Head", "Headers", "HttpError",
    "Limits", "Rejected", "RequestParser", "ResponseParser", "check_target", "chunk", "has_body",
    "http_date", "origin_form", "request_head", "response_head", "status_line",
]
