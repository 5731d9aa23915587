# tests/integration/test_lb_malformed.py -- malformed and ambiguous requests through the balancer.
#
# Strategy: one real ``python -m lb`` process sits in front of a recording
# origin (tests/recording_backend.py) for the whole module.  The origin is
# extended here in two ways: it answers like a real gservers backend (each
# recorded request is re-parsed with RequestParser and handed to
# gservers.app.App over the default site, so app-level refusals -- dot
# segments, NUL in the decoded path, asterisk GET -- get the statuses the
# corpus expects), and it taps every byte it receives per connection, in
# arrival order, feeding it to a strict RequestParser of its own.  Every
# invalid corpus case (tests/requests, format in its README) is sent verbatim
# to the balancer: the client must get the .expect statuses and a close,
# and the origin must have received exactly the well-framed requests the
# balancer was entitled to forward -- re-framed byte for byte as
# lb.rewrite.upstream_request states them -- and not one byte more: a
# framing-level rejection (the ``rejected:`` key) never reaches it, for
# pipelined cases only the valid requests before the bad one do.  After each
# case the balancer still serves a normal request.  A Hypothesis property
# test then throws random and mutated corpus streams at the same balancer:
# it stays up and serving, every answer is a sequence of well-formed HTTP/1.1
# responses (or nothing, then a close), and everything the origin received
# parses strictly (no Rejected on any connection: nothing ambiguous was
# forwarded).  Requests are half-closed after sending, so a truncated
# request ends at once instead of waiting for the header timeout.  Known
# server bugs are strict xfails naming the bug.
from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from gservers.backend.app import App
from gservers.backend.config import DEFAULT_ROOT
from gservers.http import Data, End, Head, Limits, Rejected, RequestParser
from gservers.http.responses import frame
from lb.rewrite import upstream_request
from tests.corpus import CASES, Case
from tests.recording_backend import Connection, RecordingBackend, Request
from tests.recording_backend import Reply as Scripted
from tests.support import Balancer, Reply, send_and_read, start_backend, start_lb

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
    """A socket stand-in that shows the origin every byte it reads."""

    def __init__(self, sock: socket.socket, owner: TappedOrigin, index: int) -> None:
        self._sock = sock
        self._owner = owner
        self._index = index

    def recv(self, n: int) -> bytes:
        data = self._sock.recv(n)
        if data:
            self._owner.tapped(self._index, data)
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


class TappedOrigin(RecordingBackend):
    """The recording origin, answering like gservers, with a byte tap per connection."""

    def __init__(self) -> None:
        self.tap_lock = threading.Lock()
        self.raw: dict[int, bytearray] = {}          #: bytes received since reset, per connection
        self.parsers: dict[int, RequestParser] = {}  #: strict parse of each whole connection
        self.violations: list[tuple[int, str, bytes]] = []
        self.ordered: list[Request] = []             #: proxied requests in arrival order
        super().__init__(_app_responder())

    def tapped(self, index: int, data: bytes) -> None:
        with self.tap_lock:
            self.raw.setdefault(index, bytearray()).extend(data)
            parser = self.parsers.setdefault(index, RequestParser(UPSTREAM_LIMITS))
            for event in parser.feed(data):
                if type(event) is Rejected:
                    self.violations.append((index, event.error.reason, bytes(self.raw[index])))

    def _serve(self, sock: socket.socket, conn: Connection) -> None:  # type: ignore[override]
        super()._serve(_Tap(sock, self, conn.index), conn)  # type: ignore[arg-type]

    def _read_request(self, reader: Any, conn: Connection) -> Request | None:  # type: ignore[override]
        req = RecordingBackend._read_request(reader, conn)
        if req is not None and not req.is_health_check:
            with self.tap_lock:
                self.ordered.append(req)
        return req

    def reset(self) -> None:
        super().reset()
        with self.tap_lock:
            self.raw.clear()
            self.ordered.clear()

    def proxied_bytes(self) -> int:
        """Bytes received since reset on connections that carried no health check."""
        with self.tap_lock:
            return sum(len(raw) for raw in self.raw.values()
                       if not raw.startswith(b"GET /health "))


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


def forwardable(data: bytes) -> tuple[list[tuple[Head, bytes]], bool]:
    """The complete requests in ``data`` that the balancer may forward, in
    order: up to a rejection, or up to a request that ends the connection.
    Also whether the stream was rejected."""
    out: list[tuple[Head, bytes]] = []
    head: Head | None = None
    body: list[bytes] = []
    for event in RequestParser().feed(data):
        if type(event) is Head:
            head, body = event, []
        elif type(event) is Data:
            body.append(event.data)
        elif type(event) is End:
            assert head is not None
            out.append((head, b"".join(body)))
            if not head.keep_alive:
                return out, False
            head = None
        else:
            return out, True
    return out, False


def reframed(head: Head, body: bytes) -> bytes:
    """What the balancer sends upstream for a buffered request."""
    assert len(body) <= MAX_BODY_BUFFER
    declared = body or head.content_length is not None or head.chunked
    return upstream_request(head, CLIENT_IP, len(body) if declared else None, False) + body


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


# The "socket" xfail marks of the corpus apply: the balancer's client side is
# the backends' own parser and connection machinery.
@pytest.mark.parametrize("case", [c.param("socket") for c in INVALID])
def test_invalid_case_through_lb(rig: Rig, case: Case) -> None:
    origin, lb = rig.origin, rig.lb
    origin.reset()
    payload, statuses, methods = case.data, list(case.statuses), list(case.methods)
    if not case.close:
        payload += CLOSER
        statuses.append(200)
        methods.append(b"GET")
    expected, rejected = forwardable(payload)
    assert rejected == (case.rejected is not None), "corpus and parser disagree"

    data, closed = send_and_read(lb.port, payload, HANG)
    replies = split_responses(data, methods)
    assert [r.status for r in replies] == statuses, data[:600]
    assert closed, "the balancer kept the connection open"
    assert replies[-1].header("connection") == b"close", replies[-1].raw[:300]
    if case.rejected is not None:
        assert replies[-1].status == case.rejected

    time.sleep(0.02)  # a (wrongly) forwarded tail would land now at the latest
    want = [reframed(h, b) for h, b in expected]
    with origin.tap_lock:
        got = [r.raw_head + r.raw_body for r in origin.ordered]
    assert got == want, "the origin received other requests than the well-framed ones"
    assert origin.proxied_bytes() == sum(map(len, want)), \
        f"the origin received bytes beyond the forwarded requests: {dict(origin.raw)!r}"[:2000]
    assert not origin.violations, origin.violations
    assert lb.server.proc.poll() is None
    assert_page_served(lb.port)


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
    time.sleep(0.01)
    assert not origin.violations, f"the origin received a stream it must refuse: " \
                                  f"{origin.violations[-1]!r}"[:3000]
    with origin.tap_lock:
        received = list(origin.ordered)
    tally(f"forwarded {min(len(received), 3)}{'+' if len(received) >= 3 else ''}")
    for req in received:
        events = RequestParser(UPSTREAM_LIMITS).feed(req.raw_head + req.raw_body)
        kinds = [type(e) for e in events if type(e) is not Data]
        assert kinds == [Head, End], (req.raw_head, events)
        names = [k.lower() for k, _ in req.headers]
        assert not (b"content-length" in names and b"transfer-encoding" in names)
        assert names.count(b"content-length") <= 1 and names.count(b"transfer-encoding") <= 1
    assert_page_served(lb.port)
