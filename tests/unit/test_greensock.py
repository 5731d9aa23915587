# tests/unit/test_greensock.py -- gservers/greensock.py over real loopback sockets.
#
# Strategy: no mocks and no monkey-patching.  Every test runs its body in a
# greenlet of its own under a hard gevent.Timeout (``bounded``), so nothing
# can hang; a ``Link`` is a GreenSocket made by GreenSocket.connect to a
# gevent listening socket on 127.0.0.1:0 plus the accepted gevent socket at
# the other end (the "peer"), which the test drives from helper greenlets
# (killed when the link closes).  The tests cover the round trip and EOF, a
# large sendall to a slow reader (buffers kept small so that partial sends
# and write waits must happen; a hash compares the bytes), the deadline
# timer -- a timeout fires after about its length and leaves the socket
# usable, the lazily re-armed timer follows a deadline that moves on with
# every wait, a shortened timeout re-arms it, None waits for ever, and a
# timer that fires while the greenlet is elsewhere throws nothing -- close()
# from another greenlet (EBADF), recv_later (waits first, then reads), a
# refused connect (no descriptor leaked), SO_REUSEADDR, readable() (peeks,
# never blocks) and wrap_accepted on a descriptor from a plain listener;
# also that a deadline counts from the start of its wait (not from a stale
# loop clock) and that close() throws nothing into a greenlet that already
# left its wait.  No step depends on a race a loaded machine can lose:
# data that must beat a timer is sent the moment the receiver parks
# (``send_after(0, ...)``: the sending greenlet runs only once the test's
# greenlet waits) against a timer of at least WIDE (1 s); a timer that must
# fire is checked with a lower bound near its length (load only makes it
# later) and an upper bound of FIRED (it fired, it did not wait for ever);
# a wait that must outlast a timeout is measured against that timeout, not
# against a guess of how fast the machine is.
from __future__ import annotations

import errno
import functools
import hashlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from gevent import socket as gsocket

from gservers.net.greensock import GreenSocket, wrap_accepted
from loadtests import procstats

LIMIT = 20.0  #: hard bound on each test body (seconds); hang protection only
WIDE = 1.0    #: a timeout that data sent at once must beat (by far, however loaded)
FIRED = 5.0   #: a timer that fired took less than this (it did not wait for ever)
LOCAL = "127.0.0.1"


