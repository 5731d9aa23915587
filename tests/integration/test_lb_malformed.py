# tests/integration/test_lb_malformed.py -- malformed and ambiguous requests through the balancer.
#
# Strategy: one real ``python -m lb`` process sits in front of a recording
# origin (tests/recording_backend.py) for the whole module.  The origin is
# extended here in two ways: it answers like a real gservers backend (each
# recorded request is re-parsed with RequestParser and handed to
# gservers.app.App over the default site, so app-level refusals -- dot
# segments, NUL in the decoded path -- get the statuses the
# corpus expects), and it taps every byte it receives per connection, in
# arrival order.  The judge of those bytes shares nothing with the balancer:
# each connection is parsed with h11 (plus a check of the RFC 9112 grammar
# of every head line, since h11 tolerates bare LF, obs-fold and
# Content-Length beside Transfer-Encoding), and what the origin must receive
# is written out here from RFC 9110/9112 -- method, target, the end-to-end
# fields in order, no hop-by-hop field (7.6.1) nor one Connection names,
# X-Forwarded-For appended to, X-Forwarded-Proto: http, Via extended with
# the received protocol (7.6.3), HTTP/1.1 on the wire, the decoded body --
# never computed by lb.rewrite or gservers.http.  Every invalid corpus case
# (tests/requests, format in its README) is sent verbatim to the balancer:
# the client must get the .expect statuses and a close, and the origin must
# have received exactly the requests the balancer was entitled to forward
# (their number follows from the .expect file, their content from the table
# below) and not one byte more: a framing-level rejection (the ``rejected:``
# key) never reaches it, for pipelined cases only the valid requests before
# the bad one do.  "Not one byte more" is judged once the kernel holds no
# byte on the way to the origin (no unacknowledged byte on the balancer's
# side, none unread or unaccepted on the origin's) -- a condition, not a
# sleep.  After each case the balancer still serves a normal request.  A
# Hypothesis property test then throws random and mutated corpus streams at
# the same balancer: it stays up and serving, every answer is a sequence of
# well-formed HTTP/1.1 responses (or nothing, then a close), and everything
# the origin received parses strictly (nothing ambiguous was forwarded).
# Requests are half-closed after sending, so a truncated request ends at
# once instead of waiting for the header timeout.  Known server bugs are
# strict xfails naming the bug.
from __future__ import annotations

import re
import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from gservers.backend.app import App
from gservers.backend.config import DEFAULT_ROOT
from gservers.http import Data, Head, Limits, RequestParser
from gservers.http.responses import frame
from tests.corpus import CASES, Case
from tests.recording_backend import Connection, RecordingBackend, Request
from tests.recording_backend import Reply as Scripted
from tests.support import Balancer, Reply, send_and_read, start_backend, start_lb, wait_until

HANG = 10.0                      #: socket timeout: only to stop a hang
RARE_HEALTH = ("--health-interval", "3600")
CLOSER = b"GET /page.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
CLIENT_IP = b"127.0.0.1"
MAX_BODY_BUFFER = 65536          #: the balancer's default --max-body-buffer
#: The balancer adds X-Forwarded-For, X-Forwarded-Proto, Via (and Host for an
#: HTTP/1.0 request without one), so a request at the client-side limits may
#: exceed them upstream; the origin's strict check is about framing, not size.
UPSTREAM_LIMITS = Limits(max_target=8192, max_head=65536, max_headers=200)
STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n]*\r\n")


# -- an origin that answers like gservers and taps every byte ---------------------------

