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
# retried only for idempotent methods; after a response byte there is no
# retry.  No backend taking a connection is a 503 (with Retry-After), a 502
# only when one answered badly.  A send that fails is followed by a read: a
# backend may have answered (an early 413) and closed.  ``Expect:
# 100-continue`` is asked of the backend and its 100 passed on (ours after
# EXPECT_WAIT), so the body is read only once a backend is ready and an
# early final answer reaches the client first.  A 101 to a request that
# asked to upgrade turns the connection into a tunnel (lb.tunnel).  Idle
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
from lb import accesslog
from lb.backends import Backends, BackendState, RetryBudget
from lb.bodies import ClientGone, RequestBody
from lb.config import LBConfig
from lb.hashkey import key_for
from lb.parking import PARK_AFTER, Parking
from lb.relay import Outcome, Relay
from lb.rewrite import upstream_request, wants_upgrade
from lb.tally import WorkerBlock
from lb.tunnel import Tunnel
from lb.upstream import Busy, ConnectError, Upstream

if TYPE_CHECKING:
    from gservers.net.greenpool import GreenletPool

SERVER = b"gservers-lb/0.1"
#: Seconds to wait for a backend's own 100 Continue before sending ours.
EXPECT_WAIT = 1.0
#: Seconds a new connection that has sent nothing yet waits in its greenlet
#: before it is parked.  A client's request often lags its handshake a
#: little, and parking then waking one costs more than this wait; an idle
#: flood still holds few greenlets.
FRESH_PARK_AFTER = 0.05
#: Client-side limits leave room for what the balancer adds (X-Forwarded-For,
#: X-Forwarded-Proto, Via): whatever it accepts, a backend with the default
#: limits accepts after rewriting.
CLIENT_LIMITS = Limits(max_head=Limits().max_head - 1024, max_headers=Limits().max_headers - 4)


