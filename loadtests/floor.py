# loadtests/floor.py -- the least a gevent balancer can cost: a relay that
# does no HTTP work.
#
# Strategy: a yardstick for scripts/bench_floor, never a server to use.  It
# takes one read from the client as one whole request, passes it to the next
# of its backends over a pooled keep-alive connection (HTTP/1.0 restated as
# HTTP/1.1 so the backend keeps the connection), takes one read from the
# backend as the whole response and passes it back with ``Connection:
# keep-alive`` added (or closes, for a client not asking for keep-alive).
# That is only right for small requests and responses
# that each arrive in one read -- ab's GET of a small page -- and the
# benchmark checks every response for status and length.  It has no
# parsing, no header rewriting, no timeouts, no retries and no health: what
# it costs per request is the floor of gevent's waits, greenlet switches and
# system calls on this machine, which the balancer's cost is compared with.
from __future__ import annotations

import _socket
import argparse
import itertools
import sys
from typing import Any

from gservers.net.greenpool import GreenletPool
from gservers.net.greensock import GreenSocket
from gservers.net.server import Server

CRLF2 = b"\r\n\r\n"


def serve(port: int, backends: list[int]) -> None:
    """Relay 127.0.0.1:``port`` to the ``backends`` until killed."""
    order = itertools.cycle([("127.0.0.1", p) for p in backends])
    idle: dict[tuple[str, int], list[GreenSocket]] = {("127.0.0.1", p): [] for p in backends}

    def handle(client: GreenSocket, address: Any) -> None:
        while True:
            data = client.recv(65536)
            if not data:
                return
            where = next(order)
            pool = idle[where]
            request = data.replace(b"HTTP/1.0", b"HTTP/1.1", 1)
            answer = b""
            while not answer:  # a pooled connection the backend closed: a fresh one
                upstream = (pool.pop() if pool
                            else GreenSocket.connect(_socket.AF_INET, where, None))
                upstream.sendall(request)
                answer = upstream.recv_later(65536)
                if not answer:
                    upstream.close()
            pool.append(upstream)
            if b"Keep-Alive" not in data and b"keep-alive" not in data:
                client.sendall(answer)  # an HTTP/1.0 client without keep-alive: then close
                return
            client.sendall(answer.replace(CRLF2, b"\r\nConnection: keep-alive" + CRLF2, 1))

    Server(("127.0.0.1", port), handle, GreenletPool(10000), backlog=4096).serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.floor",
                                     description="A relay with no HTTP work, as a yardstick.")
    parser.add_argument("port", type=int, help="port to listen on (127.0.0.1)")
    parser.add_argument("backends", type=int, nargs="+", help="backend ports on 127.0.0.1")
    args = parser.parse_args(argv)
    serve(args.port, args.backends)
    return 0


if __name__ == "__main__":
    sys.exit(main())