class _Tap:
    """A socket stand-in that shows the origin every byte it reads.  It waits
    for readability outside the tap lock and reads under it, so whoever holds
    the lock knows that every byte taken from the kernel has been judged."""

    def __init__(self, sock: socket.socket, owner: TappedOrigin, index: int) -> None:
        self._sock = sock
        self._owner = owner
        self._index = index
        self._peer = sock.getpeername()[1]

    def recv(self, n: int) -> bytes:
        select.select([self._sock], [], [])
        with self._owner.tap_lock:
            data = self._sock.recv(n)
            if data:
                self._owner.tapped(self._index, data)
            else:
                self._owner.ended(self._index, self._peer)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _app_responder() -> Any:
    app = App(DEFAULT_ROOT)

    def respond(req: Request) -> Scripted:
        try:
            events = RequestParser(UPSTREAM_LIMITS).feed(req.raw_head + req.raw_body)
            head = next(e for e in events if type(e) is Head)
            body = b"".join(e.data for e in events if type(e) is Data)
            response = app.handle(head, body)
            keep = head.keep_alive and not response.close
            content = response.body
            if response.path is not None:
                with open(response.path, "rb") as fh:
                    content = fh.read()
            return Scripted(frame(response, head, keep),
                            () if head.method == b"HEAD" else (content,), close=not keep)
        except Exception as exc:  # never leave the balancer without an answer
            text = f"origin failed: {exc!r}\n".encode()
            return Scripted(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n"
                            b"Connection: close\r\n\r\n" % len(text), (text,), close=True)
    return respond


@dataclass
class Judged:
    """One request as h11 parsed it from the bytes the origin received."""

    connection: int
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]  #: names lower-cased by h11, in wire order
    body: bytes = b""


class _Judge:
    """h11 over one origin connection, answering each request with an empty
    200 so that it moves on to the next; a protocol error ends the judging."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.h11: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=UPSTREAM_LIMITS.max_head + 1024)
        self.current: Judged | None = None

    def feed(self, data: bytes) -> tuple[list[Judged], str | None]:
        done: list[Judged] = []
        conn = self.h11
        if conn is None:
            return done, None
        conn.receive_data(data)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    return done, None
                if isinstance(event, h11.Request):
                    self.current = Judged(self.index, event.method, event.target,
                                          event.http_version, list(event.headers))
                elif isinstance(event, h11.Data):
                    assert self.current is not None
                    self.current.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    assert self.current is not None
                    done.append(self.current)
                    self.current = None
                    conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                    conn.send(h11.EndOfMessage())
                    if conn.our_state is h11.DONE:  # not MUST_CLOSE: a next request may come
                        conn.start_next_cycle()
                else:  # ConnectionClosed, PAUSED: nothing more may come
                    if conn.trailing_data[0]:
                        raise h11.RemoteProtocolError(f"bytes after {event!r}")
                    return done, None
        except (h11.ProtocolError, AssertionError) as exc:
            self.h11 = None
            return done, f"h11: {exc!r}"


#: RFC 9110 5.6.2 token, 5.5 field-value; RFC 9112 3 request-line, 5 field-line.
TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
FIELD_LINE = re.compile(rb"%s:[ \t]*(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*"
                        rb"[\x21-\x7e\x80-\xff])?)?[ \t]*" % TOKEN)
REQUEST_LINE = re.compile(rb"%s [\x21-\x7e]+ HTTP/1\.1" % TOKEN)


def grammar_errors(raw_head: bytes) -> list[str]:
    """Where a head the origin received breaks the RFC 9112 grammar (CRLF
    only, no obs-fold, a token name, at most one Content-Length or
    Transfer-Encoding and never both)."""
    errors = []
    if not raw_head.endswith(b"\r\n\r\n"):
        errors.append("head does not end in CRLF CRLF")
    lines = raw_head[:-4].split(b"\r\n")
    if not REQUEST_LINE.fullmatch(lines[0]):
        errors.append(f"request line {lines[0]!r}")
    names = []
    for line in lines[1:]:
        if not FIELD_LINE.fullmatch(line):
            errors.append(f"field line {line!r}")
        names.append(line.partition(b":")[0].lower())
    framing = [n for n in names if n in (b"content-length", b"transfer-encoding")]
    if len(framing) > 1:
        errors.append(f"framing fields {framing!r}")
    return errors


def tcp_sockets(port: int) -> list[tuple[int, int, int, int, int]]:
    """(local port, remote port, state, tx_queue, rx_queue) of every TCP
    socket of this network namespace with ``port`` at either end."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            if port in (local, remote):
                tx, rx = (int(x, 16) for x in fields[4].split(":"))
                rows.append((local, remote, int(fields[3], 16), tx, rx))
    return rows


