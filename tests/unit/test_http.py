# tests/unit/test_http.py -- gservers/http.py without sockets.
#
# Strategy: the sans-IO parsers promise that the events depend only on the
# bytes, never on how they are split, so every request in the corpus
# (tests/requests, format in its README) is fed whole, one byte at a time and
# in two pieces split at every position, and the event lists (adjacent Data
# merged) must agree; the whole feed is checked against the case's .expect
# (rejection status, number of requests answered, whether the connection must
# close).  Focused tests pin down Head fields, keep-alive rules, Limits
# boundaries, ResponseParser framing (length, chunked, until-close, bodiless
# responses, 502 for what a proxy cannot relay) and the writers.  Hypothesis
# feeds random bytes and mutated corpus requests in random splits and checks
# the invariants the connection loop relies on: feed() never raises, the
# event sequence is well formed, a Rejected comes at most once and last, and
# a dead parser returns [].  Known server bugs are strict xfails carrying
# their reason, so fixing one shows up as a failure to clean up.
from __future__ import annotations

import gc
import re
import time
import weakref
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gservers.http import (
    END,
    LAST_CHUNK,
    Data,
    End,
    Event,
    Head,
    HttpError,
    Limits,
    Rejected,
    RequestParser,
    ResponseParser,
    check_target,
    chunk,
    has_body,
    http_date,
    origin_form,
    request_head,
    response_head,
    status_line,
    targets,
)
from gservers.http.chunked import MAX_LINE, Cuts
from tests.corpus import CASES, SPLIT_ALL_UP_TO, SPLIT_SAMPLES, Case


def test_corpus_is_big_enough() -> None:
    kinds = [c.kind for c in CASES]
    assert kinds.count("invalid") >= 40 and kinds.count("valid") >= 15


# -- helpers --------------------------------------------------------------------

Norm = tuple  # a hashable, comparable form of one event


def normalize(events: Sequence[Event]) -> list[Norm]:
    """Events in comparable form: adjacent Data merged (their boundaries follow
    the feeds), Rejected reduced to its status (the reason text may name
    whichever check fired first)."""
    out: list[Norm] = []
    for e in events:
        if isinstance(e, Data):
            if out and out[-1][0] == "data":
                out[-1] = ("data", out[-1][1] + e.data)
            else:
                out.append(("data", e.data))
        elif isinstance(e, Head):
            out.append(("head", e.method, e.target, e.status, e.version, e.headers, e.keep_alive,
                        e.chunked, e.content_length))
        elif isinstance(e, End):
            out.append(("end",))
        elif isinstance(e, Rejected):
            out.append(("rejected", e.error.status))
        else:  # pragma: no cover
            raise AssertionError(f"unknown event {e!r}")
    return out


def feed_pieces(parser: RequestParser | ResponseParser, pieces: Sequence[bytes]) -> list[Event]:
    events: list[Event] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return events


def feed_all(data: bytes, limits: Limits = Limits()) -> list[Event]:
    return RequestParser(limits).feed(data)


def feed_bytewise(data: bytes, limits: Limits = Limits()) -> list[Event]:
    parser = RequestParser(limits)
    return feed_pieces(parser, [data[i:i + 1] for i in range(len(data))])


Feed = Callable[[bytes, Limits], list[Event]]


