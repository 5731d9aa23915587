# gservers/http/targets.py -- the request-target (RFC 9112 3.2): which of its
# four forms a request may use, and the origin-form a proxy forwards.
#
# Strategy: the forms are told apart by their first byte.  origin-form
# (absolute-path [ "?" query ], 3.2.1) is nearly every request, so it costs
# one bytes.translate that deletes every allowed byte (anything left is
# refused) and, only when a "%" is present, a search for a bad escape.  The
# rare forms use regular expressions: absolute-form (3.2.2) is an http or
# https URI with a non-empty host and no userinfo (RFC 9110 4.2.1, 4.2.4);
# authority-form (host ":" port, 3.2.3) is CONNECT's only form and allowed
# with nothing else; asterisk-form ("*", 3.2.4) is OPTIONS only.  A server
# sees the same few targets again and again, so the short ones found valid
# in origin- or absolute-form are remembered in CHECKED (bounded, emptied
# when full), where the parser looks first: a set lookup is several times
# cheaper than the check, and such a target is valid with any method but
# CONNECT.
#
# Strictness: RFC 3986's characters -- pchar (unreserved / sub-delims / ":"
# / "@" / pct-encoded) plus "/" and "?" -- and also [ ] { } | ^ `, which
# browsers send unescaped (the WHATWG URL standard leaves them as they are
# in paths and queries: PHP-style "a[]=1", JSON in a query), so refusing them
# would refuse real clients; nginx and Apache take them too.  Still a 400:
# < > and " (browsers always escape them: a raw one is a probe), backslash
# (a path separator on some servers), "#" (a fragment is never sent, 3.2),
# and a "%" not followed by two hex digits; llhttp has already refused
# controls, space, DEL and non-ASCII bytes.  "//x" is a valid origin-form
# (absolute-path = 1*( "/" segment ), and a segment may be empty).
from __future__ import annotations

import re

from gservers.http.messages import HttpError

_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_SUB_DELIMS = b"!$&'()*+,;="
#: Every byte a path or query may hold ("%" is checked apart, as "%" HEXDIG HEXDIG):
#: RFC 3986's, and those browsers leave unescaped.
_PATH_QUERY = _UNRESERVED + _SUB_DELIMS + b":@/?%" + b"[]{}|^`"
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# uri-host = IP-literal / IPv4address / reg-name (RFC 3986 3.2.2); IPv4 is a reg-name here.
_HOST = rb"(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)"
_AUTHORITY = re.compile(_HOST + rb"(?::[0-9]*)?")
_AUTHORITY_FORM = re.compile(_HOST + rb":[0-9]+")
#: scheme "://" authority, then path-abempty [ "?" query ] (checked like origin-form).
_ABSOLUTE = re.compile(rb"(https?)://([^/?#]*)(.*)", re.IGNORECASE | re.DOTALL)
#: origin- and absolute-form targets found valid: any method but CONNECT may use them.
CHECKED: set[bytes] = set()
CHECKED_MAX = 4096       #: entries before CHECKED is emptied
CHECKED_LONGEST = 256    #: longer targets are checked every time


def check_target(method: bytes, target: bytes) -> None:
    """Raise HttpError(400, reason) unless ``target`` is a request-target in a
    form ``method`` may use, made of the characters RFC 3986 allows (and
    those browsers send unescaped)."""
    if method == b"CONNECT":
        if not _AUTHORITY_FORM.fullmatch(target):
            raise HttpError(400, "CONNECT needs a host:port target")
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise HttpError(400, "asterisk-form is only for OPTIONS")
        return
    _check_path_query(target if target[:1] == b"/" else _absolute_rest(target))
    if len(target) <= CHECKED_LONGEST:
        if len(CHECKED) >= CHECKED_MAX:
            CHECKED.clear()
        CHECKED.add(target)


def _check_path_query(rest: bytes) -> None:
    if rest.translate(None, _PATH_QUERY) or (b"%" in rest and _BAD_ESCAPE.search(rest)):
        raise HttpError(400, "invalid character in request-target")


def _absolute_rest(target: bytes) -> bytes:
    """The path and query of an absolute-form target, after its authority is checked."""
    match = _ABSOLUTE.match(target)
    if match is None:
        if _AUTHORITY_FORM.fullmatch(target):
            raise HttpError(400, "authority-form is only for CONNECT")
        raise HttpError(400, "invalid request-target")
    authority = match.group(2)
    if b"@" in authority:
        raise HttpError(400, "userinfo in request-target")
    if not _AUTHORITY.fullmatch(authority):
        raise HttpError(400, "invalid authority in request-target")
    return match.group(3)


def origin_form(method: bytes, target: bytes) -> tuple[bytes, bytes | None]:
    """The target to send an origin server, and the authority its Host header
    must then carry, for a target ``check_target`` accepted.

    An absolute-form target becomes its path and query, with its authority
    (RFC 9112 3.2.2: the Host header is replaced by it); an empty path becomes
    "/", or "*" for an OPTIONS without a query (3.2.1, 3.2.4).  Any other
    form is returned as it is, with None."""
    if target[:1] == b"/" or target == b"*" or method == b"CONNECT":
        return target, None
    match = _ABSOLUTE.match(target)
    if match is None:  # pragma: no cover - check_target refused it
        return target, None
    rest = match.group(3)
    if not rest:
        rest = b"*" if method == b"OPTIONS" else b"/"
    elif rest[:1] == b"?":
        rest = b"/" + rest
    return rest, match.group(2)