LISTEN, SYN_SENT, SYN_RECV, CLOSE_WAIT = 0x0A, 0x02, 0x03, 0x08


class TappedOrigin(RecordingBackend):
    """The recording origin, answering like gservers, with a byte tap per
    connection judged by h11."""

    def __init__(self) -> None:
        self.tap_lock = threading.RLock()
        self.raw: dict[int, bytearray] = {}          #: bytes received since reset, per connection
        self.judges: dict[int, _Judge] = {}          #: h11 over each whole connection
        self.violations: list[tuple[int, str, bytes]] = []
        self.judged: list[Judged] = []               #: proxied requests since reset, by h11
        self.heads: list[bytes] = []                 #: their raw heads, as the recorder split them
        self.closed_peers: set[int] = set()          #: balancer ports whose close was read
        self.closed_indexes: set[int] = set()
        super().__init__(_app_responder())

    def tapped(self, index: int, data: bytes) -> None:
        with self.tap_lock:
            self.raw.setdefault(index, bytearray()).extend(data)
            judge = self.judges.setdefault(index, _Judge(index))
            done, error = judge.feed(data)
            self.judged.extend(r for r in done if r.target != b"/health")
            if error:
                self.violations.append((index, error, bytes(self.raw[index])))

    def ended(self, index: int, peer: int) -> None:
        """The balancer closed connection ``index`` (from its port ``peer``)."""
        with self.tap_lock:
            self.closed_peers.add(peer)
            self.closed_indexes.add(index)

    def _serve(self, sock: socket.socket, conn: Connection) -> None:  # type: ignore[override]
        super()._serve(_Tap(sock, self, conn.index), conn)  # type: ignore[arg-type]

    def _read_request(self, reader: Any, conn: Connection) -> Request | None:  # type: ignore[override]
        req = RecordingBackend._read_request(reader, conn)
        if req is not None and not req.is_health_check:
            with self.tap_lock:
                self.heads.append(req.raw_head)
                for error in grammar_errors(req.raw_head):
                    self.violations.append((conn.index, error, req.raw_head))
        return req

    def reset(self) -> None:
        super().reset()
        with self.tap_lock:
            self.raw.clear()
            self.judged.clear()
            self.heads.clear()

    def quiet(self) -> bool:
        """The kernel holds no byte on its way to this origin: none
        unacknowledged on a balancer's socket towards it, none unread on one
        of its own, no connection half set up or waiting to be accepted --
        and every byte read has been judged (the tap lock)."""
        with self.tap_lock:
            for local, remote, state, tx, rx in tcp_sockets(self.port):
                if state in (SYN_SENT, SYN_RECV):
                    return False
                if local == self.port and rx:      # unread, or (LISTEN) unaccepted
                    return False
                if local == self.port and state == CLOSE_WAIT and remote not in self.closed_peers:
                    return False                   # a close not yet read
                if remote == self.port and tx:     # the balancer's side: not yet acked
                    return False
            return True

    def settle(self) -> None:
        assert wait_until(self.quiet, HANG, interval=0.01), \
            f"bytes still on their way to the origin: {tcp_sockets(self.port)}"

    def proxied_bytes(self) -> int:
        """Bytes received since reset on connections that carried no health check."""
        with self.tap_lock:
            return sum(len(raw) for raw in self.raw.values()
                       if not raw.startswith(b"GET /health "))

    def leftovers(self) -> dict[int, bytes]:
        """Bytes h11 holds on a connection still open that make no whole
        request yet (a request cut short by a client that went away is fine
        when the balancer closed that connection)."""
        with self.tap_lock:
            out = {}
            for index, judge in self.judges.items():
                if index in self.closed_indexes or judge.h11 is None:
                    continue
                if judge.current or judge.h11.trailing_data[0]:
                    out[index] = bytes(judge.h11.trailing_data[0])
            return out


