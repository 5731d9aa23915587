# lb/proxy.py -- the reverse proxy: one client connection, request by request.
#
# Strategy: the client side is the backends' own machinery (ClientStream over
# the shared strict parser, the same deadlines and 4xx answers), so nothing
# the backends would refuse reaches a backend.  Each request is balanced on
# its own: the policy picks a backend, its pool lends a keep-alive
# connection, the head is rebuilt (hop-by-hop headers dropped, X-Forwarded-*
# and Via added, framing re-stated) and the response is relayed event by
# event (lb.relay), so bodies of any size stream in both directions.
# Request bodies up to ``max_body_buffer`` are read first (lb.bodies), which
# makes the request replayable: a failed connect or send is retried on the
# next backend for any method; a backend that dies before answering is
# retried only for idempotent methods.  Once a response byte has gone to the
# client there is no retry: the client connection is closed instead.  Idle
# client connections are parked without a greenlet (lb.parking).
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gservers.http import Head, HttpError, Limits, Rejected, RequestParser, ResponseParser
from gservers.http.responses import CONTINUE, Response, error_response, expects_continue
from gservers.net.idle import IdleConnections
from gservers.net.stream import (
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
from lb.relay import Outcome, Relay
from lb.rewrite import upstream_request
from lb.upstream import Busy, ConnectError, Upstream

if TYPE_CHECKING:
    from gservers.net.greenpool import GreenletPool

SERVER = b"gservers-lb/0.1"
#: Seconds a new connection that has sent nothing yet waits in its greenlet
#: before it is parked.  A client's request often lags its handshake a
#: little, and parking then waking one costs more than this wait; an idle
#: flood still holds few greenlets.
FRESH_PARK_AFTER = 0.05
#: Client-side limits leave room for what the balancer adds (X-Forwarded-For,
#: X-Forwarded-Proto, Via): whatever it accepts, a backend with the default
#: limits accepts after rewriting.
CLIENT_LIMITS = Limits(max_head=Limits().max_head - 1024, max_headers=Limits().max_headers - 4)


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


class Proxy:
    """Shared state of one worker's proxy: config, backends, stats, log.

    Idle client connections are *parked* (lb.parking): rather than a
    greenlet blocked in recv, a connection waiting for a request keeps only
    an I/O watcher and a keep-alive timer, and is given a greenlet again
    from the server's pool when bytes arrive.  ``parked`` holds their
    sockets, which the server must not close when the handler returns."""

    def __init__(self, config: LBConfig, backends: Backends, pool: GreenletPool,
                 access_log: Any = None) -> None:
        """``pool``: the server's greenlet pool; a parked connection holds one
        of its slots, so --max-connections still bounds active and parked
        connections."""
        self.config = config
        self.backends = backends
        self.idle = IdleConnections()
        self.stats = Stats()
        self.budget = RetryBudget(config.retry_budget)
        self.access_log = access_log
        self.parked: dict[Any, Parking] = {}  #: socket -> its connection's Parking
        self.pool = pool

    def handle(self, sock: Any, address: Any) -> None:
        """The StreamServer handler: proxy one client connection."""
        self.stats.client_connections += 1
        _ClientConnection(self, sock, address).run()

    def close_parked(self) -> None:
        """Close every parked connection (the end of a stop)."""
        for parking in list(self.parked.values()):
            parking.close()


class _ClientConnection:
    """One client connection, from accept to close."""

    def __init__(self, proxy: Proxy, sock: Any, address: Any) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.sock = sock
        self.client_ip = str(address[0]).encode() if address else b"-"
        self.key = str(address[0]) if address else "-"
        self.stream = ClientStream(sock, RequestParser(CLIENT_LIMITS), proxy.idle,
                                   self.config.header_timeout, self.config.keepalive_timeout,
                                   FRESH_PARK_AFTER)
        # Made when first needed: most connections send no body and never park.
        self.body: RequestBody | None = None
        self.parking: Parking | None = None
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
                stream.park_after = PARK_AFTER
            if isinstance(event, Rejected):
                reject(sock, event.error, SERVER)
                return False
            if type(event) is not Head:
                continue  # the End of a bodiless request
            if not self._request(event):
                close_gently(sock)
                return False

    def _park(self, keepalive: float) -> bool:
        """Wait up to ``keepalive`` seconds for the next request without a
        greenlet; False if that cannot be done now."""
        parking = self.parking
        if parking is None:
            parking = self.parking = Parking(self.sock, self.stream, self.proxy.pool,
                                             self.proxy.parked)
        return parking.park(keepalive, self.run, self._close)

    # -- one request ---------------------------------------------------------
    def _request(self, head: Head) -> bool:
        """Proxy one request; False when the client connection must close."""
        proxy, config = self.proxy, self.config
        started = time.monotonic()
        proxy.stats.requests += 1
        proxy.budget.deposit()
        if head.method == b"CONNECT":
            return self._answer_error(head, HttpError(405, "CONNECT is not supported"), False,
                               started=started)
        has_body = head.chunked or bool(head.content_length)
        if expects_continue(head):
            self.sock.sendall(CONTINUE)
        body: bytes | None = b""
        if has_body:
            reader = self.body
            if reader is None:
                reader = self.body = RequestBody(self.stream, self.config)
            try:
                body = reader.read(head)
            except RequestTimeout:
                return self._answer_error(head, HttpError(408, "request body timeout"), False,
                                   started=started)
            except HttpError as exc:
                return self._answer_error(head, exc, False, started=started)
        tried: list[BackendState] = []
        while True:
            backend = proxy.backends.choose(self.key, tried)
            if backend is None:
                if tried:
                    error = HttpError(502, "no backend could take the request")
                else:
                    error = HttpError(503, "no healthy backend")
                return self._answer_error(head, error, True, retry_after=not tried, started=started)
            tried.append(backend)
            outcome = self._attempt(backend, head, body)
            if outcome.retry and len(tried) <= config.retries and proxy.budget.withdraw():
                backend.retries += 1
                proxy.stats.retries += 1
                continue
            break
        if outcome.error is not None and outcome.sent == 0:
            return self._answer_error(head, outcome.error, outcome.client_keep_alive,
                               backend=backend.name, started=started)
        proxy.stats.count(outcome.status)
        self._log(head, outcome.status, outcome.sent, backend.name, outcome.upstream_time, started)
        return outcome.client_keep_alive and outcome.error is None

    def _answer_error(self, head: Head, error: HttpError, keep_alive: bool,
                      retry_after: bool = False, backend: str = "-",
                      started: float | None = None) -> bool:
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

    def _exchange(self, upstream: Upstream, backend: BackendState, head: Head,
                  body: bytes | None) -> tuple[Outcome, bool]:
        config, backends, sock = self.config, self.proxy.backends, upstream.sock
        if body is not None:  # buffered: state its length (none for a bodiless request)
            declared = body or head.content_length is not None or head.chunked
            request = upstream_request(head, self.client_ip, len(body) if declared else None,
                                       False)
        else:  # streamed: keep the client's framing
            request = upstream_request(head, self.client_ip, head.content_length, head.chunked)
        began = time.monotonic()
        sock.settimeout(config.response_timeout)
        try:
            if body is not None:
                sock.sendall(request + body)
            else:
                sock.sendall(request)
                set_nodelay(sock)  # a streamed body: several writes
                assert self.body is not None  # made when the body was read
                for piece in self.body.pieces(head):
                    sock.sendall(piece)
        except RequestTimeout:  # the client stalled mid-body: its fault, not the backend's
            return Outcome(error=HttpError(408, "request body timeout"),
                           client_keep_alive=False), False
        except HttpError as exc:  # the client's streamed body was malformed
            return Outcome(error=exc, client_keep_alive=False), False
        except OSError:  # TimeoutError included
            backends.failed(backend, "send")
            return Outcome(retry=body is not None, error=HttpError(502, "backend failed")), False
        return self._relay(upstream, backend, head, body is not None, began)

    def _relay(self, upstream: Upstream, backend: BackendState, head: Head,
               replayable: bool, began: float) -> tuple[Outcome, bool]:
        """Read the backend's response and pass it on to the client.  The
        connection keeps its parser for the next response if this one ended
        cleanly; otherwise the parser is released, whatever way it ended."""
        parser = upstream.parser
        if parser is None:
            parser = ResponseParser(head.method)
        else:  # the connection's last response ended cleanly: go on with its parser
            parser.expect(head.method)
            upstream.parser = None
        clean = False
        try:
            self.stream.sending(self.config.send_timeout)
            keep = head.keep_alive and not self.proxy.idle.draining
            relay = Relay(self.sock, upstream.sock, parser, self.proxy.backends, backend, head,
                          replayable, began, keep)
            clean = relay.run()
            return relay, clean
        finally:
            if clean and not parser.dead:
                upstream.parser = parser
            else:
                parser.release()