def split_positions(n: int) -> Sequence[int]:
    if n <= SPLIT_ALL_UP_TO:
        return range(1, n)
    step = max(1, n // SPLIT_SAMPLES)
    return sorted(set(range(1, n, step)) | {1, n - 1})


def assert_well_formed(events: Sequence[Event]) -> None:
    """(Head Data* End)* [Head Data*] [Rejected], and nothing after Rejected."""
    in_message = False
    for i, e in enumerate(events):
        if isinstance(e, Rejected):
            assert i == len(events) - 1, f"Rejected is not last: {events}"
        elif isinstance(e, Head):
            assert not in_message, f"Head inside a message: {events}"
            in_message = True
        elif isinstance(e, Data):
            assert in_message and e.data, f"Data outside a message or empty: {events}"
        elif isinstance(e, End):
            assert in_message, f"End outside a message: {events}"
            in_message = False


def only(events: Sequence[Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def one_head(data: bytes) -> Head:
    events = feed_all(data)
    assert not only(events, Rejected), events
    heads = only(events, Head)
    assert len(heads) == 1
    return heads[0]


def rejected_status(data: bytes, limits: Limits = Limits()) -> int | None:
    events = feed_all(data, limits)
    rejected = only(events, Rejected)
    return rejected[0].error.status if rejected else None


# -- corpus: whole feed against .expect ------------------------------------------

@pytest.mark.parametrize("case", [c.param("parse") for c in CASES])
def test_corpus_whole(case: Case) -> None:
    events = feed_all(case.data)
    assert_well_formed(events)
    # What the server acts on: complete requests up to the first that is not
    # keep-alive, then a rejection if one comes before that (a request whose
    # body is refused is answered by the rejection alone).
    answered: list[Head] = []
    current: Head | None = None
    effective: Rejected | None = None
    for e in events:
        if isinstance(e, Head):
            current = e
        elif isinstance(e, End):
            assert current is not None
            answered.append(current)
            if not current.keep_alive:
                break
        elif isinstance(e, Rejected):
            effective = e
    if case.rejected is None:
        assert effective is None, f"parser rejected: {effective}"
    else:
        assert effective is not None, f"parser accepted: {events}"
        assert effective.error.status == case.rejected, effective.error
    assert len(answered) + (effective is not None) == len(case.finals), normalize(events)
    must_close = effective is not None or any(not h.keep_alive for h in answered)
    assert must_close == case.close


@pytest.mark.parametrize("case", [c.param("split") for c in CASES])
def test_corpus_split(case: Case) -> None:
    expected = normalize(feed_all(case.data))
    assert normalize(feed_bytewise(case.data)) == expected, "one byte at a time"
    for at in split_positions(len(case.data)):
        got = normalize(feed_pieces(RequestParser(), [case.data[:at], case.data[at:]]))
        assert got == expected, f"split at {at}"


# -- Head fields -------------------------------------------------------------------

def test_head_fields() -> None:
    data = (b"POST /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Two: 2\r\nx-one: 1\r\n"
            b"X-Two: 3\r\nContent-Length: 4\r\n\r\nbody")
    events = feed_all(data)
    assert normalize(events) == normalize([
        Head(b"POST", b"/a/b?x=1", 0, "1.1",
             ((b"Host", b"example.com"), (b"X-Two", b"2"), (b"x-one", b"1"), (b"X-Two", b"3"),
              (b"Content-Length", b"4")), True, False, 4),
        Data(b"body"), END])
    head = events[0]
    assert isinstance(head, Head)
    assert head.get(b"x-two") == b"2" and head.get(b"x-one") == b"1"
    assert head.get(b"missing") is None and head.get(b"missing", b"d") == b"d"
    assert head.tokens(b"x-two") == [b"2", b"3"]


def test_head_chunked_and_body() -> None:
    data = (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n")
    events = feed_all(data)
    head = events[0]
    assert isinstance(head, Head)
    assert (head.method, head.target, head.chunked, head.content_length) == \
        (b"POST", b"/up", True, None)
    assert normalize(events[1:]) == [("data", b"hello!"), ("end",)]
    # Trailer fields are not header fields.
    assert head.get(b"x-trailer") is None


def test_head_without_body_framing() -> None:
    head = one_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (head.chunked, head.content_length, head.status, head.version) == (False, None, 0, "1.1")


def test_head_tokens_split_and_lower() -> None:
    head = one_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Foo , BAR\r\n"
                    b"Connection: ,baz,\r\n\r\n")
    assert head.tokens(b"connection") == [b"foo", b"bar", b"baz"]


def test_absolute_form_target_kept_verbatim() -> None:
    assert one_head(b"GET http://h:8080/p?q HTTP/1.1\r\nHost: h:8080\r\n\r\n").target == \
        b"http://h:8080/p?q"


def test_asterisk_form_target() -> None:
    head = one_head(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (head.method, head.target) == (b"OPTIONS", b"*")


# -- request-targets (RFC 9112 3.2, RFC 3986) ------------------------------------------

def every_way(data: bytes) -> list[Norm]:
    """The events of ``data`` fed whole, which must equal those fed one byte at
    a time and in two pieces split at every position."""
    expected = normalize(feed_all(data))
    assert normalize(feed_bytewise(data)) == expected, "one byte at a time"
    for at in split_positions(len(data)):
        got = normalize(feed_pieces(RequestParser(), [data[:at], data[at:]]))
        assert got == expected, f"split at {at}"
    return expected


def request_line(method: bytes, target: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: h\r\n\r\n" % (method, target)


ACCEPTED_TARGETS = [
    (b"GET", b"/"), (b"GET", b"//x"), (b"GET", b"/a//b/"), (b"GET", b"/a%41%7e?q=a/b?c&d=%7E"),
    (b"GET", b"/:@!$&'()*+,;=-._~?:@!$&'()*+,;=-._~/?"), (b"OPTIONS", b"*"),
    (b"OPTIONS", b"/x"), (b"GET", b"http://example.com/page.html"),
    (b"GET", b"HTTPS://Example.COM:8443/p?q"), (b"GET", b"http://[::1]:8080/"),
    (b"GET", b"http://example.com"), (b"GET", b"http://example.com?x"),
    (b"GET", b"http://ex%41mple.com:/"), (b"CONNECT", b"example.com:443"),
    (b"CONNECT", b"[::1]:443"),
    # RFC 3986 leaves these out, but browsers send them unescaped (WHATWG URL): taken
    *[(b"GET", b"/a%cb" % c) for c in b"{}|^`[]"],
    *[(b"GET", b"/a?q=%cb" % c) for c in b"{}|^`[]"], (b"GET", b"/api?f[]=1&j={%22a%22:1}"),
]
#: Characters refused in a path and a query that llhttp lets through: those RFC 3986
#: leaves out and browsers always escape, the backslash, and "#".
OUTSIDE_RFC3986 = b'<>"\\#'
REFUSED_TARGETS = [
    (b"GET", b"*"), (b"HEAD", b"*"), (b"POST", b"*"), (b"OPTIONS", b"*x"), (b"OPTIONS", b"**"),
    (b"GET", b"example.com:80"), (b"OPTIONS", b"example.com:80"), (b"GET", b"foo"),
    (b"GET", b"?x"), (b"CONNECT", b"/"), (b"CONNECT", b"*"), (b"CONNECT", b"example.com"),
    (b"CONNECT", b"example.com:"), (b"CONNECT", b"http://example.com/"),
    (b"GET", b"/%"), (b"GET", b"/%4"), (b"GET", b"/%zz"), (b"GET", b"/?q=%g0"),
    (b"GET", b"/a%4g"), (b"GET", b"http://user@example.com/"), (b"GET", b"http:///x"),
    (b"GET", b"http://:80/x"), (b"GET", b"ftp://example.com/x"), (b"GET", b"http://h/a<b"),
    (b"GET", b"http://h%zz/"), (b"GET", b"http://h:8x/"), (b"GET", b"http://h#f"),
    *[(b"GET", b"/a%cb" % c) for c in OUTSIDE_RFC3986],
    *[(b"GET", b"/a?q=%cb" % c) for c in OUTSIDE_RFC3986],
]


@pytest.mark.parametrize("method, target", ACCEPTED_TARGETS)
def test_request_target_accepted(method: bytes, target: bytes) -> None:
    events = every_way(request_line(method, target))
    assert [e[:3] for e in events if e[0] == "head"] == [("head", method, target)]
    assert events[-1] == ("end",)


@pytest.mark.parametrize("method, target", REFUSED_TARGETS)
def test_request_target_refused(method: bytes, target: bytes) -> None:
    assert every_way(request_line(method, target)) == [("rejected", 400)]
    error = only(feed_all(request_line(method, target)), Rejected)[0].error
    assert 0 < len(error.reason) < 60


def test_checked_targets_are_remembered_for_every_method_but_connect() -> None:
    assert every_way(request_line(b"GET", b"/remembered"))[-1] == ("end",)
    assert b"/remembered" in targets.CHECKED
    assert every_way(request_line(b"CONNECT", b"/remembered")) == [("rejected", 400)]
    assert every_way(request_line(b"OPTIONS", b"/remembered"))[-1] == ("end",)


def test_checked_targets_are_bounded() -> None:
    for i in range(targets.CHECKED_MAX + 10):
        check_target(b"GET", b"/n%d" % i)
    assert 0 < len(targets.CHECKED) <= targets.CHECKED_MAX
    long = b"/" + b"a" * targets.CHECKED_LONGEST
    check_target(b"GET", long)
    assert long not in targets.CHECKED
    check_target(b"GET", long[:-1])
    assert long[:-1] in targets.CHECKED


@pytest.mark.parametrize("method, target, reason", [
    (b"GET", b"*", "asterisk-form is only for OPTIONS"),
    (b"CONNECT", b"/", "CONNECT needs a host:port target"),
    (b"GET", b"/a<b>", "invalid character in request-target"),
    (b"GET", b"http://u@h/", "userinfo in request-target"),
])
def test_request_target_reasons(method: bytes, target: bytes, reason: str) -> None:
    assert only(feed_all(request_line(method, target)), Rejected)[0].error.reason == reason


@pytest.mark.parametrize("method, target, want", [
    (b"GET", b"/p?q", (b"/p?q", None)),
    (b"GET", b"//x", (b"//x", None)),
    (b"GET", b"http://example.com/page.html", (b"/page.html", b"example.com")),
    (b"GET", b"HTTPS://Example.com:8443/a?b", (b"/a?b", b"Example.com:8443")),
    (b"GET", b"http://example.com", (b"/", b"example.com")),
    (b"GET", b"http://example.com?x=1", (b"/?x=1", b"example.com")),
    (b"GET", b"http://[::1]:8080//x", (b"//x", b"[::1]:8080")),
    (b"OPTIONS", b"http://example.com", (b"*", b"example.com")),
    (b"OPTIONS", b"http://example.com?x", (b"/?x", b"example.com")),
    (b"OPTIONS", b"*", (b"*", None)),
    (b"CONNECT", b"example.com:443", (b"example.com:443", None)),
])
def test_origin_form(method: bytes, target: bytes, want: tuple[bytes, bytes | None]) -> None:
    check_target(method, target)  # every case is a target the parser accepts
    assert origin_form(method, target) == want


def test_field_value_leading_ows_stripped() -> None:
    assert one_head(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \t v\r\n\r\n").get(b"x-a") == b"v"


def test_field_value_trailing_ows_stripped() -> None:
    assert one_head(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: v \t\r\n\r\n").get(b"x-a") == b"v"


def test_pipelined_heads_in_order() -> None:
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(5))
    events = feed_all(data)
    assert [h.target for h in only(events, Head)] == [b"/%d" % i for i in range(5)]
    assert len(only(events, End)) == 5


def test_in_head_and_in_message_flags() -> None:
    p = RequestParser()
    assert not p.in_message and not p.in_head
    p.feed(b"POST / HTTP/1.1\r\nHo")
    assert p.in_message and p.in_head
    p.feed(b"st: h\r\nContent-Length: 2\r\n\r\n")
    assert p.in_message and not p.in_head
    assert p.feed(b"ok") == [Data(b"ok"), END]
    assert not p.in_message and not p.in_head


def test_upgrade_without_body_is_ignored() -> None:
    data = (b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    for events in (feed_all(data), feed_bytewise(data)):
        assert [h.target for h in only(events, Head)] == [b"/a", b"/b"]
        assert not only(events, Rejected)


def test_upgrade_with_body_is_refused_never_reparsed() -> None:
    """llhttp skips the body of a request asking to Upgrade; reading on would
    parse that body as the next request, so the request is refused."""
    smuggled = b"GET /secret HTTP/1.1\r\nHost: h\r\n\r\n"
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
    for events in (feed_all(data), feed_bytewise(data)):
        assert not only(events, Head)
        assert [r.error.status for r in only(events, Rejected)] == [400]


# -- keep-alive ----------------------------------------------------------------------

@pytest.mark.parametrize("version, connection, keep_alive", [
    (b"1.1", None, True),
    (b"1.1", b"keep-alive", True),
    (b"1.1", b"close", False),
    (b"1.1", b"Close", False),
    (b"1.1", b"foo, close", False),
    (b"1.1", b"Upgrade-Insecure, keep-alive", True),
    (b"1.0", None, False),
    (b"1.0", b"keep-alive", True),
    (b"1.0", b"Keep-Alive", True),
    (b"1.0", b"close", False),
])
def test_keep_alive_rules(version: bytes, connection: bytes | None, keep_alive: bool) -> None:
    data = b"GET / HTTP/%s\r\nHost: h\r\n" % version
    if connection is not None:
        data += b"Connection: %s\r\n" % connection
    head = one_head(data + b"\r\n")
    assert head.version == version.decode()
    assert head.keep_alive is keep_alive


def test_http10_transfer_encoding_is_not_keep_alive() -> None:
    data = (b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n")
    events = feed_all(data)
    assert only(events, Rejected) or not only(events, Head)[0].keep_alive


# -- chunk-size lines (RFC 9112 7.1, 7.1.1) --------------------------------------------

CHUNKED = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
BWS_LINES = [
    b"5 ;a=b", b"5; a=b", b"5;a =b", b"5;a= b", b"5 ; name = value", b"5\t;\tname\t=\tvalue",
    b'5 ; q = "x; y\\"z"', b"5 ; a ; b = c ;d", b"5;a", b"5;a=b", b"005 ;  a  =  b",
]


@pytest.mark.parametrize("line", BWS_LINES)
def test_chunk_extensions_with_bws_accepted_and_dropped(line: bytes) -> None:
    data = CHUNKED + line + b"\r\nhello\r\n1 ; x = y\r\n!\r\n0 ; last = 1\r\nX-T: t\r\n\r\n"
    plain = CHUNKED + b"5\r\nhello\r\n1\r\n!\r\n0\r\nX-T: t\r\n\r\n"
    events = every_way(data + NEXT)
    assert events == every_way(plain + NEXT)
    assert events[1:3] == [("data", b"hello!"), ("end",)]


HELLO = b"hello\r\n0\r\n\r\n"  #: what follows a first chunk-size line of 5
REFUSED_CHUNK_LINES = [
    b"5 \r\n" + HELLO, b"5\t\r\n" + HELLO, b"5\r\nhello\r\n0 \r\n\r\n", b" 5\r\n" + HELLO,
    b"5;a=b \r\n" + HELLO, b"5;a \r\n" + HELLO, b"5 ;\r\n" + HELLO, b"5;\r\n" + HELLO,
    b"5;a=\r\n" + HELLO, b"5;=b\r\n" + HELLO, b'5;a="x\r\n' + HELLO, b"5;a=b c\r\n" + HELLO,
    b"5;a{=b\r\n" + HELLO, b"g\r\n" + HELLO, b"0x5\r\n" + HELLO, b"+5\r\n" + HELLO,
    b"5_0\r\n" + HELLO, b"\r\n" + HELLO, b"5\n" + HELLO, b"5 ; a = b\n" + HELLO,
    b"5;a=b\rc\r\n" + HELLO, b"5\r\nhello\r\n0\n\r\n", b"10000000000000000\r\n" + HELLO,
]


@pytest.mark.parametrize("body", REFUSED_CHUNK_LINES)
def test_malformed_chunk_size_line_refused(body: bytes) -> None:
    events = every_way(CHUNKED + body + NEXT)
    assert events[-1] == ("rejected", 400)
    assert [e for e in events if e[0] == "head"] == events[:1]  # never the next request


def test_chunk_size_line_length_limit() -> None:
    line = b"5;" + b"a" * (MAX_LINE - 4) + b"\r\n"
    assert len(line) == MAX_LINE
    assert normalize(feed_all(CHUNKED + line + b"hello\r\n0\r\n\r\n"))[1:] == \
        [("data", b"hello"), ("end",)]
    longer = CHUNKED + b"5;a" + line[2:] + b"hello\r\n0\r\n\r\n"
    assert normalize(feed_all(longer))[-1] == ("rejected", 400)
    # An unending line is refused once it passes the limit, not buffered on.
    parser = RequestParser()
    parser.feed(CHUNKED + b"5;")
    events = parser.feed(b"a" * MAX_LINE)
    assert [r.error.reason for r in only(events, Rejected)] == ["chunk size line too long"]


def test_unending_trailer_section_is_431() -> None:
    parser = RequestParser()
    parser.feed(CHUNKED + b"0\r\nX-T: ")
    events = feed_pieces(parser, [b"a" * 1024] * (Limits().max_head // 1024 + 1))
    assert [r.error.status for r in only(events, Rejected)] == [431]


def test_content_length_body_is_one_piece() -> None:
    """A body of known length goes to llhttp whole: never searched for a
    head's end, so a body full of blank lines costs no more than another."""
    cuts = Cuts(Limits().max_head)
    body = b"\r\n\r\n" * 1000
    head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
    assert cuts.piece(head + body, False) == (head, body)
    cuts.body(False, len(body))
    assert cuts.piece(body[:10], False) == (body[:10], b"")
    assert cuts.piece(body[10:] + NEXT, False) == (body[10:], NEXT)
    assert cuts.piece(NEXT, False) == (NEXT, b"")


def test_body_that_looks_like_requests_stays_a_body() -> None:
    """The cuts follow the framing: a head inside a body is data."""
    inner = b"\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n0 ; a = b\r\n\r\n"
    chunked = CHUNKED + b"%x ; a = b\r\n%s\r\n0\r\n\r\n" % (len(inner), inner)
    sized = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (len(inner), inner)
    for data in (chunked + sized + NEXT, sized + chunked + NEXT):
        events = every_way(data)
        assert [e[2] for e in events if e[0] == "head"] == [b"/", b"/", b"/next"]
        assert [e[1] for e in events if e[0] == "data"] == [inner, inner]


# -- limits --------------------------------------------------------------------------

def _get(target: bytes = b"/", headers: Sequence[bytes] = (b"Host: h",)) -> bytes:
    return b"GET %s HTTP/1.1\r\n%s\r\n" % (target, b"".join(h + b"\r\n" for h in headers))


def test_default_limits() -> None:
    assert Limits() == Limits(max_target=8192, max_head=32768, max_headers=100)


@pytest.mark.parametrize("feed", [feed_all, feed_bytewise])
def test_limit_target(feed: Feed) -> None:
    limits = Limits(max_target=16)
    ok = _get(b"/" + b"a" * 15)
    over = _get(b"/" + b"a" * 16)
    assert not only(feed(ok, limits), Rejected)
    rejected = only(feed(over, limits), Rejected)
    assert [r.error.status for r in rejected] == [414]


@pytest.mark.parametrize("feed", [feed_all, feed_bytewise])
def test_limit_header_count(feed: Feed) -> None:
    limits = Limits(max_headers=3)
    assert not only(feed(_get(headers=(b"Host: h", b"A: 1", b"B: 2")), limits), Rejected)
    rejected = only(feed(_get(headers=(b"Host: h", b"A: 1", b"B: 2", b"C: 3")), limits), Rejected)
    assert [r.error.status for r in rejected] == [431]


def test_limit_head_bytes_boundary() -> None:
    # Each field counts name + value + 4 (": " and CRLF).
    host = b"Host: h"                              # 1 + 4 + 4 = 9
    filler = b"X: " + b"v" * (100 - 9 - 5)         # 1 + 86 + 4 = 91 -> 100 in all
    limits = Limits(max_head=100)
    assert rejected_status(_get(headers=(host, filler)), limits) is None
    assert rejected_status(_get(headers=(host, filler + b"v")), limits) == 431


@pytest.mark.parametrize("size", [250, 5000])
def test_limit_head_bytes_over_is_refused_however_split(size: int) -> None:
    data = _get(headers=(b"Host: h", b"X: " + b"v" * size))
    limits = Limits(max_head=200)
    assert rejected_status(data, limits) == 431
    assert [r.error.status for r in only(feed_bytewise(data, limits), Rejected)] == [431]
    for at in range(1, len(data), 37):
        events = feed_pieces(RequestParser(limits), [data[:at], data[at:]])
        assert [r.error.status for r in only(events, Rejected)] == [431], at


def test_limit_unterminated_header_line() -> None:
    """A header line that never ends is refused once it passes the limit,
    though llhttp never completes it."""
    p = RequestParser(Limits(max_head=1000))
    assert p.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX: ") == []
    events: list[Event] = []
    for _ in range(100):
        events += p.feed(b"v" * 100)
        if events:
            break
    assert [type(e) for e in events] == [Rejected] and events[0].error.status == 431


def test_limit_head_bytes_independent_of_split() -> None:
    data = _get(headers=(b"Host: h", b"X: " + b"v" * 600))
    limits = Limits(max_head=1000)
    assert rejected_status(data, limits) is None
    assert not only(feed_bytewise(data, limits), Rejected)


def test_unknown_method_status_independent_of_split() -> None:
    data = b"FOO / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert rejected_status(data) == 501
    assert [r.error.status for r in only(feed_bytewise(data), Rejected)] == [501]


# -- rejection behaviour ---------------------------------------------------------------

def test_dead_after_rejected() -> None:
    p = RequestParser()
    events = p.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert isinstance(events[-1], Rejected) and events[-1].error.status == 400
    assert p.dead
    assert p.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") == []


def test_rejected_carries_http_error() -> None:
    events = feed_all(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n")
    assert len(events) == 1 and isinstance(events[0], Rejected)
    error = events[0].error
    assert isinstance(error, HttpError) and error.status == 505 and error.reason
    assert str(error).startswith("505 ")


def test_empty_feed_is_harmless() -> None:
    p = RequestParser()
    assert p.feed(b"") == []
    assert normalize(p.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"))[1:] == [("end",)]


# -- ResponseParser ----------------------------------------------------------------------

def response(data: bytes, method: bytes = b"GET", bytewise: bool = False,
             finish: bool = False) -> list[Norm]:
    p = ResponseParser(method)
    pieces = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    events = feed_pieces(p, pieces)
    if finish:
        events += p.finish()
    assert_well_formed(events)
    return normalize(events)


def rhead(status: int, headers: tuple[tuple[bytes, bytes], ...], keep_alive: bool = True,
          chunked: bool = False, length: int | None = None, version: str = "1.1") -> Norm:
    return ("head", b"", b"", status, version, headers, keep_alive, chunked, length)


@pytest.mark.parametrize("bytewise", [False, True])
def test_response_content_length(bytewise: bool) -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"
    assert response(data, bytewise=bytewise) == [
        rhead(200, ((b"Content-Length", b"5"), (b"X-A", b"b")), length=5),
        ("data", b"hello"), ("end",)]


@pytest.mark.parametrize("bytewise", [False, True])
def test_response_chunked(bytewise: bool) -> None:
    data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;x=y\r\n!\r\n0\r\nT: v\r\n\r\n")
    assert response(data, bytewise=bytewise) == [
        rhead(200, ((b"Transfer-Encoding", b"chunked"),), chunked=True),
        ("data", b"hello!"), ("end",)]


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_response_read_until_close(version: bytes) -> None:
    p = ResponseParser()
    events = p.feed(b"HTTP/%s 200 OK\r\nX: y\r\n\r\nhel" % version) + p.feed(b"lo")
    assert p.in_message and not p.dead
    events += p.finish()
    assert normalize(events) == [
        rhead(200, ((b"X", b"y"),), keep_alive=False, version=version.decode()),
        ("data", b"hello"), ("end",)]
    assert p.finish() == []


def test_response_to_head_has_no_body() -> None:
    p = ResponseParser(b"HEAD")
    events = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert normalize(events) == [rhead(200, ((b"Content-Length", b"5"),), length=5), ("end",)]
    assert p.dead and not p.in_message
    assert p.feed(b"hello") == [] and p.finish() == []


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("bytewise", [False, True])
def test_response_bodiless_status(status: int, bytewise: bool) -> None:
    data = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
    assert response(data, bytewise=bytewise) == [
        rhead(status, ((b"Content-Length", b"5"),), length=5), ("end",)]


@pytest.mark.parametrize("status", [100, 103, 199])
def test_response_interim_then_final(status: int) -> None:
    """1xx responses come through as a head and an end, then the final one."""
    data = (b"HTTP/1.1 %d X\r\nLink: <a>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" % status)
    events = ResponseParser(b"GET").feed(data)
    assert [type(e) for e in events] == [Head, End, Head, Data, End]
    assert (events[0].status, events[2].status, events[3].data) == (status, 200, b"ok")


def test_response_interim_before_a_head_response() -> None:
    events = ResponseParser(b"HEAD").feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
    assert [type(e) for e in events] == [Head, End, Head, End]


def test_response_101_is_502() -> None:
    assert response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n") == [("rejected", 502)]


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX A: b\r\n\r\n",
], ids=["dup-cl-same", "dup-cl-differ", "cl-te", "cl-negative", "bad-chunk", "http2",
        "obs-fold", "garbage", "bad-name"])
def test_response_malformed_is_502(data: bytes) -> None:
    for bytewise in (False, True):
        events = response(data, bytewise=bytewise)
        assert events[-1] == ("rejected", 502), events


def test_response_status_kept() -> None:
    p = ResponseParser()
    p.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    assert p.status == 404


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Le",
    b"H",
], ids=["short-length", "mid-chunk", "no-last-chunk", "mid-head", "one-byte"])
def test_response_truncated_finish_is_502(data: bytes) -> None:
    p = ResponseParser()
    events = p.feed(data) + p.finish()
    assert_well_formed(events)
    assert isinstance(events[-1], Rejected) and events[-1].error.status == 502
    assert p.dead and p.feed(b"more") == []


def test_response_finish_before_any_byte() -> None:
    p = ResponseParser()
    assert p.finish() == []


def test_response_complete_then_finish() -> None:
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert p.finish() == []


def test_response_finish_after_rejected() -> None:
    p = ResponseParser()
    assert isinstance(p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2"
                             b"\r\n\r\nx")[-1], Rejected)
    assert p.finish() == []
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    assert isinstance(p.finish()[-1], Rejected)
    assert p.finish() == []


def test_response_keep_alive_and_close() -> None:
    assert response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")[0][6] \
        is False
    assert response(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
                    )[0][6] is True


# -- writers -------------------------------------------------------------------------------

IMF_FIXDATE = re.compile(
    rb"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (0[1-9]|[12][0-9]|3[01]) "
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    rb"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60) GMT$")


def test_http_date_is_imf_fixdate() -> None:
    before = time.time()
    value = http_date()
    assert isinstance(value, bytes)
    assert IMF_FIXDATE.match(value), value
    when = parsedate_to_datetime(value.decode("ascii")).timestamp()
    assert before - 1 <= when <= time.time() + 1


def test_status_line() -> None:
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(505) == b"HTTP/1.1 505 HTTP Version Not Supported\r\n"
    assert status_line(799) == b"HTTP/1.1 799 Unknown\r\n"


def test_response_head_writer() -> None:
    assert response_head(200, [(b"Content-Length", b"2"), (b"X-A", b"b")]) == \
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\n"
    assert response_head(204, []) == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_request_head_writer() -> None:
    assert request_head(b"GET", b"/p?q", [(b"Host", b"h")]) == \
        b"GET /p?q HTTP/1.1\r\nHost: h\r\n\r\n"


def test_request_head_round_trip() -> None:
    headers = ((b"Host", b"backend:9002"), (b"X-Forwarded-For", b"1.2.3.4"),
               (b"Content-Length", b"3"))
    events = feed_all(request_head(b"POST", b"/x", headers) + b"abc")
    assert normalize(events) == normalize([
        Head(b"POST", b"/x", 0, "1.1", headers, True, False, 3), Data(b"abc"), END])


def test_chunk_writers_round_trip() -> None:
    assert chunk(b"abc") == b"3\r\nabc\r\n"
    assert chunk(b"x" * 255).startswith(b"ff\r\n")
    assert chunk(b"x" * 4096).startswith(b"1000\r\n")
    assert LAST_CHUNK == b"0\r\n\r\n"
    body = [b"hello", b" ", b"x" * 1000]
    data = (response_head(200, [(b"Transfer-Encoding", b"chunked")])
            + b"".join(chunk(part) for part in body) + LAST_CHUNK)
    assert response(data, bytewise=True)[1:] == [("data", b"".join(body)), ("end",)]


@pytest.mark.parametrize("method, status, expected", [
    (b"GET", 200, True), (b"POST", 201, True), (b"GET", 404, True), (b"GET", 500, True),
    (b"HEAD", 200, False), (b"HEAD", 404, False),
    (b"GET", 204, False), (b"GET", 304, False),
    (b"GET", 100, False), (b"GET", 101, False), (b"GET", 199, False),
])
def test_has_body(method: bytes, status: int, expected: bool) -> None:
    assert has_body(method, status) is expected


# -- property-based ----------------------------------------------------------------------

SEEDS = [c.data for c in CASES if len(c.data) <= 2048]
PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at a few random positions (empty pieces allowed)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus request with a few byte flips, insertions, deletions or a truncation."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from(b"\x00\r\n \t:;,0aF\x7f\xff"))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(
                [b"\r\n", b"\r", b"\n", b" ", b"\x00", b"0", b"Transfer-Encoding: chunked\r\n",
                 b"Content-Length: 3\r\n", b"Host: y\r\n", b"\r\n\r\n"]))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 16))]
    return bytes(data)


def check_stream(pieces: Sequence[bytes], limits: Limits = Limits()) -> None:
    parser = RequestParser(limits)
    events: list[Event] = []
    for piece in pieces:
        got = parser.feed(piece)          # must not raise
        assert isinstance(got, list)
        if events and isinstance(events[-1], Rejected):
            assert got == [], "events after Rejected"
        events.extend(got)
    assert_well_formed(events)
    assert len(only(events, Rejected)) <= 1
    if only(events, Rejected):
        assert parser.dead
        assert 400 <= events[-1].error.status < 600
        assert parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") == []


@PROPERTY
@given(st.data())
def test_property_random_bytes(data: st.DataObject) -> None:
    raw = data.draw(st.binary(max_size=512))
    check_stream(data.draw(splits(raw)))


@PROPERTY
@given(st.data())
def test_property_random_text_like(data: st.DataObject) -> None:
    alphabet = st.sampled_from([b"GET ", b"POST ", b"/ ", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\n",
                                b"Host: h", b"Content-Length: ", b"Transfer-Encoding: ",
                                b"chunked", b"0", b"5", b"\r\n\r\n", b"hello", b":", b" ", b"\t"])
    raw = b"".join(data.draw(st.lists(alphabet, max_size=40)))
    check_stream(data.draw(splits(raw)), Limits(max_target=64, max_head=256, max_headers=5))


@PROPERTY
@given(st.data())
def test_property_mutated_corpus(data: st.DataObject) -> None:
    raw = data.draw(mutated())
    check_stream(data.draw(splits(raw)))


@PROPERTY
@given(st.data())
def test_property_response_parser(data: st.DataObject) -> None:
    """Random bytes and truncated good responses: never raises, 502 only."""
    good = [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\nbody"]
    truncated = st.sampled_from(good).flatmap(
        lambda b: st.integers(0, len(b)).map(lambda n: b[:n]))
    raw = data.draw(st.one_of(st.binary(max_size=256), truncated))
    method = data.draw(st.sampled_from([b"GET", b"HEAD"]))
    p = ResponseParser(method)
    events: list[Event] = []
    for piece in data.draw(splits(raw)):
        events += p.feed(piece)
    finished = p.finish()
    if not (events and isinstance(events[-1], Rejected)):
        events += finished
    assert_well_formed(events)
    assert len(only(events, Rejected)) <= 1
    for r in only(events, Rejected):
        assert r.error.status == 502


@pytest.mark.parametrize("kind", ["request", "response"])
def test_released_parser_is_freed_without_the_garbage_collector(kind: str) -> None:
    """llhttp's parser refers back to ours; ``release`` breaks that cycle, so
    a finished connection's parser goes by reference counting alone."""
    if kind == "request":
        parser: RequestParser | ResponseParser = RequestParser()
        data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    else:
        parser = ResponseParser(b"GET")
        data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert parser.feed(data)[-1] == END
    gc.disable()
    try:
        kept = weakref.ref(parser)
        del parser
        assert kept() is not None  # the cycle: reference counting cannot free it
        gc.collect()
        assert kept() is None
        if kind == "request":
            parser = RequestParser()
        else:
            parser = ResponseParser(b"GET")
        parser.feed(data)
        parser.release()
        freed = weakref.ref(parser)
        del parser
        assert freed() is None
    finally:
        gc.enable()