@dataclass
class Rig:
    origin: TappedOrigin
    lb: Balancer


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    origin = TappedOrigin()
    lb = start_lb(*RARE_HEALTH, "--header-timeout", "3", backends=[origin.port])
    try:
        origin.wait_health_check()
        yield Rig(origin, lb)
    finally:
        lb.server.stop()
        origin.stop()


# -- client side ---------------------------------------------------------------------------

def split_responses(data: bytes, methods: list[bytes]) -> list[Reply]:
    """Split ``data`` into well-formed HTTP/1.1 responses, strictly: every status
    line must match, every body must be framed; 1xx responses take no method.
    Raises AssertionError on anything else."""
    out: list[Reply] = []
    pos, i = 0, 0
    while pos < len(data):
        m = STATUS_LINE.match(data, pos)
        assert m, f"not a status line at {pos}: {data[pos:pos + 80]!r}"
        end = data.find(b"\r\n\r\n", pos)
        assert end >= 0, f"response head never ends: {data[pos:pos + 200]!r}"
        start, status = pos, int(m.group(1))
        headers: list[tuple[bytes, bytes]] = []
        for line in data[m.end():end + 2].split(b"\r\n")[:-1]:
            name, sep, value = line.partition(b":")
            assert sep and name and name == name.strip(), f"bad header line {line!r}"
            headers.append((name, value.strip()))
        pos = end + 4
        lookup = {k.lower(): v for k, v in headers}
        method = b"GET"
        if status >= 200:
            method = methods[i] if i < len(methods) else b"GET"
            i += 1
        body = b""
        if method == b"HEAD" or status in (204, 304) or status < 200:
            pass
        elif b"transfer-encoding" in lookup:
            assert lookup[b"transfer-encoding"].lower() == b"chunked", headers
            assert b"content-length" not in lookup, "both Content-Length and chunked"
            parts = []
            while True:
                eol = data.index(b"\r\n", pos)
                size = int(data[pos:eol].split(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    while (eol := data.index(b"\r\n", pos)) != pos:
                        pos = eol + 2
                    pos += 2
                    break
                parts.append(data[pos:pos + size])
                assert data[pos + size:pos + size + 2] == b"\r\n"
                pos += size + 2
            body = b"".join(parts)
        elif b"content-length" in lookup:
            n = int(lookup[b"content-length"])
            body = data[pos:pos + n]
            assert len(body) == n, f"response body cut short: {len(body)} of {n}"
            pos += n
        else:
            body, pos = data[pos:], len(data)
        out.append(Reply(status, m.group(0), headers, body, data[start:pos]))
    return out


# -- what the origin must receive, from RFC 9110/9112 -----------------------------------

#: RFC 9110 7.6.1: hop-by-hop fields a proxy never forwards (with those Connection
#: names); Content-Length and Transfer-Encoding are the next hop's framing (RFC 9112 6).
HOP_BY_HOP_FIELDS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te",
                               b"trailer", b"transfer-encoding", b"upgrade"})
FRAMING = frozenset({b"content-length", b"transfer-encoding"})
FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"via"})
#: RFC 9110 7.6.3: Via = received-protocol SP received-by (a pseudonym or host).
VIA_ENTRY = re.compile(rb"(1\.[01]) [!-~]+")


@dataclass(frozen=True)
class Upstream:
    """A request as the origin must receive it, written from the client's bytes by hand."""

    method: bytes
    target: bytes
    fields: tuple[tuple[bytes, bytes], ...]  #: the end-to-end fields, names lower-case, in order
    body: bytes = b""
    via_proto: bytes = b"1.1"                 #: the protocol the client spoke (7.6.3)
    via_before: tuple[bytes, ...] = ()        #: Via entries the client sent
    forwarded_for: bytes = CLIENT_IP          #: the client's X-Forwarded-For list, then its IP
    any_host: bool = False                    #: no Host from the client: any one Host will do


