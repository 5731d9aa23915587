# tests/unit/test_greenpool.py -- gservers/greenpool.py in-process, under gevent.
#
# Strategy: no mocks and no monkey-patching.  Each test body runs under a
# hard gevent.Timeout (``bounded``), so nothing can hang; calls are made to
# block on gevent Events the test sets, so which calls run, in which
# greenlet and in what order is decided by the test, not by timing.  The
# tests cover spawn with arguments, len() and join() (True when all
# finished, False on timeout), greenlet reuse (one finished call's greenlet
# runs the next; concurrent calls get different greenlets), the bound
# (full(), free_count(), a third spawn waits for a slot), keep_idle (extra
# greenlets exit), an exception in a call (reported through the hub's
# handle_error -- wrapped on the pool's hub instance for the test -- the
# slot freed, the greenlet serving on; GreenletExit is not reported),
# kill() (GreenletExit in running calls, finally blocks run, slots freed,
# idle greenlets ended) and a real StreamServer on 127.0.0.1:0 with
# ``spawn=GreenletPool(2)``: sequential connections reuse one greenlet, and
# a third connection, accepted by the kernel while two are held open, is
# served only once one of them closes.  The only timed assertion is a
# negative one (the third client gets no echo within 0.3 s); nothing
# measures speed.
from __future__ import annotations

import functools
import gc
import socket
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from gevent import socket as gsocket
from gevent.event import Event
from gevent.server import StreamServer
from greenlet import GreenletExit, getcurrent

from gservers.net.greenpool import GreenletPool

LIMIT = 5.0  #: hard bound on each test body (seconds); hang protection only
LOCAL = "127.0.0.1"


def bounded(seconds: float = LIMIT) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Run the decorated test under a hard ``gevent.Timeout`` of ``seconds``,
    raised as an AssertionError naming the test."""
    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> None:
            with gevent.Timeout(seconds, AssertionError(
                    f"{test.__name__} still running after {seconds} s")):
                test(*args, **kwargs)
        return run
    return decorate


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Yield to the hub until ``predicate`` holds or ``timeout`` passes."""
    try:
        with gevent.Timeout(timeout):
            while not predicate():
                gevent.sleep(0.005)
    except gevent.Timeout:
        return predicate()
    return True