class Proxy:
    """Shared state of one worker's proxy: config, backends, stats, log.

    Idle client connections are *parked* (lb.parking): rather than a
    greenlet blocked in recv, a connection waiting for a request keeps only
    an I/O watcher and a keep-alive timer, and is given a greenlet again
    from the server's pool when bytes arrive.  ``parked`` holds their
    sockets, which the server must not close when the handler returns."""

    def __init__(self, config: LBConfig, backends: Backends, pool: GreenletPool,
                 stats: WorkerBlock, access_log: Any = None) -> None:
        """``pool``: the server's greenlet pool; a parked connection holds one
        of its slots, so --max-connections still bounds active and parked
        connections.  ``stats``: this worker's shared totals (lb.tally)."""
        self.config = config
        self.backends = backends
        self.idle = IdleConnections()
        self.stats = stats
        self.budget = RetryBudget(config.retry_budget)
        self.access_log = access_log
        self.parked: dict[Any, Parking] = {}  #: socket -> its connection's Parking
        self.pool = pool
        self.proto = b"https" if config.certfile else b"http"  #: X-Forwarded-Proto

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
        self.hashed = self.config.hash_key.kind != "client"  #: keys read off each request
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
        proxy = self.proxy
        started = time.monotonic()
        proxy.stats.requests += 1
        proxy.budget.deposit()
        if head.method == b"CONNECT":
            return self._answer_error(head, HttpError(405, "CONNECT is not supported"), False,
                                      started=started)
        expect = expects_continue(head)
        body: bytes | None = b""
        if expect:  # the body waits for a backend's 100 Continue (or ours, once it is ready)
            body = None
            if self.body is None:
                self.body = RequestBody(self.stream, self.config)
        elif head.chunked or head.content_length:
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
        backend, outcome = self._balance(head, body, expect)
        if outcome.error is not None and outcome.sent == 0:
            return self._answer_error(head, outcome.error, outcome.client_keep_alive and not
                                      expect, retry_after=outcome.error.status == 503,
                                      backend=backend.name if backend else "-",
                                      started=started)
        proxy.stats.count(outcome.status)
        assert backend is not None
        self._log(head, outcome.status, outcome.sent, backend.name, outcome.upstream_time, started)
        return outcome.client_keep_alive and outcome.error is None and not outcome.upgraded

    def _balance(self, head: Head, body: bytes | None,
                 expect: bool) -> tuple[BackendState | None, Outcome]:
        """Try backends (the policy's choice, then others on a retryable
        failure) until one answers or none is left."""
        proxy, config = self.proxy, self.config
        key = key_for(config.hash_key, head, self.key) if self.hashed else self.key
        tried: list[BackendState] = []
        reached = False  # a backend was connected to (so a failure is its answer's)
        while True:
            backend = proxy.backends.choose(key, tried)
            if backend is None:
                if reached:
                    return tried[-1], Outcome(error=HttpError(
                        502, "no backend could take the request"))
                why = "no backend could take the request" if tried else "no healthy backend"
                return (tried[-1] if tried else None), Outcome(error=HttpError(503, why))
            tried.append(backend)
            outcome = self._attempt(backend, head, body, expect)
            reached = reached or not outcome.unreachable
            if outcome.retry and len(tried) <= config.retries and proxy.budget.withdraw():
                backend.counts.retries += 1
                proxy.stats.retries += 1
                continue
            return backend, outcome

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
        log.write(accesslog.entry(self.config.access_log_format, time.time(), self.key, head,
                                  status, size, backend, upstream, total))

    # -- one attempt at one backend -----------------------------------------
    def _attempt(self, backend: BackendState, head: Head, body: bytes | None,
                 expect: bool) -> Outcome:
        backends = self.proxy.backends
        try:  # nothing of a body has been read yet: any request may go elsewhere
            upstream, _ = backend.pool.acquire()
        except Busy:  # not the backend's fault: no failure counted
            return Outcome(retry=True, error=HttpError(503, "backend busy"), unreachable=True)
        except ConnectError as exc:
            backends.failed(backend, f"connect: {exc}")
            return Outcome(retry=True, error=HttpError(503, "backend unreachable"),
                           unreachable=True)
        backend.in_flight += 1
        backend.counts.requests += 1
        clean = False
        try:
            outcome, clean = self._exchange(upstream, backend, head, body, expect)
            return outcome
        finally:
            backend.in_flight -= 1
            if clean:
                backend.pool.release(upstream)
            else:
                backend.pool.discard(upstream)

    def _exchange(self, upstream: Upstream, backend: BackendState, head: Head,
                  body: bytes | None, expect: bool) -> tuple[Outcome, bool]:
        """Send the request and relay the answer (and, after a 101, the
        tunnel).  The connection keeps its parser for the next response if
        this one ended cleanly; otherwise the parser is released."""
        upgrade = bool(head.connection) and not body and wants_upgrade(head)
        if body is not None:  # buffered: state its length (none for a bodiless request)
            declared = body or head.content_length is not None or head.chunked
            request = upstream_request(head, self.client_ip, len(body) if declared else None,
                                       False, upgrade, proto=self.proxy.proto)
        else:  # streamed: keep the client's framing
            request = upstream_request(head, self.client_ip, head.content_length, head.chunked,
                                       False, expect, proto=self.proxy.proto)
        upstream.sock.settimeout(self.config.response_timeout)
        parser = upstream.parser
        if parser is None:
            parser = ResponseParser(head.method, upgrade=upgrade)
        else:  # the connection's last response ended cleanly: go on with its parser
            parser.expect(head.method, upgrade)
            upstream.parser = None
        self.stream.sending(self.config.send_timeout)
        relay = Relay(self.sock, upstream.sock, parser, self.proxy.backends, backend, head,
                      body is not None, time.monotonic(),
                      head.keep_alive and not self.proxy.idle.draining)
        clean = False
        try:
            failure = self._send(relay, request, head, body, expect)
            if failure is not None:
                return failure, False
            if not relay.done and relay.error is None:
                clean = relay.run()
            if relay.upgraded:
                self._tunnel(relay, parser)
            return relay, clean
        finally:
            if clean and not parser.dead:
                upstream.parser = parser
            else:
                parser.release()

    def _send(self, relay: Relay, request: bytes, head: Head, body: bytes | None,
              expect: bool) -> Outcome | None:
        """Send the request (the body after a 100 Continue when ``expect``);
        an Outcome when the client is at fault, else None (relay the answer:
        also after a failed send, as the backend may have answered and closed
        while the body went, e.g. an early 413)."""
        sock = relay.upstream
        try:
            if body is not None:
                sock.sendall(request + body)
                return None
            sock.sendall(request)
            set_nodelay(sock)  # a streamed body: several writes
            if expect and not self._continue(relay, head):
                return None  # answered (or failed) before the body: that is relayed
            assert self.body is not None  # made when the request came
            for piece in self.body.pieces(head):
                sock.sendall(piece)
        except RequestTimeout:  # the client stalled mid-body: its fault, not the backend's
            return Outcome(error=HttpError(408, "request body timeout"), client_keep_alive=False)
        except HttpError as exc:  # the client's streamed body was malformed
            return Outcome(error=exc, client_keep_alive=False)
        except OSError:  # TimeoutError included
            relay.resend_ok = True  # cut short: safe to send again, if it was kept
            relay.keep = False      # the rest of the client's body stays unread
        return None

    def _continue(self, relay: Relay, head: Head) -> bool:
        """Wait (EXPECT_WAIT at most) for the backend's 100 Continue, which
        the relay passes on; True when the body is to be sent (after the
        backend's 100, or after ours when none came in time)."""
        relay.pause = relay.replayable = relay.resend_ok = True  # no body byte read yet
        relay.keep = False  # an answer before the body leaves the body unread: close after
        relay.upstream.settimeout(EXPECT_WAIT)
        relay.run()
        relay.upstream.settimeout(self.config.response_timeout)
        if not relay.paused or relay.done:
            return False
        if not relay.sent:
            self.sock.sendall(CONTINUE)
        relay.replayable = relay.resend_ok = False
        relay.keep = head.keep_alive and not self.proxy.idle.draining
        return True

    def _tunnel(self, relay: Relay, parser: ResponseParser) -> None:
        """Relay the switched protocol both ways until either side closes."""
        stats = self.proxy.stats
        stats.tunnels += 1
        stats.tunnels_open += 1
        try:
            Tunnel(self.sock, relay.upstream, self.config.tunnel_timeout).run(parser.tunnel or b"")
        finally:
            stats.tunnels_open -= 1
