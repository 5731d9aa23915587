# tests/system/test_faultproxy.py -- the fault proxy itself, and the balancer in front of
# misbehaving backends where the fault catalogue has no scenario.
#
# Strategy: no mocks.  The proxy's modes are checked first against one real
# backend.  Then each test starts three real async backends
# (``python -m gservers.backend``), puts a FaultProxy (loadtests/faults/proxy.py)
# in front of each, and a real balancer (``python -m lb``) over the three
# proxies; then it switches ONE proxy into a fault mode and runs a bounded
# threaded load (loadtests/faults/load.py: every request has a unique target
# and its fate is recorded).  The health checks go through the proxies too,
# as they would reach a real misbehaving host.  Each test asserts what the
# clients got, matches it request by request against what the proxy did
# (the proxy records the request line of every fault it applied), checks the
# balancer's /stats, and prints its figures.  Discarding is observed from
# the proxy's side: after a truncation the proxy keeps its end open and
# watches for the balancer to close it (with --pool-idle-timeout 60, a
# pooled connection would stay open).  Ejection times are long (30 s) so
# that "not up" is stable while asserted; recovery is by the health checks
# (0.5 s apart).  Waits are polls with generous deadlines: hang protection,
# never performance bounds.  Timeouts are generous on every healthy path (a
# health check may take 5 s, a client waits 15 s for an answer) so that a
# loaded machine cannot make a healthy backend look faulty; a short timeout
# appears only where the fault is (the blackhole self-check, where nothing
# will ever come), and where a test tells a fault from a success by a
# timeout, the two sides are far apart (the slow close: clients give up
# after 15 s, a balancer that waited for the close would hold them 40 s).
# The faults the catalogue covers (garbage, truncation mid-body, reset on
# request, latency, blackhole) are run by tests/test_fault_scenarios.py.
from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from loadtests.faults import load as loadclient
from loadtests.faults.load import LoadClient
from loadtests.faults.proxy import FaultProxy
from tests.support import (
    ROOT,
    Balancer,
    Reply,
    Server,
    exchange,
    parse_responses,
    start_backend,
    start_lb,
    wait_until,
)

PAGE = (ROOT / "gservers" / "site" / "page.html").read_bytes()
HANG = 15.0  #: hang protection for one request; never a performance bound
OK200 = f"{loadclient.COMPLETE}:200"
#: Settings shared by every balancer here: fast health checks, long ejections.
#: (The health timeout applies to the healthy backends too: generous, never the fault.)
LB_ARGS = ("--health-interval", "0.5", "--health-timeout", "5", "--eject-time", "30")


# -- the rig -----------------------------------------------------------------------

@dataclass
class Rig:
    """Backends, one fault proxy in front of each, a balancer over the proxies."""

    backends: list[Server]
    proxies: list[FaultProxy]
    lb: Balancer

    def name(self, i: int) -> str:
        """The balancer's name for backend ``i`` (the address of its proxy)."""
        return f"127.0.0.1:{self.proxies[i].port}"

    def backend(self, i: int) -> dict:
        """/stats of backend ``i``."""
        return {b["name"]: b for b in self.lb.stats()["backends"]}[self.name(i)]


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []
    started: list[Server] = []
    proxies: list[FaultProxy] = []

    def make(*lb_args: str, n: int = 3, **proxy_options: object) -> Rig:
        backends = [start_backend("async") for _ in range(n)]
        started.extend(backends)
        fps = [FaultProxy(("127.0.0.1", b.port), **proxy_options).start()  # type: ignore[arg-type]
               for b in backends]
        proxies.extend(fps)
        lb = start_lb(*LB_ARGS, *lb_args, backends=[p.port for p in fps])
        started.append(lb.server)
        rig = Rig(backends, fps, lb)
        made.append(rig)
        require(wait_until(lambda: all(b["state"] == "up" for b in lb.stats()["backends"])),
                "backends not up at start")
        for _ in range(2 * n):  # warm every pool
            reply = get(lb.port)
            require(reply is not None and reply.status == 200, f"warm-up: {reply}")
        return rig

    try:
        yield make
    finally:
        for rig in made:  # the balancer first, so nothing new reaches the proxies
            rig.lb.server.stop(timeout=15)
        for proxy in proxies:
            proxy.stop()
        for server in started:
            server.stop(timeout=15)