HOST = ((b"host", b"localhost"),)
PAGE = Upstream(b"GET", b"/page.html", HOST)
#: The requests of each invalid case the origin must receive; a case not named
#: here must send it nothing (checked against the .expect counts below).
UPSTREAM = {
    "backslash_in_path": [Upstream(b"GET", b"/images%5c..%5cpage.html", HOST)],
    "dot_segment": [Upstream(b"GET", b"/images/../page.html", HOST)],
    "dot_segment_encoded": [Upstream(b"GET", b"/images/%2e%2e/page.html", HOST)],
    "dot_segment_single": [Upstream(b"GET", b"/./page.html", HOST)],
    "nul_percent_encoded": [Upstream(b"GET", b"/page.html%00.txt", HOST)],
    "pipelined_then_cl_te_smuggle": [PAGE],
    "pipelined_then_garbage": [PAGE],
    "pipelined_then_obs_fold_te": [PAGE],
    # HTTP/1.0, "Connection: keep-alive", chunked "0": an empty body, no Host
    "te_http10_keep_alive": [Upstream(b"POST", b"/", (), via_proto=b"1.0", any_host=True)],
}
#: CLOSER as forwarded: its "Connection: close" is hop-by-hop.
CLOSER_UPSTREAM = PAGE


def restatement_errors(got: Judged, want: Upstream) -> list[str]:
    """How a request the origin received differs from what RFC 9110/9112 make of ``want``."""
    errors = []
    if (got.method, got.target) != (want.method, want.target):
        errors.append(f"request line {got.method!r} {got.target!r}")
    if got.version != b"1.1":  # RFC 9110 6.2: an intermediary sends its own version
        errors.append(f"HTTP/{got.version.decode()} upstream")
    if got.body != want.body:
        errors.append(f"body {got.body!r}")
    names = [n for n, _ in got.headers]
    for name in sorted(set(names) & HOP_BY_HOP_FIELDS - FRAMING):
        errors.append(f"hop-by-hop {name!r} forwarded")
    te = [v for n, v in got.headers if n == b"transfer-encoding"]
    cl = [v for n, v in got.headers if n == b"content-length"]
    if te and te != [b"chunked"] or cl and cl != [b"%d" % len(want.body)] or te and cl:
        errors.append(f"framing Transfer-Encoding {te!r} Content-Length {cl!r}")
    if not te and not cl and want.body:
        errors.append("a body without framing")
    rest = [(n, v) for n, v in got.headers if n not in FRAMING | FORWARDING]
    if want.any_host:
        hosts = [v for n, v in rest if n == b"host"]
        if len(hosts) != 1:
            errors.append(f"Host {hosts!r}: HTTP/1.1 needs exactly one (RFC 9112 3.2)")
        rest = [(n, v) for n, v in rest if n != b"host"]
    if rest != list(want.fields):
        errors.append(f"end-to-end fields {rest!r}, want {list(want.fields)!r}")
    xff = b", ".join(v for n, v in got.headers if n == b"x-forwarded-for")
    if xff != want.forwarded_for:
        errors.append(f"X-Forwarded-For {xff!r}, want {want.forwarded_for!r}")
    xfp = [v for n, v in got.headers if n == b"x-forwarded-proto"]
    if xfp != [b"http"]:
        errors.append(f"X-Forwarded-Proto {xfp!r}, want [b'http']")
    via = [e.strip() for n, v in got.headers if n == b"via" for e in v.split(b",")]
    last = VIA_ENTRY.fullmatch(via[-1]) if via else None
    if tuple(via[:-1]) != want.via_before or not last or last.group(1) != want.via_proto:
        errors.append(f"Via {via!r}, want {list(want.via_before)!r}, {want.via_proto!r} SP name")
    return errors