@pytest.fixture
def make_pool() -> Iterator[Callable[..., GreenletPool]]:
    """A factory of pools, each killed at teardown (so a failed test leaves
    no call blocked behind it)."""
    pools: list[GreenletPool] = []

    def make(size: int, **kwargs: Any) -> GreenletPool:
        pool = GreenletPool(size, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.kill(block=True, timeout=0.5)


def blocker(gate: Event, log: list[Any], name: str) -> Callable[[], None]:
    """A call that logs ``(name, "start")``, waits for ``gate``, then logs
    ``(name, "end")``."""
    def call() -> None:
        log.append((name, "start"))
        gate.wait()
        log.append((name, "end"))
    return call


# -- spawn, len, join ---------------------------------------------------------

@bounded()
def test_spawn_passes_args_and_join_waits(make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(4)
    got: list[tuple[Any, ...]] = []
    pool.spawn(lambda *a: got.append(a), 1, "two", None)
    pool.spawn(lambda: got.append(()))
    assert pool.join(2) is True
    assert sorted(got, key=len) == [(), (1, "two", None)]
    assert len(pool) == 0


@bounded()
def test_len_counts_running_calls_and_join_times_out(
        make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(4)
    gate_a, gate_b, log = Event(), Event(), []
    assert len(pool) == 0 and pool.join(0) is True
    pool.spawn(blocker(gate_a, log, "a"))
    pool.spawn(blocker(gate_b, log, "b"))
    assert wait_for(lambda: len(log) == 2)
    assert len(pool) == 2
    assert pool.join(0.1) is False          # both still blocked
    gate_a.set()
    assert wait_for(lambda: ("a", "end") in log)
    assert len(pool) == 1
    assert pool.join(0.1) is False          # b still blocked
    gate_b.set()
    assert pool.join(2) is True
    assert len(pool) == 0
    assert log[-1] == ("b", "end")


@bounded()
def test_join_from_another_greenlet_wakes_when_last_call_ends(
        make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(2)
    gate, log = Event(), []
    pool.spawn(blocker(gate, log, "a"))
    joiner = gevent.spawn(pool.join, 3)
    gevent.sleep(0.05)
    assert not joiner.ready()               # join is waiting on the call
    gate.set()
    assert joiner.get(timeout=2) is True
    assert log == [("a", "start"), ("a", "end")]


# -- greenlet reuse -----------------------------------------------------------

@bounded()
def test_finished_greenlet_runs_the_next_call(make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(4)
    seen: list[Any] = []
    record = lambda: seen.append(getcurrent())  # noqa: E731
    pool.spawn(record)
    assert pool.join(2)
    pool.spawn(record)
    assert pool.join(2)
    assert len(seen) == 2
    assert seen[0] is seen[1]
    assert seen[0] is not getcurrent()
    assert seen[0].parent is pool._hub
    assert not seen[0].dead
    assert pool._idle == [seen[0]]


@bounded()
def test_idle_greenlet_holds_nothing_of_its_last_call(
        make_pool: Callable[..., GreenletPool]) -> None:
    """A waiting greenlet must not keep its last call's arguments alive (a
    server's would be a closed connection with its parser and buffers)."""

    class Payload:
        pass

    pool = make_pool(2)
    payload = Payload()
    gone = weakref.ref(payload)
    pool.spawn(lambda p: None, payload)
    assert pool.join(2)
    del payload
    gc.collect()
    assert len(pool._idle) == 1
    assert gone() is None


@bounded()
def test_concurrent_calls_run_in_different_greenlets(
        make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(4)
    gate, seen = Event(), []

    def call() -> None:
        seen.append(getcurrent())
        gate.wait()

    pool.spawn(call)
    pool.spawn(call)
    assert wait_for(lambda: len(seen) == 2)
    assert seen[0] is not seen[1]
    gate.set()
    assert pool.join(2)
    # both now idle and reused: two more concurrent calls use the same two
    before = set(seen)
    gate.clear()
    seen.clear()
    pool.spawn(call)
    pool.spawn(call)
    assert wait_for(lambda: len(seen) == 2)
    assert set(seen) == before
    gate.set()
    assert pool.join(2)


# -- the bound ----------------------------------------------------------------

@bounded()
def test_spawn_blocks_when_full_until_a_slot_frees(
        make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(2)
    gate_a, gate_b, gate_c, log = Event(), Event(), Event(), []
    assert pool.free_count() == 2 and not pool.full()
    pool.spawn(blocker(gate_a, log, "a"))
    assert pool.free_count() == 1 and not pool.full()
    pool.spawn(blocker(gate_b, log, "b"))
    assert pool.free_count() == 0 and pool.full()
    assert wait_for(lambda: len(log) == 2)

    def third() -> None:
        pool.spawn(blocker(gate_c, log, "c"))
        log.append(("spawner", "returned"))

    spawner = gevent.spawn(third)
    gevent.sleep(0.05)
    assert not spawner.ready()               # waiting for a slot
    assert ("c", "start") not in log
    assert len(pool) == 2 and pool.free_count() == 0 and pool.full()

    gate_a.set()
    spawner.join(2)
    assert spawner.successful()
    assert wait_for(lambda: ("c", "start") in log)
    # a's slot went to c: still full, and c started only after a ended
    assert log.index(("a", "end")) < log.index(("spawner", "returned"))
    assert log.index(("a", "end")) < log.index(("c", "start"))
    assert len(pool) == 2 and pool.free_count() == 0 and pool.full()

    gate_b.set()
    assert wait_for(lambda: ("b", "end") in log)
    assert len(pool) == 1 and pool.free_count() == 1 and not pool.full()
    gate_c.set()
    assert pool.join(2)
    assert len(pool) == 0 and pool.free_count() == 2 and not pool.full()


@bounded()
def test_waiting_spawns_are_served_as_slots_free(make_pool: Callable[..., GreenletPool]) -> None:
    """Size 1, five spawners: every call runs, never two at once."""
    pool = make_pool(1)
    running: list[int] = []
    peak: list[int] = [0]
    done: list[int] = []

    def call(n: int) -> None:
        running.append(n)
        peak[0] = max(peak[0], len(running))
        gevent.sleep(0.01)
        running.remove(n)
        done.append(n)

    spawners = [gevent.spawn(pool.spawn, call, n) for n in range(5)]
    gevent.joinall(spawners, timeout=3, raise_error=True)
    assert pool.join(3)
    assert sorted(done) == list(range(5))
    assert peak[0] == 1
    assert pool.free_count() == 1


# -- keep_idle ----------------------------------------------------------------

@bounded()
def test_keep_idle_limits_the_idle_greenlets(make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(4, keep_idle=1)
    gate, seen = Event(), []

    def call() -> None:
        seen.append(getcurrent())
        gate.wait()

    for _ in range(3):
        pool.spawn(call)
    assert wait_for(lambda: len(seen) == 3)
    assert len(set(seen)) == 3
    gate.set()
    assert pool.join(2)
    assert len(pool._idle) == 1
    kept = pool._idle[0]
    assert kept in seen and not kept.dead
    assert wait_for(lambda: sum(g.dead for g in seen) == 2)
    assert [g for g in seen if not g.dead] == [kept]
    # the kept one serves the next call
    seen.clear()
    pool.spawn(lambda: seen.append(getcurrent()))
    assert pool.join(2)
    assert seen == [kept]


@bounded()
def test_keep_idle_zero_keeps_none(make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(2, keep_idle=0)
    seen: list[Any] = []
    pool.spawn(lambda: seen.append(getcurrent()))
    assert pool.join(2)
    assert pool._idle == []
    assert wait_for(lambda: seen[0].dead)
    pool.spawn(lambda: seen.append(getcurrent()))
    assert pool.join(2)
    assert len(seen) == 2 and seen[0] is not seen[1]


# -- exceptions ---------------------------------------------------------------

@bounded()
def test_exception_is_reported_and_the_greenlet_serves_on(
        make_pool: Callable[..., GreenletPool], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    pool = make_pool(1)
    hub = pool._hub
    original = hub.handle_error
    reports: list[tuple[Any, Any, Any]] = []

    def handle_error(context: Any, type_: Any, value: Any, tb: Any) -> None:
        reports.append((context, type_, value))
        original(context, type_, value, tb)   # still printed

    monkeypatch.setattr(hub, "handle_error", handle_error)  # this hub instance only
    seen: list[Any] = []

    def boom() -> None:
        seen.append(getcurrent())
        raise ValueError("boom from a pooled call")

    pool.spawn(boom)
    assert pool.join(2)
    assert len(reports) == 1
    context, type_, value = reports[0]
    assert context is seen[0]
    assert type_ is ValueError and str(value) == "boom from a pooled call"
    assert "boom from a pooled call" in capsys.readouterr().err
    assert len(pool) == 0 and pool.free_count() == 1 and not pool.full()

    # the same greenlet goes on serving
    got: list[Any] = []
    pool.spawn(lambda x: got.append((x, getcurrent())), 42)
    assert pool.join(2)
    assert got == [(42, seen[0])]
    assert len(reports) == 1


@bounded()
def test_greenlet_exit_from_a_call_is_not_reported(
        make_pool: Callable[..., GreenletPool], monkeypatch: pytest.MonkeyPatch) -> None:
    pool = make_pool(1)
    reports: list[Any] = []
    monkeypatch.setattr(pool._hub, "handle_error", lambda *a: reports.append(a))

    def leave() -> None:
        raise GreenletExit

    pool.spawn(leave)
    assert pool.join(2)
    assert reports == []
    assert len(pool) == 0 and pool.free_count() == 1
    got: list[int] = []
    pool.spawn(got.append, 1)
    assert pool.join(2)
    assert got == [1]


# -- kill ---------------------------------------------------------------------

@bounded()
def test_kill_throws_greenlet_exit_into_running_calls(
        make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(3)
    # three idle greenlets first; a and b will take two, one stays idle
    warm = Event()
    for _ in range(3):
        pool.spawn(warm.wait)
    warm.set()
    assert pool.join(2) and len(pool._idle) == 3

    gate = Event()                         # never set
    log: list[tuple[str, str]] = []
    started = []

    def call(name: str) -> None:
        try:
            started.append(getcurrent())
            gate.wait()
            log.append((name, "woke"))
        except BaseException as exc:
            log.append((name, type(exc).__name__))
            raise
        finally:
            log.append((name, "finally"))

    pool.spawn(call, "a")
    pool.spawn(call, "b")
    assert wait_for(lambda: len(started) == 2)
    assert len(pool) == 2 and pool.free_count() == 1
    idle = list(pool._idle)
    assert len(idle) == 1 and idle[0] not in started
    pool.kill()                            # block=True
    assert pool.join(1) is True
    assert len(pool) == 0
    assert pool.free_count() == 3 and not pool.full()
    assert sorted(log) == [("a", "GreenletExit"), ("a", "finally"),
                           ("b", "GreenletExit"), ("b", "finally")]
    # the greenlet that was idle before kill() was ended
    assert wait_for(lambda: idle[0].dead)


@bounded()
def test_kill_nonblocking_then_join(make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(2)
    gate, log = Event(), []
    pool.spawn(blocker(gate, log, "a"))
    assert wait_for(lambda: log == [("a", "start")])
    pool.kill(block=False)
    assert pool.join(2) is True
    assert log == [("a", "start")]          # never reached its end
    assert len(pool) == 0 and pool.free_count() == 2


def test_spawn_right_after_kill_runs(make_pool: Callable[..., GreenletPool]) -> None:
    pool = make_pool(2)
    pool.spawn(lambda: None)
    assert pool.join(2) and len(pool._idle) == 1
    pool.kill()
    got: list[int] = []
    pool.spawn(got.append, 1)
    assert pool.join(0.5) is True
    assert got == [1]
    assert pool.free_count() == 2


# -- a real StreamServer ------------------------------------------------------

class EchoServer:
    """A StreamServer on 127.0.0.1:0 with ``spawn=GreenletPool(size)``; its
    handler echoes until EOF and records its greenlet and the client's port
    as it opens and closes."""

    def __init__(self, size: int) -> None:
        self.pool = GreenletPool(size)
        self.greenlets: set[Any] = set()
        self.events: list[tuple[str, int]] = []
        self.server = StreamServer((LOCAL, 0), self.handle, spawn=self.pool)
        self.server.start()

    @property
    def port(self) -> int:
        return self.server.server_port

    def handle(self, sock: gsocket.socket, address: tuple[str, int]) -> None:
        self.greenlets.add(getcurrent())
        self.events.append(("open", address[1]))
        try:
            with sock:
                while True:
                    data = sock.recv(4096)
                    if not data:
                        break
                    sock.sendall(data)
        finally:
            self.events.append(("close", address[1]))

    def stop(self) -> None:
        self.server.stop(timeout=1)


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    """An EchoServer of two slots, stopped at teardown."""
    server = EchoServer(2)
    yield server
    server.stop()


def client(port: int) -> gsocket.socket:
    """A gevent client socket connected to ``port`` with a bounded timeout."""
    sock = gsocket.create_connection((LOCAL, port), timeout=3)
    sock.settimeout(3)
    return sock


def echo(sock: gsocket.socket, data: bytes) -> bytes:
    """Send ``data`` and read back as many bytes."""
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        block = sock.recv(4096)
        if not block:
            break
        got += block
    return got


@bounded()
def test_server_reuses_greenlets_for_sequential_connections(echo_server: EchoServer) -> None:
    for n in range(5):
        with client(echo_server.port) as sock:
            payload = f"hello {n}".encode()
            assert echo(sock, payload) == payload
        # wait until the handler has seen EOF and its greenlet is idle again
        assert wait_for(lambda: len(echo_server.pool) == 0)
    assert len([e for e in echo_server.events if e[0] == "open"]) == 5
    assert len(echo_server.greenlets) == 1
    assert echo_server.pool.free_count() == 2


@bounded()
def test_server_stops_accepting_when_full_and_resumes(echo_server: EchoServer) -> None:
    pool = echo_server.pool
    first, second = client(echo_server.port), client(echo_server.port)
    try:
        assert echo(first, b"one") == b"one"
        assert echo(second, b"two") == b"two"
        assert len(pool) == 2 and pool.full() and pool.free_count() == 0

        # the kernel completes the handshake (backlog) but nobody serves it
        third = client(echo_server.port)
        try:
            third_port = third.getsockname()[1]
            third.sendall(b"three")
            third.settimeout(0.3)
            with pytest.raises(socket.timeout):
                third.recv(4096)
            assert ("open", third_port) not in echo_server.events
            assert len(pool) == 2

            first_port = first.getsockname()[1]
            first.close()
            third.settimeout(3)
            assert third.recv(4096) == b"three"
            events = echo_server.events
            assert events.index(("close", first_port)) < events.index(("open", third_port))
            assert echo(second, b"still") == b"still"
        finally:
            third.close()
    finally:
        first.close()
        second.close()
    assert wait_for(lambda: len(pool) == 0)
    assert pool.free_count() == 2
    # two slots, so at most two greenlets ever served
    assert len(echo_server.greenlets) == 2
