# lb/proxy.py -- the reverse proxy: one client connection, request by request.
#
# Strategy: the client side is the backends' own machinery (ClientStream over
# the shared strict parser, the same deadlines and 4xx answers), so nothing
# the backends would refuse reaches a backend.  Each request is balanced on
# its own: the policy picks a backend, its pool lends a keep-alive
# connection, the head is rebuilt (hop-by-hop headers dropped, X-Forwarded-*
# and Via added, framing re-stated) and the response is relayed event by
# event, so bodies of any size stream in both directions.  Request bodies up
# to ``max_body_buffer`` are read first, which makes the request replayable:
# a failed connect or send is retried on the next backend for any method; a
# backend that dies before answering is retried only for idempotent methods.
# Once a response byte has gone to the client there is no retry: the client
# connection is closed instead.
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gservers.http import (
    LAST_CHUNK,
    Data,
    End,
    Head,
    HttpError,
    Limits,
    Rejected,
    RequestParser,
    ResponseParser,
    chunk,
)
from gservers.http.responses import CONTINUE, Response, error_response, expects_continue
from gservers.net.idle import IdleConnections
from gservers.net.stream import (
    RECV_SIZE,
    ClientStream,
    Draining,
    RequestTimeout,
    StillIdle,
    close_gently,
    reject,
    send_response,
    set_nodelay,
)
from lb.backends import Backends, BackendState, RetryBudget
from lb.bodies import ClientGone, RequestBody
from lb.config import LBConfig
from lb.parking import PARK_AFTER, Parking
from lb.rewrite import client_response, upstream_request
from lb.upstream import Busy, ConnectError

if TYPE_CHECKING:
    from gservers.net.greenpool import GreenletPool

SERVER = b"gservers-lb/0.1"
#: Seconds a new connection that has sent nothing yet waits in its greenlet
#: before it is parked.  A client's request usually lags its handshake a
#: little (under ab -c 100 a fifth to a third of new connections had nothing
#: to read yet when their greenlet first ran), and parking then waking one
#: costs more than this wait; an idle flood still holds few greenlets.
FRESH_PARK_AFTER = 0.05
#: Client-side limits leave room for what the balancer adds (X-Forwarded-For,
#: X-Forwarded-Proto, Via): whatever it accepts, a backend with the default
#: limits accepts after rewriting.
CLIENT_LIMITS = Limits(max_head=Limits().max_head - 1024, max_headers=Limits().max_headers - 4)
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})


