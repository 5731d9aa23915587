# gservers/backend/connection.py -- one backend connection, served to the end.
#
# Strategy: a plain blocking loop over a socket-like object, so a GreenSocket
# in a greenlet and an OS socket in a thread run exactly the same code; the
# server models differ only in how they spawn ``serve``.  Requests come from
# the shared ClientStream (strict parsing, deadlines, pipelining), are
# answered by the App in order, and every refusal is a 4xx/5xx with a short
# reason after which the connection closes.
from __future__ import annotations

from typing import Any

from gservers.backend.app import App
from gservers.backend.config import BackendConfig
from gservers.http import Data, End, Head, HttpError, Rejected, RequestParser
from gservers.http.responses import CONTINUE, expects_continue
from gservers.net.idle import IdleConnections
from gservers.net.stream import (
    ClientStream,
    Draining,
    RequestTimeout,
    close_gently,
    reject,
    send_response,
)


class Connection:
    """Serves one accepted backend connection; call ``run()`` once."""

    def __init__(self, sock: Any, app: App, config: BackendConfig,
                 idle: IdleConnections) -> None:
        self.sock = sock
        self.app = app
        self.config = config
        self.idle = idle
        self.stream = ClientStream(sock, RequestParser(), idle,
                                   config.header_timeout, config.keepalive_timeout)

    def run(self) -> None:
        """Serve requests until either side closes; never raises."""
        sock = self.sock
        try:
            self._loop()
        except OSError:
            pass  # the client went away; nothing to answer
        finally:
            self.stream.parser.release()
            self.idle.set_busy(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _loop(self) -> None:
        sock, config = self.sock, self.config
        while True:
            try:
                event = self.stream.next()
            except RequestTimeout:
                reject(sock, HttpError(408, "request timeout"))
                return
            except Draining:
                close_gently(sock)
                return
            if event is None:
                return
            if isinstance(event, Rejected):
                reject(sock, event.error)
                return
            assert isinstance(event, Head)
            head = event
            length = head.content_length or 0
            if length > config.max_body:
                reject(sock, HttpError(413, "request body too large"))
                return
            if expects_continue(head):
                sock.sendall(CONTINUE)
            body: list[bytes] = []
            size = 0
            try:
                while not isinstance(event := self.stream.next(), End):
                    if event is None:
                        return  # client closed mid-body
                    if isinstance(event, Rejected):
                        reject(sock, event.error)
                        return
                    assert isinstance(event, Data)
                    size += len(event.data)
                    if size > config.max_body:
                        reject(sock, HttpError(413, "request body too large"))
                        return
                    body.append(event.data)
            except RequestTimeout:
                reject(sock, HttpError(408, "request body timeout"))
                return
            response = self.app.handle(head, b"".join(body))
            keep_alive = head.keep_alive and not response.close and not self.idle.draining
            send_response(sock, response, head, keep_alive)
            if not keep_alive:
                close_gently(sock)
                return


def serve(sock: Any, address: Any, app: App, config: BackendConfig,
          idle: IdleConnections) -> None:
    """Serve one accepted connection (the handler both models spawn)."""
    Connection(sock, app, config, idle).run()