# -- helpers -------------------------------------------------------------------------

def require(condition: bool, message: str) -> None:
    """A precondition of the scenario (RuntimeError, not an assertion)."""
    if not condition:
        raise RuntimeError(message)




def get(port: int, path: str = "/page.html", timeout: float = HANG) -> Reply | None:
    """One GET on a fresh connection; None when no whole response came."""
    request = b"GET %s HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n" % path.encode()
    try:
        replies = parse_responses(exchange(port, request, timeout), [b"GET"])
    except (OSError, ValueError):
        return None
    return replies[0] if replies else None


def load(port: int, threads: int = 6, per_thread: int = 200) -> LoadClient:
    """A bounded keep-alive load, run to its end."""
    client = LoadClient(port, threads=threads, max_per_thread=per_thread, timeout=HANG).start()
    assert client.join(timeout=180), "a client thread hung"
    return client


def report(title: str, client: LoadClient, **extra: object) -> Counter:
    """Print the scenario's figures; return the outcome counts."""
    kinds = client.summary()
    failed = sum(n for k, n in kinds.items() if k != OK200)
    figures = " ".join(f"{k}={v}" for k, v in extra.items())
    print(f"\n[{title}] requests sent={len(client.outcomes)} failed={failed} "
          f"outcomes={dict(kinds)} {figures}")
    return kinds


def page_targets(targets: list[str]) -> Counter:
    """The client requests among a proxy's fault targets (not /health)."""
    return Counter(t for t in targets if t.startswith("/page.html?"))


def full_bodies(client: LoadClient) -> bool:
    return all(o.body_len == len(PAGE) for o in client.outcomes if o.ok)


# -- the proxy itself -----------------------------------------------------------------

@pytest.mark.timeout(60)
def test_the_fault_proxy_does_what_each_mode_says() -> None:
    """A quick self-check of the tool the other tests rely on."""
    backend = start_backend("async")
    request = b"GET /page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    try:
        with FaultProxy(("127.0.0.1", backend.port), truncate_bytes=50, latency_ms=200,
                        slow_close_s=0.5) as proxy:
            whole = exchange(proxy.port, request, HANG)
            assert whole.endswith(PAGE)
            proxy.mode = "truncate"
            cut = exchange(proxy.port, request, HANG)  # (the Date may differ)
            assert len(cut) == 50 and cut.startswith(b"HTTP/1.1 200 OK\r\n"), cut
            proxy.mode = "garbage"
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=HANG) as sock:
                sock.sendall(request)
                assert sock.recv(4096) == proxy.garbage
            proxy.mode = "reset"
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=HANG) as sock:
                sock.sendall(request)
                with pytest.raises(ConnectionResetError):
                    sock.recv(4096)
            proxy.mode = "blackhole"
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5) as sock:
                sock.sendall(request)
                with pytest.raises(socket.timeout):
                    sock.recv(4096)
            proxy.mode = "slow_close"
            began = time.monotonic()
            data = exchange(proxy.port, request, HANG)
            assert b"\r\nConnection: close\r\n" in data and data.endswith(PAGE)
            assert time.monotonic() - began >= 0.45  # held open, then closed
            proxy.mode = "latency"
            began = time.monotonic()
            assert exchange(proxy.port, request, HANG).endswith(PAGE)
            assert time.monotonic() - began >= 0.35  # 200 ms each way
            stats = proxy.stats()
            assert stats["truncate"] == stats["garbage"] == stats["reset"] == 1, stats
            assert stats["blackhole"] == stats["slow_close"] == 1, stats
            with pytest.raises(ValueError):
                proxy.mode = "nonsense"
        assert proxy.stats()["active"] == 0
    finally:
        backend.stop()