def assert_received(origin: TappedOrigin, want: list[Upstream]) -> None:
    """The origin received exactly ``want``, in order, and not one byte more."""
    origin.settle()
    with origin.tap_lock:
        got = list(origin.judged)
        violations = list(origin.violations)
    assert not violations, f"the origin received bytes RFC 9112 refuses: {violations!r}"[:3000]
    assert len(got) == len(want), \
        f"the origin received {len(got)} requests, not {len(want)}: {got!r}"[:3000]
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        errors = restatement_errors(g, w)
        assert not errors, f"request {i} as received: {g!r}\n" + "\n".join(errors)
    assert not origin.leftovers(), \
        f"the origin received bytes beyond the forwarded requests: {origin.leftovers()!r}"[:2000]


def assert_page_served(port: int) -> None:
    """A normal request through the balancer gets the backend's 200."""
    data, closed = send_and_read(port, CLOSER, HANG)
    replies = split_responses(data, [b"GET"])
    assert closed and [r.status for r in replies] == [200], data[:300]
    assert b"It works" in replies[0].body


# -- the invalid corpus --------------------------------------------------------------------

INVALID = [c for c in CASES if c.kind == "invalid"]


def test_corpus_has_framing_and_app_level_cases() -> None:
    assert sum(c.rejected is not None for c in INVALID) >= 40
    assert sum(c.rejected is None for c in INVALID) >= 3


def test_upstream_table_matches_the_corpus() -> None:
    """UPSTREAM names a request for every answer the origin gives in an invalid
    case: every final status but a rejection's (the .expect file, not code)."""
    for case in INVALID:
        forwarded = len(case.finals) - (case.rejected is not None)
        assert len(UPSTREAM.get(case.name, [])) == forwarded, case.id
    assert set(UPSTREAM) <= {c.name for c in INVALID}


# The "socket" xfail marks of the corpus apply: the balancer's client side is
# the backends' own parser and connection machinery.
@pytest.mark.parametrize("case", [c.param("socket") for c in INVALID])
def test_invalid_case_through_lb(rig: Rig, case: Case) -> None:
    origin, lb = rig.origin, rig.lb
    origin.reset()
    payload, statuses, methods = case.data, list(case.statuses), list(case.methods)
    want = list(UPSTREAM.get(case.name, []))
    if not case.close:
        payload += CLOSER
        statuses.append(200)
        methods.append(b"GET")
        want.append(CLOSER_UPSTREAM)

    data, closed = send_and_read(lb.port, payload, HANG)
    replies = split_responses(data, methods)
    assert [r.status for r in replies] == statuses, data[:600]
    assert closed, "the balancer kept the connection open"
    assert replies[-1].header("connection") == b"close", replies[-1].raw[:300]
    if case.rejected is not None:
        assert replies[-1].status == case.rejected

    assert_received(origin, want)
    assert lb.server.proc.poll() is None
    assert_page_served(lb.port)


#: Requests rich in hop-by-hop and forwarding fields, and what the origin must
#: get for each (RFC 9110 7.6.1-7.6.3, RFC 9112 6-7), the last one closing.
RESTATED = [
    (b"POST /submit?x=1 HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\n"
     b"Connection: X-Private, keep-alive\r\nKeep-Alive: timeout=5\r\nX-Private: secret\r\n"
     b"TE: trailers\r\nProxy-Connection: keep-alive\r\nTrailer: X-Sum\r\n"
     b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nVia: 1.0 front\r\n"
     b"Content-Length: 11\r\n\r\nhello=world",
     Upstream(b"POST", b"/submit?x=1", ((b"host", b"example.test"), (b"accept", b"*/*")),
              b"hello=world", via_before=(b"1.0 front",), forwarded_for=b"10.0.0.1, " + CLIENT_IP)),
    (b"POST /up HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n"
     b"X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nUser-Agent: t/1\r\n\r\n"
     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
     Upstream(b"POST", b"/up", ((b"host", b"example.test"), (b"user-agent", b"t/1")),
              b"hello world", forwarded_for=b"10.0.0.1, 10.0.0.2, " + CLIENT_IP)),
    (b"GET /page.html HTTP/1.0\r\nHost: example.test\r\nKeep-Alive: timeout=1\r\n"
     b"Connection: X-Hop\r\nX-Hop: 1\r\nX-Trace: 1\r\n\r\n",  # 1.0, no keep-alive: closes
     Upstream(b"GET", b"/page.html", ((b"host", b"example.test"), (b"x-trace", b"1")),
              via_proto=b"1.0")),
]