class Stats:
    """Totals for /stats and /metrics (per-backend figures live on BackendState)."""

    def __init__(self) -> None:
        self.requests = 0
        self.responses: dict[int, int] = {}
        self.retries = 0
        self.client_connections = 0
        self.started = time.time()

    def count(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1


@dataclass
class Outcome:
    """How one attempt at a backend ended."""

    sent: int = 0                 #: response bytes sent to the client
    status: int = 0
    retry: bool = False           #: nothing reached the client and the request may be replayed
    error: HttpError | None = None
    client_keep_alive: bool = True
    upstream_time: float = 0.0


class Proxy:
    """Shared state of one worker's proxy: config, backends, stats, log.

    Idle client connections are *parked*: rather than a greenlet blocked in
    recv (about 9 KB each), a connection waiting for a request -- one that
    has sent nothing yet at once, one between requests after PARK_AFTER
    seconds -- keeps only an I/O watcher and a keep-alive timer (about 2 KB),
    and is given a greenlet again from the server's pool when bytes arrive.
    ``parked`` holds their
    sockets, which the server must not close when the handler returns."""

    def __init__(self, config: LBConfig, backends: Backends, pool: GreenletPool | None = None,
                 access_log: Any = None) -> None:
        """``pool``: the server's greenlet pool; a parked connection holds one
        of its slots, so --max-connections still bounds active and parked
        connections.  Without one, connections are never parked."""
        self.config = config
        self.backends = backends
        self.idle = IdleConnections()
        self.stats = Stats()
        self.budget = RetryBudget(config.retry_budget)
        self.access_log = access_log
        self.parked: dict[Any, _ClientConnection] = {}  #: socket -> its connection
        self.pool = pool

    def handle(self, sock: Any, address: Any) -> None:
        """The StreamServer handler: proxy one client connection."""
        self.stats.client_connections += 1
        _ClientConnection(self, sock, address).run()

    def close_parked(self) -> None:
        """Close every parked connection (the end of a stop)."""
        for conn in list(self.parked.values()):
            conn.unpark_and_close()


class _ClientConnection(Parking, RequestBody):
    def __init__(self, proxy: Proxy, sock: Any, address: Any) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.sock = sock
        self.client_ip = str(address[0]).encode() if address else b"-"
        self.key = str(address[0]) if address else "-"
        self.stream = ClientStream(sock, RequestParser(CLIENT_LIMITS), proxy.idle,
                                   self.config.header_timeout, self.config.keepalive_timeout,
                                   FRESH_PARK_AFTER if proxy.pool is not None else None)
        self._prefix: list[bytes] = []
        self._fresh = True

    def run(self) -> None:
        parked = False
        try:
            parked = self._loop()
        except (OSError, ClientGone):
            pass
        finally:
            if not parked:
                self._close()

    def _close(self) -> None:
        self.stream.parser.release()
        self.proxy.idle.set_busy(self.sock)
        self.proxy.stats.client_connections -= 1
        try:
            self.sock.close()
        except OSError:
            pass

    def _loop(self) -> bool:
        """Serve requests; True when the connection was parked (still open)."""
        stream, sock = self.stream, self.sock
        while True:
            try:
                event = stream.next()
            except StillIdle:
                if self._park(self.config.keepalive_timeout - (stream.park_after or 0.0)):
                    return True
                stream.park_after = None  # could not park: wait the rest here
                continue
            except RequestTimeout:
                reject(sock, HttpError(408, "request timeout"), SERVER)
                return False
            except Draining:
                close_gently(sock)
                return False
            if event is None:
                return False
            if self._fresh:
                self._fresh = False
                if self.proxy.pool is not None:
                    stream.park_after = PARK_AFTER
            if isinstance(event, Rejected):
                reject(sock, event.error, SERVER)
                return False
            if type(event) is not Head:
                continue  # the End of a bodiless request
            if not self._request(event):
                close_gently(sock)
                return False

    # -- one request ---------------------------------------------------------
    def _request(self, head: Head) -> bool:
        """Proxy one request; False when the client connection must close."""
        proxy, config = self.proxy, self.config
        started = time.monotonic()
        proxy.stats.requests += 1
        proxy.budget.deposit()
        if head.method == b"CONNECT":
            return self._local(head, HttpError(405, "CONNECT is not supported"), False,
                               started=started)
        has_body = head.chunked or bool(head.content_length)
        if expects_continue(head):
            self.sock.sendall(CONTINUE)
        body: bytes | None = b""
        if has_body:
            try:
                body = self._read_body(head)
            except RequestTimeout:
                return self._local(head, HttpError(408, "request body timeout"), False,
                                   started=started)
            except HttpError as exc:
                return self._local(head, exc, False, started=started)
        tried: list[BackendState] = []
        while True:
            backend = proxy.backends.choose(self.key, tried)
            if backend is None:
                if tried:
                    error = HttpError(502, "no backend could take the request")
                else:
                    error = HttpError(503, "no healthy backend")
                return self._local(head, error, True, retry_after=not tried, started=started)
            tried.append(backend)
            outcome = self._attempt(backend, head, body)
            if outcome.retry and len(tried) <= config.retries and proxy.budget.withdraw():
                backend.retries += 1
                proxy.stats.retries += 1
                continue
            break
        if outcome.error is not None and outcome.sent == 0:
            return self._local(head, outcome.error, outcome.client_keep_alive,
                               backend=backend.name, started=started)
        proxy.stats.count(outcome.status)
        self._log(head, outcome.status, outcome.sent, backend.name, outcome.upstream_time, started)
        return outcome.client_keep_alive and outcome.error is None

    def _local(self, head: Head, error: HttpError, keep_alive: bool, retry_after: bool = False,
               backend: str = "-", started: float | None = None) -> bool:
        """Answer ``error`` from the balancer itself."""
        response = error_response(error, close=not keep_alive)
        if retry_after:
            response = Response(response.status, response.headers + ((b"Retry-After", b"1"),),
                                response.body, close=response.close)
        keep = keep_alive and head.keep_alive and not self.proxy.idle.draining
        self.stream.sending(self.config.send_timeout)
        send_response(self.sock, response, head, keep, SERVER)
        self.proxy.stats.count(error.status)
        self._log(head, error.status, len(response.body), backend, 0.0, started)
        return keep

    def _log(self, head: Head, status: int, size: int, backend: str, upstream: float,
             started: float | None) -> None:
        log = self.proxy.access_log
        if log is None:
            return
        total = time.monotonic() - started if started is not None else 0.0
        log.write(f"{self.key} {head.method.decode('latin-1')} {head.target.decode('latin-1')} "
                  f"{status} {size} {backend} {upstream * 1000:.2f}ms {total * 1000:.2f}ms\n")

    # -- one attempt at one backend -----------------------------------------
    def _attempt(self, backend: BackendState, head: Head, body: bytes | None) -> Outcome:
        backends = self.proxy.backends
        try:
            upstream, _ = backend.pool.acquire()
        except Busy:  # not the backend's fault: no failure counted
            return Outcome(retry=body is not None, error=HttpError(503, "backend busy"))
        except ConnectError as exc:
            backends.failed(backend, f"connect: {exc}")
            return Outcome(retry=body is not None, error=HttpError(502, "backend unreachable"))
        backend.in_flight += 1
        backend.requests += 1
        clean = False
        try:
            outcome, clean = self._exchange(upstream, backend, head, body)
            return outcome
        finally:
            backend.in_flight -= 1
            if clean:
                backend.pool.release(upstream)
            else:
                backend.pool.discard(upstream)

    def _exchange(self, upstream: Any, backend: BackendState, head: Head,
                  body: bytes | None) -> tuple[Outcome, bool]:
        config, backends = self.config, self.proxy.backends
        if body is not None:  # buffered: state its length (none for a bodiless request)
            declared = body or head.content_length is not None or head.chunked
            request = upstream_request(head, self.client_ip, len(body) if declared else None,
                                       False)
        else:  # streamed: keep the client's framing
            request = upstream_request(head, self.client_ip, head.content_length, head.chunked)
        began = time.monotonic()
        upstream.settimeout(config.response_timeout)
        try:
            if body is not None:
                upstream.sendall(request + body)
            else:
                upstream.sendall(request)
                set_nodelay(upstream)  # a streamed body: several writes
                for piece in self._body_pieces(head):
                    upstream.sendall(piece)
        except RequestTimeout:  # the client stalled mid-body: its fault, not the backend's
            return Outcome(error=HttpError(408, "request body timeout"),
                           client_keep_alive=False), False
        except HttpError as exc:  # the client's streamed body was malformed
            return Outcome(error=exc, client_keep_alive=False), False
        except OSError:  # TimeoutError included
            backends.failed(backend, "send")
            return Outcome(retry=body is not None, error=HttpError(502, "backend failed")), False
        return self._relay(upstream, backend, head, body is not None, began)

    def _relay(self, upstream: Any, backend: BackendState, head: Head,
               replayable: bool, began: float) -> tuple[Outcome, bool]:
        """Read the backend's response and pass it on to the client.  The
        connection keeps its parser for the next response if this one ended
        cleanly; otherwise the parser is released, whatever way it ended."""
        parser = upstream.attachment
        if parser is None:
            parser = ResponseParser(head.method)
        else:  # the connection's last response ended cleanly: go on with its parser
            parser.expect(head.method)
            upstream.attachment = None
        clean = False
        try:
            out, clean = self._pump(parser, upstream, backend, head, replayable, began)
            return out, clean
        finally:
            if clean and not parser.dead:
                upstream.attachment = parser
            else:
                parser.release()

    def _pump(self, parser: ResponseParser, upstream: Any, backend: BackendState, head: Head,
              replayable: bool, began: float) -> tuple[Outcome, bool]:
        backends = self.proxy.backends
        out = Outcome()
        client_11 = head.version == "1.1"
        rechunk = False
        keep = head.keep_alive and not self.proxy.idle.draining
        upstream_keep = False
        done = False
        interim = False
        nodelay = False
        sock = self.sock
        self.stream.sending(self.config.send_timeout)
        recv = upstream.recv_later  # the first read: the answer cannot be here yet
        while not done:
            try:
                data = recv(RECV_SIZE)
                recv = upstream.recv
            except TimeoutError:
                backends.failed(backend, "response timeout")
                out.error = HttpError(504, "backend response timed out")
                out.client_keep_alive = keep
                return out, False
            except OSError:
                data = b""  # a reset reads as a close
            events = parser.feed(data) if data else parser.finish()
            if not data and not events and out.sent == 0 and not parser.in_message:
                # Closed before answering: the keep-alive race on a reused
                # connection, or a backend that died.  Replay only what is safe.
                backends.failed(backend, "closed before responding")
                out.retry = replayable and head.method in IDEMPOTENT
                out.error = HttpError(502, "backend closed the connection")
                out.client_keep_alive = keep
                return out, False
            pieces: list[bytes] = []
            for event in events:
                if type(event) is Data:
                    pieces.append(chunk(event.data) if rechunk else event.data)
                elif type(event) is Head and event.status < 200:
                    interim = True  # forwarded to HTTP/1.1 clients (RFC 9110 15.2)
                    if client_11:
                        pieces.append(client_response(event, True, True, False))
                elif type(event) is Head:
                    out.status = event.status
                    out.upstream_time = time.monotonic() - began
                    upstream_keep = event.keep_alive
                    framed = event.content_length is not None or not _has_body(head, event)
                    if not framed and not client_11:
                        keep = False          # close-delimited to an HTTP/1.0 client
                    rechunk = not framed and client_11
                    pieces.append(client_response(event, keep, client_11, rechunk))
                elif type(event) is End and interim:
                    interim = False
                elif type(event) is End:
                    if rechunk:
                        pieces.append(LAST_CHUNK)
                    done = True
                else:  # Rejected: the backend's response is malformed or cut short
                    backends.failed(backend, event.error.reason)
                    out.error = event.error
                    out.client_keep_alive = keep and out.sent == 0
                    return out, False
            if pieces:
                payload = b"".join(pieces)
                try:
                    if out.sent and not nodelay:  # a response in several writes: no Nagle waits
                        set_nodelay(sock)
                        nodelay = True
                    sock.sendall(payload)
                except OSError:
                    raise ClientGone() from None
                out.sent += len(payload)
            if not data and not done:
                break
        if out.error is None:
            backends.succeeded(backend, out.upstream_time)
        out.client_keep_alive = keep and out.error is None
        clean = done and out.error is None and upstream_keep and not parser.in_message
        return out, clean


def _has_body(request: Head, response: Head) -> bool:
    return request.method != b"HEAD" and response.status not in (204, 304)
