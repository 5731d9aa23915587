# tests/unit/test_upstream.py -- the balancer's keep-alive pool for one backend.
#
# Strategy: an UpstreamPool in this process, in greenlets, against a real
# listening socket on 127.0.0.1: reuse of an idle connection, a connection
# the backend closed is replaced, and the limit on connections lent out at
# once -- a second acquire waits for the first to come back, and gives up
# with Busy after the queue timeout.  Bounded by gevent timeouts.
from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import gevent
import pytest

from lb.upstream import Busy, ConnectError, UpstreamPool


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def pool_for(listener: socket.socket, max_busy: int = 0,
             queue_timeout: float = 1.0) -> UpstreamPool:
    return UpstreamPool(socket.AF_INET, listener.getsockname(), 8, 10.0, 1.0,
                        max_busy, queue_timeout)


def test_idle_connection_is_reused_and_a_closed_one_replaced(listener: socket.socket) -> None:
    with gevent.Timeout(5):
        pool = pool_for(listener)
        first, reused = pool.acquire()
        assert not reused
        pool.release(first)
        again, reused = pool.acquire()
        assert reused and again is first
        peer, _ = listener.accept()
        peer.close()  # the backend closes its side while the connection idles
        pool.release(again)
        gevent.sleep(0.05)
        fresh, reused = pool.acquire()
        assert not reused and fresh is not first
        pool.discard(fresh)
        assert pool.connects == 2


def test_limit_queues_then_gives_up(listener: socket.socket) -> None:
    with gevent.Timeout(5):
        pool = pool_for(listener, max_busy=1, queue_timeout=0.2)
        held, _ = pool.acquire()
        started = time.monotonic()
        with pytest.raises(Busy):
            pool.acquire()
        assert time.monotonic() - started >= 0.15
        waiter = gevent.spawn(pool.acquire)
        gevent.sleep(0.05)
        assert not waiter.ready()  # queued behind the held connection
        pool.release(held)
        sock, reused = waiter.get(timeout=1)
        assert reused and sock is held
        pool.discard(sock)
        sock, _ = pool.acquire()  # the slot came back with discard too
        pool.release(sock)


def test_refused_connect_gives_its_slot_back(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    listener.close()
    with gevent.Timeout(5):
        pool = UpstreamPool(socket.AF_INET, ("127.0.0.1", port), 8, 10.0, 1.0, 1, 0.2)
        for _ in range(3):  # each failure frees the single slot, so no Busy
            with pytest.raises(ConnectError):
                pool.acquire()