def test_forwarded_requests_are_restated_per_rfc(rig: Rig) -> None:
    origin, lb = rig.origin, rig.lb
    origin.reset()
    data, closed = send_and_read(lb.port, b"".join(r for r, _ in RESTATED), HANG)
    replies = split_responses(data, [b"POST", b"POST", b"GET"])
    assert closed and len(replies) == len(RESTATED), data[:600]
    assert_received(origin, [u for _, u in RESTATED])


def test_header_limits_leave_room_for_the_forwarding_headers() -> None:
    """The balancer adds X-Forwarded-For, X-Forwarded-Proto and Via, so its own
    limits are a little below a backend's: a request at the backends' limit
    (100 fields) is refused by the balancer itself with 431 and never
    forwarded, and one it accepts is never refused by the backend."""
    case = next(c for c in CASES if c.id == "valid/headers_100")
    lines = case.data.split(b"\r\n")
    head_end = lines.index(b"")
    fewer = b"\r\n".join(lines[:head_end - 4] + lines[head_end:])  # 96 fields
    origin = TappedOrigin()
    backend = start_backend("async")
    try:
        lb = start_lb(*RARE_HEALTH, backends=[origin.port])
        lb_real = start_lb(*RARE_HEALTH, backends=[backend.port])
        try:
            refused, _ = send_and_read(lb.port, case.data + CLOSER, HANG)
            served, _ = send_and_read(lb_real.port, fewer + CLOSER, HANG)
        finally:
            lb.server.stop()
            lb_real.server.stop()
    finally:
        backend.stop()
        origin.stop()
    assert [r.status for r in split_responses(refused, [b"GET"])] == [431], refused[:300]
    assert origin.proxied_bytes() == 0
    assert [r.status for r in split_responses(served, [b"GET", b"GET"])] == [200, 200], served[:300]


# -- property: random and mutated streams ------------------------------------------------

VALID_SEEDS = [c.data for c in CASES if c.kind == "valid"]
INVALID_SEEDS = [c.data for c in CASES if c.kind == "invalid"]
INSERTS = [b"\r", b"\n", b"\x00", b" ", b",", b"\r\n", b"\t", b"\r\n\r\n", b":"]
#: Inserted at the end of a header line: trailing OWS and empty list elements are
#: legal, a bare CR or a NUL is not.
EOL_INSERTS = [b" ", b"\t", b",", b", ", b" ,", b" \t ", b"\r", b"\x00"]
#: Framing header lines spliced in at a line boundary (the smuggling classics).
FRAMING_LINES = [b"Content-Length: 0", b"Content-Length: 5", b"Content-Length: 70000",
                 b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity",
                 b"Transfer-Encoding: chunked, identity", b"Transfer-Encoding:\tchunked",
                 b"Content-Length:  5 ", b"Transfer-Encoding: Chunked", b"Expect: 100-continue",
                 b"Connection: close", b"Connection: Upgrade\r\nUpgrade: h2c"]


def _line_ends(data: bytearray) -> list[int]:
    """Offsets of the CRLFs ending the header lines (request line excluded)."""
    end = data.find(b"\r\n\r\n")
    head = bytes(data[:end + 2 if end >= 0 else len(data)])
    out, pos = [], head.find(b"\r\n")
    while (pos := head.find(b"\r\n", pos + 2)) >= 0:
        out.append(pos)
    return out


