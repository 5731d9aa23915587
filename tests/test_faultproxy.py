# tests/test_faultproxy.py -- the balancer in front of misbehaving backends.
#
# Strategy: no mocks.  Each test starts three real async backends
# (``python -m gservers.backend``), puts a FaultProxy (tests/faultproxy.py)
# in front of each, and a real balancer (``python -m lb``) over the three
# proxies; then it switches ONE proxy into a fault mode and runs a bounded
# threaded load (tests/loadclient.py: every request has a unique target and
# its fate is recorded).  The health checks go through the proxies too, as
# they would reach a real misbehaving host.  Each test asserts what the
# clients got, matches it request by request against what the proxy did
# (the proxy records the request line of every fault it applied), checks the
# balancer's /stats, and prints its figures (requests sent, failed, outcome
# counts).  Discarding is observed from the proxy's side: after a garbage
# answer or a truncation the proxy keeps its end open and watches for the
# balancer to close it (with --pool-idle-timeout 60, a pooled connection
# would stay open).  Ejection times are long (30 s) so that "not up" is stable while
# asserted; recovery is by the health checks (0.5 s apart).  Waits are polls
# with generous deadlines: hang protection, never performance bounds.
from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests import loadclient
from tests.faultproxy import FaultProxy
from tests.loadclient import LoadClient
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
LB_ARGS = ("--health-interval", "0.5", "--health-timeout", "0.5", "--eject-time", "30")


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