def bounded(seconds: float = LIMIT) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Run the decorated test in a greenlet of its own under a hard
    ``gevent.Timeout`` of ``seconds``; its exception (or the timeout, as an
    AssertionError) is re-raised in the test."""
    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> None:
            outcome: list[BaseException] = []

            def body() -> None:
                try:
                    with gevent.Timeout(seconds, AssertionError(
                            f"{test.__name__} still running after {seconds} s")):
                        test(*args, **kwargs)
                except BaseException as exc:  # noqa: B036 -- handed to the test
                    outcome.append(exc)

            runner = gevent.spawn(body)
            runner.join(seconds + 5)
            if not runner.dead:
                runner.kill(block=True, timeout=2)
                pytest.fail(f"{test.__name__} did not stop within {seconds + 5} s")
            if outcome:
                raise outcome[0]
        return run
    return decorate


class Link:
    """A GreenSocket client connected over 127.0.0.1 to a gevent socket
    (``peer``), and the helper greenlets a test starts (killed on close)."""

    def __init__(self, timeout: float | None = 5.0) -> None:
        self.listener = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((LOCAL, 0))
        self.listener.listen(8)
        self.client = GreenSocket.connect(socket.AF_INET, self.listener.getsockname(), LIMIT)
        self.peer, _ = self.listener.accept()
        self.client.settimeout(timeout)
        self.greenlets: list[gevent.Greenlet] = []

    def spawn(self, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        """Start ``fn(*args)`` in a greenlet that ends with the link."""
        glet = gevent.spawn(fn, *args)
        self.greenlets.append(glet)
        return glet

    def send_after(self, delay: float, data: bytes) -> gevent.Greenlet:
        """Have the peer send ``data`` after ``delay`` seconds (0: as soon as
        the test's greenlet yields, i.e. once it waits)."""
        def later() -> None:
            gevent.sleep(delay)
            self.peer.sendall(data)
        return self.spawn(later)

    def close(self) -> None:
        gevent.killall(self.greenlets, block=True, timeout=2)
        self.client.close()
        self.peer.close()
        self.listener.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def recv_exactly(sock: Any, n: int) -> bytes:
    """Read exactly ``n`` bytes from ``sock`` (fails at an early EOF)."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        data = sock.recv(n - got)
        assert data, f"EOF after {got} of {n} bytes"
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def timed_out_after(sock: GreenSocket, size: int = 100) -> float:
    """How long ``sock.recv`` took to raise TimeoutError (fails if it returned)."""
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        data = sock.recv(size)
        pytest.fail(f"recv returned {data!r} instead of timing out")
    return time.monotonic() - start


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` between cooperative sleeps (hang protection only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.01)
    return predicate()


def open_fds() -> int:
    """How many descriptors this process has open."""
    return procstats.num_fds(os.getpid())


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind((LOCAL, 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


# -- data -----------------------------------------------------------------------

@bounded()
def test_round_trip_and_eof() -> None:
    with Link() as link:
        received: list[bytes] = []

        def echo_upper() -> None:  # until EOF, then close
            while True:
                data = link.peer.recv(65536)
                if not data:
                    break
                received.append(data)
                link.peer.sendall(data.upper())
            link.peer.close()

        server = link.spawn(echo_upper)
        client = link.client
        assert client.getpeername() == link.listener.getsockname()
        assert client.getsockname() == link.peer.getpeername()
        assert client.family == socket.AF_INET
        client.sendall(b"hello")
        assert recv_exactly(client, 5) == b"HELLO"
        client.sendall(b"world, again")
        assert recv_exactly(client, 12) == b"WORLD, AGAIN"
        client.shutdown(socket.SHUT_WR)
        assert client.recv(100) == b""  # the server saw EOF and closed
        server.join(2)
        assert server.dead and server.successful()
        assert b"".join(received) == b"helloworld, again"
        assert not client.closed
        client.close()
        assert client.closed


@bounded()
def test_sendall_large_payload_to_slow_reader() -> None:
    payload = os.urandom(8 << 20)
    with Link(timeout=5.0) as link:
        client, peer = link.client, link.peer
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < len(payload) // 8
        events: list[str] = []
        digest = hashlib.sha256()
        counted = [0]

        def slow_reader() -> None:
            gevent.sleep(0.2)  # nothing read yet: the sender must wait
            events.append("reading")
            while counted[0] < len(payload):
                data = peer.recv(16384)
                if not data:
                    break
                digest.update(data)
                counted[0] += len(data)
                gevent.sleep(0)  # let the sender in between reads

        reader = link.spawn(slow_reader)
        client.sendall(payload)
        events.append("sent")
        reader.join(8)
        assert reader.successful(), reader.exception
        # sendall could only finish once the reader had drained most of it
        assert events == ["reading", "sent"]
        assert counted[0] == len(payload)
        assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()


@bounded()
def test_sendall_times_out_when_the_peer_never_reads() -> None:
    with Link(timeout=0.2) as link:
        link.client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        link.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            link.client.sendall(b"x" * (8 << 20))
        assert 0.15 <= time.monotonic() - start < FIRED
        drained = [0]

        def drain() -> None:
            while data := link.peer.recv(65536):
                drained[0] += len(data)

        link.spawn(drain)
        sent = link.client.send(b"y" * 65536)  # the peer reads again: usable
        assert 0 < sent <= 65536
        link.client.sendall(b"z" * (1 << 20))
        link.client.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: drained[0] >= sent + (1 << 20), timeout=LIMIT / 2)


# -- the deadline timer -----------------------------------------------------------

@bounded()
def test_recv_timeout_leaves_the_socket_usable() -> None:
    with Link(timeout=0.2) as link:
        client = link.client
        assert client.gettimeout() == 0.2
        assert 0.15 <= timed_out_after(client) < FIRED
        link.peer.sendall(b"late")
        assert recv_exactly(client, 4) == b"late"
        client.settimeout(WIDE)
        link.send_after(0, b"more")  # a fresh wait after the throw
        assert recv_exactly(client, 4) == b"more"
        client.settimeout(0.2)
        assert 0.15 <= timed_out_after(client) < FIRED  # and it can time out again


@bounded()
def test_deadline_moves_on_with_every_wait() -> None:
    # Ticks 0.05 s apart against a 1 s timeout (a wide margin each), for
    # longer than the timeout in all: a deadline that did not move on with
    # each wait would throw before the last tick.
    with Link(timeout=WIDE) as link:
        client = link.client
        ticks = 30

        def ticker() -> None:
            for _ in range(ticks):
                gevent.sleep(0.05)
                link.peer.sendall(b".")

        link.spawn(ticker)
        start = time.monotonic()
        got = 0
        while got < ticks:
            data = client.recv(100)  # a TimeoutError here fails the test
            assert data
            got += len(data)
        # the waits spanned more than the timeout without a throw
        assert time.monotonic() - start > WIDE
        assert 0.9 * WIDE <= timed_out_after(client) < FIRED  # the peer went silent


@bounded()
def test_shortened_timeout_takes_effect() -> None:
    with Link(timeout=5.0) as link:
        client = link.client
        link.send_after(0, b"a")
        assert client.recv(10) == b"a"  # the timer is now armed ~5 s ahead
        client.settimeout(0.1)
        assert 0.07 <= timed_out_after(client) < 4.0  # well before the old 5 s


@bounded()
def test_no_timeout_waits_for_ever() -> None:
    with Link(timeout=WIDE) as link:
        client = link.client
        link.send_after(0, b"a")
        assert client.recv(10) == b"a"  # arms the timer for 1 s
        client.settimeout(None)
        assert client.gettimeout() is None
        link.send_after(1.5 * WIDE, b"b")
        start = time.monotonic()
        assert client.recv(10) == b"b"  # past the old deadline: no throw
        assert time.monotonic() - start >= 1.4 * WIDE


@bounded()
def test_timer_that_fires_outside_a_wait_throws_nothing() -> None:
    with Link(timeout=WIDE) as link:
        client = link.client
        link.send_after(0, b"a")
        assert client.recv(10) == b"a"  # waited: the timer is armed for ~1 s
        gevent.sleep(1.5 * WIDE)  # something else while the timer fires
        link.peer.sendall(b"b")
        assert wait_until(client.readable, timeout=LIMIT / 2)
        assert client.recv(10) == b"b"
        link.send_after(0, b"c")  # the next wait re-arms the timer
        assert client.recv(10) == b"c"
        assert 0.9 * WIDE <= timed_out_after(client) < FIRED


@bounded()
def test_zero_timeout_never_waits() -> None:
    with Link(timeout=0.0) as link:
        with pytest.raises(TimeoutError):
            link.client.recv(10)
        link.peer.sendall(b"z")
        assert wait_until(link.client.readable, timeout=LIMIT / 2)
        assert link.client.recv(10) == b"z"  # data already there needs no wait


@bounded()
def test_recv_later_waits_first() -> None:
    with Link(timeout=WIDE) as link:
        client = link.client
        link.send_after(0, b"answer")
        assert client.recv_later(100) == b"answer"
        link.peer.sendall(b"early")  # already there: the wait returns at once
        assert wait_until(client.readable, timeout=LIMIT / 2)
        assert client.recv_later(100) == b"early"
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.recv_later(100)
        assert 0.9 * WIDE <= time.monotonic() - start < FIRED
        link.peer.close()
        assert client.recv_later(100) == b""  # EOF wakes the wait too


def test_deadline_counts_from_the_start_of_the_wait() -> None:
    # The loop's clock stands still for longer than the timeout; a deadline
    # taken from it would be due at once, before data sent the moment the
    # wait begins.  Counted from the wait's start, the data has a whole 1 s.
    with Link(timeout=WIDE) as link:
        client = link.client
        link.send_after(0, b"a")
        assert client.recv(10) == b"a"
        time.sleep(1.3 * WIDE)  # busy without yielding; the loop's clock stands still
        link.send_after(0, b"b")  # sent as soon as the wait begins
        assert client.recv(10) == b"b"


# -- close, connect, readable, wrap_accepted ------------------------------------

@bounded()
def test_close_from_another_greenlet_wakes_the_waiter_with_ebadf() -> None:
    with Link(timeout=None) as link:
        client = link.client
        seen: list[tuple[Any, float]] = []

        def waiter() -> None:
            try:
                data = client.recv(10)
                seen.append((data, time.monotonic()))
            except OSError as exc:
                seen.append((exc, time.monotonic()))

        waiting = link.spawn(waiter)
        gevent.sleep(0)  # the waiter runs until it parks in recv (no timeout, no data)
        assert not waiting.dead  # parked in recv
        client.close()
        assert client.closed
        # With no timeout and no data, only the close can end the wait.
        waiting.join(LIMIT / 2)
        assert waiting.dead and len(seen) == 1
        exc, _when = seen[0]
        assert isinstance(exc, OSError) and not isinstance(exc, TimeoutError), exc
        assert exc.errno == errno.EBADF


def test_close_does_not_throw_into_a_greenlet_that_left_the_wait() -> None:
    with Link(timeout=None) as link:
        client = link.client
        log: list[str] = []

        def waiter() -> None:
            try:
                client.recv(10)
            except KeyError:
                log.append("woken")
            try:
                gevent.sleep(0.2)  # waiting on something else now
                log.append("slept")
            except OSError as exc:
                log.append(f"stray {exc!r}")

        waiting = link.spawn(waiter)
        gevent.sleep(0.05)
        waiting.kill(KeyError("stop"), block=False)  # due before the close
        client.close()
        waiting.join(2)
        assert log == ["woken", "slept"]


@bounded()
def test_connect_refused_leaks_nothing() -> None:
    port = free_port()
    before = open_fds()
    with pytest.raises(OSError) as info:
        GreenSocket.connect(socket.AF_INET, (LOCAL, port), 2.0)
    assert info.value.errno == errno.ECONNREFUSED
    with pytest.raises(OSError) as info:
        GreenSocket.connect(socket.AF_INET, (LOCAL, port), 2.0, reuse_addr=True)
    assert info.value.errno == errno.ECONNREFUSED
    assert open_fds() == before


@bounded()
def test_connect_reuse_addr() -> None:
    with Link() as link:
        address = link.listener.getsockname()
        plain = GreenSocket.connect(socket.AF_INET, address, 2.0)
        reused = GreenSocket.connect(socket.AF_INET, address, 2.0, reuse_addr=True)
        try:
            assert plain.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
            assert reused.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
            assert reused.getpeername() == address
            assert plain.gettimeout() == 2.0  # the connect timeout stays
        finally:
            plain.close()
            reused.close()


@bounded()
def test_readable_peeks_and_sees_eof() -> None:
    with Link(timeout=None) as link:  # would wait for ever if readable() blocked
        client = link.client
        assert client.readable() is False
        link.peer.sendall(b"z")
        assert wait_until(client.readable)
        assert client.readable() is True  # peeking consumed nothing
        assert client.recv(10) == b"z"
        assert client.readable() is False
        link.peer.close()
        assert wait_until(client.readable)  # EOF is news too
        assert client.recv(10) == b""


@pytest.mark.parametrize("how", ["_accept", "detach"])
@bounded()
def test_wrap_accepted_round_trip(how: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # a plain one
    listener.bind((LOCAL, 0))
    listener.listen(8)
    listener.settimeout(5.0)  # the connection is queued; never waits long
    client = server = None
    try:
        client = GreenSocket.connect(socket.AF_INET, listener.getsockname(), 5.0)
        if how == "_accept":
            fd, addr = listener._accept()
        else:
            conn, addr = listener.accept()
            fd = conn.detach()
        server = wrap_accepted(fd, listener.family)
        assert server.fileno() == fd
        assert os.get_blocking(fd) is False  # else a recv would block the process
        assert server.family == socket.AF_INET
        assert server.getpeername() == client.getsockname() == addr
        server.settimeout(0.2)
        assert 0.15 <= timed_out_after(server) < 2.0  # a cooperative wait

        def serve() -> None:
            assert recv_exactly(server, 4) == b"ping"
            server.sendall(b"pong")
            server.close()

        serving = gevent.spawn(serve)
        client.settimeout(5.0)
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"pong"
        assert client.recv(10) == b""
        serving.join(2)
        assert serving.successful(), serving.exception
    finally:
        for sock in (client, server):
            if sock is not None:
                sock.close()
        listener.close()