# -- truncate ------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_response_truncated_mid_head_becomes_502(make_rig: Callable[..., Rig]) -> None:
    """The balancer streams, but a response cut before any byte of it went
    to the client becomes a 502; no client may get a short body that looks
    complete, and the connection is not reused.  (Cut mid-body, after the
    head went out: the catalogue's "truncate" scenario.)"""
    rig = make_rig("--pool-idle-timeout", "60")  # only the balancer's own choice closes
    bad = rig.proxies[1]
    # 40 bytes keep the status line whole, so the health checks still pass:
    # only passive ejection takes the backend out.
    bad.truncate_bytes = 40
    pool_before = rig.backend(1)["pool"]
    bad.mode = "truncate"
    client = load(rig.lb.port)
    kinds = report("truncate mid_head", client, proxy=bad.stats())
    cut_at_proxy = page_targets(bad.targets("truncate"))
    assert cut_at_proxy, "no request reached the truncating backend"
    assert full_bodies(client), "a 200 with a short body was presented as complete"
    assert set(kinds) <= {OK200, f"{loadclient.COMPLETE}:502"}, kinds
    seen = Counter(o.target for o in client.outcomes if o.status == 502)
    # Every cut response was detected by its client as such, and nothing else failed.
    assert seen == cut_at_proxy, (seen, cut_at_proxy)
    state = rig.backend(1)
    assert state["failures"] >= len(cut_at_proxy) and state["ejections"] >= 1, state
    assert state["state"] != "up", state
    # Discarded: the proxy half-closes a cut connection and waits; the
    # balancer must close it at once (pooled, it would stay open for 60 s),
    # and never send another request on it.
    print(f"[truncate mid_head] pool before {pool_before}, after {state['pool']}")
    assert wait_until(lambda: (s := bad.stats()).get("truncate_closed", 0) == s["truncate"],
                      timeout=10), bad.stats()
    assert bad.stats().get("request_after_truncate", 0) == 0, bad.stats()


# -- reset ---------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_reset_on_connect_gets_are_retried_on_another_backend(
        make_rig: Callable[..., Rig]) -> None:
    """Connections reset as soon as they are accepted.  (Reset when a request
    arrives: the catalogue's "reset" scenario.)"""
    rig = make_rig(reset_on="connect")
    bad = rig.proxies[1]
    bad.mode = "reset"
    client = load(rig.lb.port)
    totals = rig.lb.stats()["totals"]
    report("reset on connect", client, proxy=bad.stats(), lb_retries=totals["retries"])
    assert bad.stats().get("reset", 0) >= 1
    assert totals["retries"] >= 1, totals
    # Zero failed GETs: every reset request was replayed elsewhere.
    assert client.summary() == {OK200: 1200}, client.summary()
    assert full_bodies(client)
    assert wait_until(lambda: rig.backend(1)["state"] == "down"), rig.backend(1)


# -- slow close ------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_slow_close_does_not_delay_clients(make_rig: Callable[..., Rig]) -> None:
    """Responses say Connection: close, but the socket stays open 60 s.  A
    balancer that waited for the close would hold each such client for the
    response timeout (40 s); the clients give up reading after HANG (15 s,
    hang protection), so every request done within that is proof enough --
    and no healthy request comes anywhere near 15 s, however loaded the machine."""
    rig = make_rig("--response-timeout", "40", slow_close_s=60.0)
    bad = rig.proxies[1]
    bad.mode = "slow_close"
    client = LoadClient(rig.lb.port, threads=4, max_per_thread=150, timeout=HANG).start()
    assert client.join(timeout=120), "a client thread hung"
    held = page_targets(bad.targets("slow_close"))
    kinds = report("slow_close 60 s", client, held=sum(held.values()), proxy=bad.stats())
    assert kinds == {OK200: 600}, kinds
    assert full_bodies(client)
    assert held, "no request went through the slow-closing backend"
    # The balancer believed the Connection: close and never reused a held connection.
    assert bad.stats().get("request_while_held", 0) == 0, bad.stats()
    assert rig.backend(1)["state"] == "up"