ALL_OPS = ("flip", "insert", "insert_eol", "case", "dup", "frame", "frame", "truncate")
#: Mutations that often leave a stream parseable: the edge cases a proxy must forward right.
GENTLE_OPS = ("insert_eol", "case", "dup", "frame")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], ops: tuple[str, ...] = ALL_OPS) -> bytes:
    """A corpus stream with 1-3 mutations: byte flips, inserted CR/LF/NUL/space/
    comma/... (anywhere, or at the end of a header line, where OWS and list
    commas are the edge cases), a flipped letter case, a duplicated header
    line, a spliced framing header, truncation."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        op = draw(st.sampled_from(ops))
        # modulo: Hypothesis favours boundary values, which would hit the method
        at = draw(st.integers(0, 1 << 20)) % (len(data) + 1)
        if op == "flip" and data:
            at = min(at, len(data) - 1)
            data[at] ^= draw(st.sampled_from([0x01, 0x20, 0x80, 0xFF, draw(st.integers(1, 255))]))
        elif op == "case":
            first = data.find(b" ") + 1  # past the method
            letters = [i for i, b in enumerate(data[first:4096], first) if 97 <= b | 0x20 <= 122]
            if letters:
                data[letters[draw(st.integers(0, 1 << 20)) % len(letters)]] ^= 0x20
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS))
        elif op == "insert_eol":
            ends = _line_ends(data)
            if ends:
                at = ends[draw(st.integers(0, 1 << 20)) % len(ends)]
                data[at:at] = draw(st.sampled_from(EOL_INSERTS))
        elif op in ("dup", "frame"):
            end = data.find(b"\r\n\r\n")
            end = end if end >= 0 else len(data)
            lines = bytes(data[:end]).split(b"\r\n")
            if len(lines) > 1:
                k = 1 + draw(st.integers(0, 1 << 20)) % (len(lines) - 1)
                lines.insert(k, lines[k] if op == "dup" else draw(st.sampled_from(FRAMING_LINES)))
                data[:end] = b"\r\n".join(lines)
        elif op == "truncate":
            del data[at:]
    return bytes(data)


streams = st.one_of(
    mutated(VALID_SEEDS, GENTLE_OPS), mutated(VALID_SEEDS, GENTLE_OPS),
    mutated(VALID_SEEDS, GENTLE_OPS), mutated(VALID_SEEDS), mutated(VALID_SEEDS),
    mutated(VALID_SEEDS), mutated(INVALID_SEEDS), mutated(INVALID_SEEDS),
    st.binary(max_size=300),
    st.builds(lambda a, b: a + b, st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST / HTTP/1.1\r\n",
                                                    b"GET /page.html HTTP/1.1\r\nHost: x\r\n"]),
              st.binary(max_size=200)),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=streams)
def test_random_and_mutated_streams(rig: Rig, data: bytes) -> None:
    origin, lb = rig.origin, rig.lb
    origin.reset()
    heads: list[bytes] = []
    for event in RequestParser().feed(data):
        if type(event) is Head:
            heads.append(event.method)
    reply, _closed = send_and_read(lb.port, data, HANG, half_close=True)
    assert lb.server.proc.poll() is None, "the balancer died:\n" + lb.server.log[-3000:]
    replies = split_responses(reply, heads)  # well-formed responses, or nothing
    tally(f"answered {'/'.join(str(r.status) for r in replies) or 'nothing'}")
    origin.settle()
    assert not origin.violations, f"the origin received a stream it must refuse: " \
                                  f"{origin.violations[-1]!r}"[:3000]
    with origin.tap_lock:
        received = list(origin.judged)
    tally(f"forwarded {min(len(received), 3)}{'+' if len(received) >= 3 else ''}")
    for req in received:
        names = [n for n, _ in req.headers]
        # RFC 9110 7.8: an upgrade the client asked for (Connection: upgrade and an
        # Upgrade field) goes on as exactly that pair; no other hop-by-hop field does.
        pair = ([v for n, v in req.headers if n == b"connection"] == [b"upgrade"]
                and b"upgrade" in names)
        allowed = frozenset({b"connection", b"upgrade"}) if pair else frozenset()
        assert not set(names) & (HOP_BY_HOP_FIELDS - FRAMING - allowed), req
        assert names.count(b"content-length") + names.count(b"transfer-encoding") <= 1, req
    assert not origin.leftovers(), f"a partial request was forwarded: {origin.leftovers()!r}"
    assert_page_served(lb.port)
