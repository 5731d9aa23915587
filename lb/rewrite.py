# lb/rewrite.py -- re-stating heads as they cross the balancer.
#
# Strategy: pure functions from a parsed Head to the bytes of the head to
# send on.  Hop-by-hop headers (RFC 9110 7.6.1) and those the Connection
# header names are dropped; framing is stated anew for the next hop (the
# body is re-framed by the proxy, so the client's Content-Length and
# Transfer-Encoding never pass through unchecked); X-Forwarded-For is
# appended to, X-Forwarded-Proto set, Via extended.  One pass over the
# headers each way, since this runs for every request.
from __future__ import annotations

from gservers.http import HOP_BY_HOP, Head, origin_form, status_line

VIA_11 = b"1.1 gservers-lb"
VIA_10 = b"1.0 gservers-lb"
# Never forwarded upstream: hop-by-hop, our own framing, Expect (the
# balancer states it anew when it waits for the backend's 100), and the
# proto we set.
_REQUEST_DROP = HOP_BY_HOP | {b"content-length", b"expect", b"x-forwarded-proto"}


def _dropped(head: Head, base: frozenset[bytes]) -> frozenset[bytes] | set[bytes]:
    named = head.connection
    return base.union(named) if named else base


def wants_upgrade(head: Head) -> bool:
    """Whether a request asks to switch protocols (``Connection: upgrade``
    and an ``Upgrade`` header, RFC 9110 7.8)."""
    return b"upgrade" in head.connection and any(
        name.lower() == b"upgrade" for name, _ in head.headers)


def upstream_request(head: Head, client_ip: bytes, content_length: int | None,
                     chunked: bool, upgrade: bool = False, expect: bool = False,
                     proto: bytes = b"http") -> bytes:
    """The request head for the backend.  ``content_length`` (or ``chunked``)
    states the body as the proxy will send it; neither means no body.
    ``upgrade`` passes the client's Upgrade on (with ``Connection: upgrade``);
    ``expect`` asks the backend for ``100-continue`` before the body;
    ``proto`` is what the client spoke (X-Forwarded-Proto: http or https)."""
    drop = _dropped(head, _REQUEST_DROP)
    if upgrade:
        drop = drop - {b"upgrade"}
    target, authority = head.target, None
    if target[:1] != b"/":  # absolute-form goes on in origin-form, its authority as Host
        target, authority = origin_form(head.method, target)  # (RFC 9112 3.2.2)
    parts = [b"%s %s HTTP/1.1\r\n" % (head.method, target)]
    forwarded_for = b""
    via = b""
    has_host = False
    for name, value in head.headers:
        lname = name.lower()
        if lname in drop:
            continue
        if lname == b"x-forwarded-for":
            forwarded_for += value + b", "
        elif lname == b"via":
            via += value + b", "
        elif lname == b"host":
            has_host = True
            parts.append(b"%s: %s\r\n" % (name, value if authority is None else authority))
        else:
            parts.append(b"%s: %s\r\n" % (name, value))
    if not has_host:  # an HTTP/1.0 client may leave Host out; HTTP/1.1 needs one
        parts.append(b"Host: %s\r\n" % (authority or b"unknown"))
    parts.append(b"X-Forwarded-For: %s%s\r\nX-Forwarded-Proto: %s\r\nVia: %s%s\r\n"
                 % (forwarded_for, client_ip, proto, via,
                    VIA_11 if head.version == "1.1" else VIA_10))
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % content_length)
    if upgrade:
        parts.append(b"Connection: upgrade\r\n")
    if expect:
        parts.append(b"Expect: 100-continue\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def client_response(head: Head, keep_alive: bool, client_11: bool, rechunk: bool,
                    upgrade: bool = False) -> bytes:
    """The backend's response head, re-stated for the client: hop-by-hop
    headers dropped, Via extended, chunked when the proxy re-chunks, and the
    Connection header the client's keep-alive state needs; ``upgrade`` (a
    101) keeps Upgrade and says ``Connection: upgrade``."""
    drop = _dropped(head, HOP_BY_HOP)
    if upgrade:
        drop = drop - {b"upgrade"}
    parts = [status_line(head.status)]
    via = b""
    for name, value in head.headers:
        lname = name.lower()
        if lname in drop:
            continue
        if lname == b"via":
            via += value + b", "
            continue
        parts.append(b"%s: %s\r\n" % (name, value))
    parts.append(b"Via: %s%s\r\n" % (via, VIA_11 if head.version == "1.1" else VIA_10))
    if rechunk:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade:
        parts.append(b"Connection: upgrade\r\n")
    elif not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif not client_11:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