def head_length(port: int) -> int:
    """Bytes of a backend's response head to GET /page.html."""
    data = exchange(port, b"GET /page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    HANG)
    return data.index(b"\r\n\r\n") + 4


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


# -- garbage -------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_garbage_answers_become_502_and_the_backend_is_ejected(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("--pool-idle-timeout", "60")  # only the balancer's own choice closes
    bad = rig.proxies[1]
    bad.mode = "garbage"
    client = load(rig.lb.port)
    kinds = report("garbage", client, proxy=bad.stats())
    # Never the garbage itself: every request got a well-formed 200 or 502.
    assert set(kinds) <= {OK200, f"{loadclient.COMPLETE}:502"}, kinds
    assert full_bodies(client)
    got_502 = Counter(o.target for o in client.outcomes if o.status == 502)
    garbled = page_targets(bad.targets("garbage"))
    assert got_502, "no request reached the garbage-answering backend"
    # Exactly the requests the proxy garbled were answered 502, each once.
    assert got_502 == garbled, (got_502, garbled)
    # The balancer discarded each connection that had answered garbage: it
    # never sent a second request on one, and closed them all (the proxy
    # keeps them open and sees the close; the pool would have kept them 60 s).
    assert bad.stats().get("garbage_reused", 0) == 0, bad.stats()
    assert wait_until(lambda: (s := bad.stats()).get("garbage_closed", 0) == s["garbage"],
                      timeout=10), bad.stats()
    state = rig.backend(1)
    assert state["state"] != "up" and state["failures"] >= 1, state
    # The health checks see the garbage too: it goes down, not only ejected.
    assert wait_until(lambda: rig.backend(1)["state"] == "down"), rig.backend(1)
    # The others keep serving, and only they.
    before = {i: rig.backend(i)["requests"] for i in range(3)}
    after_client = load(rig.lb.port, threads=4, per_thread=75)
    report("garbage, after ejection", after_client)
    assert after_client.summary() == {OK200: 300}
    assert rig.backend(1)["requests"] == before[1]
    assert all(rig.backend(i)["requests"] > before[i] for i in (0, 2))


# -- truncate ------------------------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("cut", ["mid_body", "mid_head"])
def test_truncated_response_is_never_presented_as_complete(make_rig: Callable[..., Rig],
                                                           cut: str) -> None:
    """The balancer streams: a response cut after its head went to the
    client can only be cut at the client too (connection closed); one cut
    before any byte went out becomes a 502.  Either way no client may get a
    short body that looks complete, and the connection is not reused."""
    rig = make_rig("--pool-idle-timeout", "60")  # only the balancer's own choice closes
    bad = rig.proxies[1]
    head = head_length(rig.backends[1].port)
    # mid_head keeps the status line whole, so the health checks still pass:
    # only passive ejection takes the backend out.
    bad.truncate_bytes = head + len(PAGE) // 2 if cut == "mid_body" else 40
    pool_before = rig.backend(1)["pool"]
    bad.mode = "truncate"
    client = load(rig.lb.port)
    kinds = report(f"truncate {cut}", client, proxy=bad.stats())
    cut_at_proxy = page_targets(bad.targets("truncate"))
    assert cut_at_proxy, "no request reached the truncating backend"
    assert full_bodies(client), "a 200 with a short body was presented as complete"
    if cut == "mid_body":
        assert set(kinds) <= {OK200, loadclient.TRUNCATED}, kinds
        seen = Counter(o.target for o in client.outcomes if o.kind == loadclient.TRUNCATED)
    else:
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
    print(f"[truncate {cut}] pool before {pool_before}, after {state['pool']}")
    assert wait_until(lambda: (s := bad.stats()).get("truncate_closed", 0) == s["truncate"],
                      timeout=10), bad.stats()
    assert bad.stats().get("request_after_truncate", 0) == 0, bad.stats()


# -- reset ---------------------------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("reset_on", ["connect", "request"])
def test_reset_gets_are_retried_on_another_backend(make_rig: Callable[..., Rig],
                                                   reset_on: str) -> None:
    rig = make_rig(reset_on=reset_on)
    bad = rig.proxies[1]
    bad.mode = "reset"
    client = load(rig.lb.port)
    totals = rig.lb.stats()["totals"]
    report(f"reset on {reset_on}", client, proxy=bad.stats(), lb_retries=totals["retries"])
    assert bad.stats().get("reset", 0) >= 1
    assert totals["retries"] >= 1, totals
    if reset_on == "request":
        assert totals["retries"] >= sum(page_targets(bad.targets("reset")).values()), totals
    # Zero failed GETs: every reset request was replayed elsewhere.
    assert client.summary() == {OK200: 1200}, client.summary()
    assert full_bodies(client)
    assert wait_until(lambda: rig.backend(1)["state"] == "down"), rig.backend(1)


# -- latency beyond the response timeout -----------------------------------------------

def fault_then_recover(rig: Rig, i: int, mode: str, threads: int = 3) -> tuple[LoadClient, int]:
    """Load while backend ``i`` is in ``mode`` until it is out of rotation,
    then back to pass until it is used again.  Returns the client and the
    number of requests finished when the fault ended."""
    proxy = rig.proxies[i]
    # Stopped once recovered; the cap is only a bound should that never come.
    client = LoadClient(rig.lb.port, threads=threads, max_per_thread=20000, timeout=HANG,
                        pace=0.005)
    proxy.mode = mode
    client.start()
    try:
        assert wait_until(lambda: rig.backend(i)["state"] != "up" and client.count() >= 200,
                          timeout=60), rig.backend(i)
        assert wait_until(lambda: rig.backend(i)["state"] == "down", timeout=30), rig.backend(i)
        before = rig.backend(i)["requests"]
        proxy.mode = "pass"
        fault_end = client.count()
        assert wait_until(lambda: (s := rig.backend(i))["state"] == "up"
                          and s["requests"] > before, timeout=30), (rig.backend(i),
                                                                    client.summary())
        assert client.wait_for(client.count() + 200, timeout=60)
    finally:
        client.stop()
        assert client.join(timeout=60), "a client thread hung"
    return client, fault_end


@pytest.mark.timeout(120)
def test_latency_beyond_response_timeout_504_ejection_recovery(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("--response-timeout", "0.1", latency_ms=300)
    client, fault_end = fault_then_recover(rig, 1, "latency")
    kinds = report("latency 300 ms, --response-timeout 0.1", client, fault_end=fault_end,
                   backend=rig.backend(1))
    assert set(kinds) <= {OK200, f"{loadclient.COMPLETE}:504"}, kinds
    assert kinds[f"{loadclient.COMPLETE}:504"] >= 1, kinds
    assert full_bodies(client)
    state = rig.backend(1)
    assert state["ejections"] >= 1 and state["failures"] >= 1, state
    assert rig.lb.server.proc.poll() is None  # recovered without a restart


# -- blackhole -------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_blackhole_504_within_the_timeout_and_ejection(make_rig: Callable[..., Rig]) -> None:
    timeout = 0.5
    rig = make_rig("--response-timeout", str(timeout))
    bad = rig.proxies[1]
    bad.mode = "blackhole"
    # Round robin reaches the blackhole within three requests.
    timed: list[tuple[int | None, float]] = []
    for _ in range(3):
        began = time.monotonic()
        reply = get(rig.lb.port)
        timed.append((reply.status if reply else None, time.monotonic() - began))
    print(f"\n[blackhole] sequential GETs (status, seconds): {timed}")
    assert [s for s, _ in timed].count(504) == 1 and set(s for s, _ in timed) == {200, 504}
    waited = next(t for s, t in timed if s == 504)
    # It waited for the timeout (a lower bound), and not forever (hang protection).
    assert timeout * 0.9 <= waited < timeout + 10, waited
    bad.mode = "pass"
    client, fault_end = fault_then_recover(rig, 1, "blackhole")
    kinds = report("blackhole, --response-timeout 0.5", client, fault_end=fault_end,
                   proxy=bad.stats())
    assert set(kinds) <= {OK200, f"{loadclient.COMPLETE}:504"}, kinds
    assert full_bodies(client)
    assert rig.backend(1)["ejections"] >= 1


# -- slow close ------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_slow_close_does_not_delay_clients(make_rig: Callable[..., Rig]) -> None:
    """Responses say Connection: close, but the socket stays open 30 s.  A
    balancer that waited for the close would hold each such client for the
    response timeout (20 s); the clients give up reading after 8 s (hang
    protection), so every request done within that is proof enough."""
    rig = make_rig("--response-timeout", "20", slow_close_s=30.0)
    bad = rig.proxies[1]
    bad.mode = "slow_close"
    client = LoadClient(rig.lb.port, threads=4, max_per_thread=150, timeout=8.0).start()
    assert client.join(timeout=120), "a client thread hung"
    held = page_targets(bad.targets("slow_close"))
    kinds = report("slow_close 30 s", client, held=sum(held.values()), proxy=bad.stats())
    assert kinds == {OK200: 600}, kinds
    assert full_bodies(client)
    assert held, "no request went through the slow-closing backend"
    # The balancer believed the Connection: close and never reused a held connection.
    assert bad.stats().get("request_while_held", 0) == 0, bad.stats()
    assert rig.backend(1)["state"] == "up"
