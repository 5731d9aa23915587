# tests/system/test_lb_faults.py -- the balancer under faults, with real processes.
#
# Strategy: every test starts its own backends (``python -m gservers.backend``)
# and balancer (``python -m lb``) through their command lines on free ports of
# 127.0.0.1, then injects one fault from outside with a signal to a PID it
# started itself -- a burst of requests held at a SIGSTOPped backend that is
# then SIGKILLed (the retry budget), SIGSTOP one with its health checks off
# (back by the end of its ejection), SIGHUP the balancer with a broken
# config, SIGKILL a worker of ``--workers 2`` -- and checks what clients saw
# (loadtests/faults/load.py records the fate of every single request) and
# what /stats and /metrics report.  The faults of the catalogue (a backend
# SIGKILLed or SIGSTOPped under load, every backend down then up, the
# balancer SIGTERMed or SIGHUPed under load) are run by
# tests/test_fault_scenarios.py.  Load is bounded in requests; every wait is
# a poll with a generous deadline that only protects against hangs, never a
# performance assertion.  The ``procs`` fixture ends everything a test
# started, by PID, SIGCONT first so that a stopped process can act on
# SIGTERM.  Preconditions of a scenario are checked with ``require``
# (RuntimeError), so that only the behaviour under test can fail an
# assertion.
from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from loadtests import procstats
from loadtests.faults import load as loadclient
from loadtests.faults.load import LoadClient
from tests.support import (
    ROOT,
    Balancer,
    Reply,
    Server,
    exchange,
    parse_responses,
    run_cli,
    start,
    start_lb,
    wait_until,
)

PAGE = (ROOT / "gservers" / "site" / "page.html").read_bytes()
#: Hang protection for one request; never a performance bound.
HANG = 15.0


# -- helpers ---------------------------------------------------------------------

class Procs:
    """The processes one test started; all ended by PID at teardown."""

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.pids: list[psutil.Process] = []   #: workers seen (PID and start time)

    def add(self, server: Server) -> Server:
        self.servers.append(server)
        return server

    def backend(self, port: int = 0) -> Server:
        return self.add(start("gservers.backend", "--model", "async", str(port)))

    def lb(self, *args: str, backends: list[int]) -> Balancer:
        balancer = start_lb(*args, backends=backends)
        self.add(balancer.server)
        return balancer

    def cleanup(self) -> None:
        for server in reversed(self.servers):
            if server.proc.poll() is None:
                try:
                    os.kill(server.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                server.stop(timeout=15)
        # Workers of a --workers master that outlived it (only if the master
        # was killed): the same PID *and* start time as when we saw them.
        for proc in self.pids:
            procstats.kill(proc)


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        p.cleanup()


def get(port: int, path: str = "/page.html", timeout: float = HANG) -> Reply | None:
    """One GET on a fresh connection; None when no whole response came."""
    request = b"GET %s HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n" % path.encode()
    try:
        data = exchange(port, request, timeout)
        replies = parse_responses(data, [b"GET"])
    except (OSError, ValueError):
        return None
    return replies[0] if replies else None




def name(port: int) -> str:
    return f"127.0.0.1:{port}"


def backend_stats(lb: Balancer) -> dict[str, dict]:
    """/stats backends by name."""
    return {b["name"]: b for b in lb.stats()["backends"]}


def children(parent: int) -> dict[int, psutil.Process]:
    """Live (non-zombie) processes whose parent is ``parent``, by PID (each
    psutil.Process also knows its start time)."""
    return {proc.pid: proc for proc in procstats.tree(parent, recursive=False)[1:]
            if procstats.alive(proc)}


def metric(text: str, family: str, labels: str = "") -> float | None:
    """The value of one sample in Prometheus text, e.g. metric(t, "x_total", 'code="200"')."""
    braces = r"\{" + re.escape(labels) + r"\}" if labels else ""
    pattern = "^" + re.escape(family) + braces + r" (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else None


def require(condition: bool, message: str) -> None:
    """A precondition of a scenario: fails it as an error (RuntimeError), not
    as an AssertionError about the behaviour under test."""
    if not condition:
        raise RuntimeError(message)


def send_until_504(lb: Balancer, tries: int = 6) -> list[Reply | None]:
    """Sequential GETs until one is answered 504 (round robin reaches the
    hung backend within a couple of requests)."""
    replies: list[Reply | None] = []
    for _ in range(tries):
        reply = get(lb.port)
        replies.append(reply)
        if reply is None or reply.status != 200:
            break
    return replies


# -- 1. retry budget --------------------------------------------------------------

@pytest.mark.timeout(60)
def test_retry_budget_covers_a_burst_of_in_flight_failures(procs: Procs) -> None:
    """Deterministic form of the failover burst: 20 GETs are held in flight
    at a SIGSTOPped backend, which is then SIGKILLed; each of them died before
    its response started, so each must be retried on the other backend.
    20 retries out of 240 requests is well inside the default budget (0.2 of
    requests, plus 10/s), so every client must get a 200."""
    victim, other = procs.backend(), procs.backend()
    lb = procs.lb("--health-interval", "60", backends=[victim.port, other.port])
    # Set-up failures raise RuntimeError, so that only the final
    # AssertionError counts as the expected failure.
    warm = LoadClient(lb.port, threads=4, max_per_thread=50, timeout=HANG).start()
    require(warm.join(timeout=60), "warm-up hung")
    require(warm.summary() == {f"{loadclient.COMPLETE}:200": 200}, f"warm-up: {warm.summary()}")
    burst = LoadClient(lb.port, threads=40, keep_alive=False, max_per_thread=1, timeout=HANG)
    try:
        victim.signal(signal.SIGSTOP)
        burst.start()
        require(wait_until(
            lambda: backend_stats(lb)[name(victim.port)]["in_flight"] >= 20, timeout=10),
            "requests did not pile up at the stopped backend")
        victim.proc.kill()  # a stopped process dies on SIGKILL too
        victim.proc.wait(10)
    except BaseException:
        burst.stop()
        raise
    finally:
        victim.signal(signal.SIGCONT)
    require(burst.join(timeout=30), "a client thread hung")
    stats = lb.stats()
    assert stats["totals"]["retries"] >= 20, (burst.summary(), stats["totals"])
    assert burst.summary() == {f"{loadclient.COMPLETE}:200": 40}, (burst.summary(),
                                                                    stats["totals"])


# -- 2. hung backend --------------------------------------------------------------

@pytest.mark.timeout(90)
def test_hung_backend_comes_back_when_its_ejection_ends(procs: Procs) -> None:
    """SIGSTOP one of two backends: 504 from the balancer, ejection, only the
    other one used; after SIGCONT it is used again without a restart,
    brought back by a short ejection with health checks effectively off (one
    check at start, then one a minute).  (Brought back by the health checks,
    under load: the catalogue's "sigstop" scenario.)"""
    good, hung = procs.backend(), procs.backend()
    lb = procs.lb("--response-timeout", "1", "--eject-failures", "1", "--eject-time", "3",
                  "--health-interval", "60", backends=[good.port, hung.port])
    for _ in range(4):  # warm both pools
        reply = get(lb.port)
        assert reply is not None and reply.status == 200
    try:
        hung.signal(signal.SIGSTOP)
        replies = send_until_504(lb)
        assert replies[-1] is not None, "no answer from the balancer (hang protection hit)"
        assert [r.status for r in replies[:-1]] == [200] * (len(replies) - 1)
        assert replies[-1].status == 504, replies[-1].raw
        state = backend_stats(lb)[name(hung.port)]
        assert state["state"] != "up", state
        assert state["failures"] >= 1 and state["ejections"] >= 1, state
        before = state["requests"]
        for _ in range(20):
            reply = get(lb.port)
            assert reply is not None and reply.status == 200 and reply.body == PAGE
        assert backend_stats(lb)[name(hung.port)]["requests"] == before
    finally:
        hung.signal(signal.SIGCONT)

    statuses: list[int | None] = []

    def used_again() -> bool:
        reply = get(lb.port)
        statuses.append(reply.status if reply else None)
        return backend_stats(lb)[name(hung.port)]["requests"] > before

    assert wait_until(used_again, timeout=20, interval=0.1), backend_stats(lb)
    assert set(statuses) == {200}, statuses
    assert backend_stats(lb)[name(hung.port)]["state"] == "up"
    assert lb.server.proc.poll() is None and lb.stats()["pid"] == lb.server.pid  # no restart


# -- 3. SIGHUP with a broken config -----------------------------------------------

def write_config(path: Path, text: str) -> None:
    """Replace the file atomically, as an operator's editor or deploy would."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def backends_toml(ports: list[int]) -> str:
    return "backend = [" + ", ".join(f'"{name(p)}"' for p in ports) + "]\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", ["backend = [\n", 'backend = ["127.0.0.1:0"]\n'],
                         ids=["not_toml", "bad_value"])
def test_sighup_with_invalid_config_keeps_the_old_one(procs: Procs, tmp_path: Path,
                                                     bad: str) -> None:
    a = procs.backend()
    config = tmp_path / "lb.toml"
    write_config(config, backends_toml([a.port]))
    lb = procs.lb("--config", str(config), backends=[])
    write_config(config, bad)
    lb.server.signal(signal.SIGHUP)
    # Either the balancer says it kept the old configuration, or it is gone.
    wait_until(lambda: "not reloaded" in lb.server.log or lb.server.proc.poll() is not None)
    time.sleep(0.2)
    assert lb.server.proc.poll() is None, f"lb exited with {lb.server.proc.returncode}:\n" \
                                          + lb.server.log
    assert "not reloaded" in lb.server.log
    for _ in range(5):
        reply = get(lb.port)
        assert reply is not None and reply.status == 200
    assert set(backend_stats(lb)) == {name(a.port)}


# -- 4. --workers 2 ----------------------------------------------------------------

@pytest.mark.timeout(90)
def test_workers_replaced_after_sigkill_and_master_sigterm(procs: Procs) -> None:
    backends = [procs.backend() for _ in range(2)]
    lb = procs.lb("--workers", "2", backends=[b.port for b in backends])
    master = lb.server.pid
    assert wait_until(lambda: len(children(master)) == 2)
    first = children(master)
    procs.pids.extend(first.values())
    for _ in range(10):
        reply = get(lb.port)
        assert reply is not None and reply.status == 200 and reply.body == PAGE
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    # While the replacement starts, a connection may land on the dead
    # worker's queue; poll, then demand a clean run of answers.
    def replaced() -> bool:
        now = children(master)
        return len(now) == 2 and victim not in now and any(p not in first for p in now)

    assert wait_until(replaced, timeout=15), lb.server.log
    current = children(master)
    procs.pids.extend(proc for pid, proc in current.items() if pid not in first)
    assert wait_until(lambda: (r := get(lb.port, timeout=5)) is not None and r.status == 200,
                      timeout=10)
    for _ in range(20):
        reply = get(lb.port)
        assert reply is not None and reply.status == 200
    assert "starting a new one" in lb.server.log
    lb.server.signal(signal.SIGTERM)
    assert lb.server.proc.wait(30) == 0, lb.server.log
    for pid, proc in {**first, **current}.items():
        assert not procstats.alive(proc), f"worker {pid} outlived its master"


# -- 5. /stats and /metrics -------------------------------------------------------

@pytest.mark.timeout(60)
def test_stats_and_metrics_reflect_traffic_and_failures(procs: Procs) -> None:
    one, two = procs.backend(), procs.backend()
    lb = procs.lb("--response-timeout", "1", "--eject-failures", "1", "--eject-time", "30",
                  backends=[one.port, two.port])
    n = 60
    client = LoadClient(lb.port, threads=4, keep_alive=True, max_per_thread=n // 4,
                        timeout=HANG).start()
    assert client.join(timeout=60), "a client thread hung"
    assert client.summary() == {f"{loadclient.COMPLETE}:200": n}
    stats = lb.stats()
    assert stats["totals"]["requests"] == n
    assert stats["totals"]["responses"] == {"200": n}
    assert stats["totals"]["retries"] == 0
    per = {b["name"]: b for b in stats["backends"]}
    assert set(per) == {name(one.port), name(two.port)}
    assert sum(b["requests"] for b in per.values()) == n
    assert all(b["failures"] == 0 and b["state"] == "up" for b in per.values())
    text = lb.metrics()
    assert metric(text, "gservers_lb_requests_total") == n
    assert metric(text, "gservers_lb_responses_total", 'code="200"') == n
    lines = [metric(text, "gservers_lb_backend_requests_total", f'backend="{k}"') for k in per]
    assert None not in lines and sum(lines) == n, text
    for k in per:
        assert metric(text, "gservers_lb_backend_failures_total", f'backend="{k}"') == 0
        assert metric(text, "gservers_lb_backend_state", f'backend="{k}",state="up"') == 1

    try:
        two.signal(signal.SIGSTOP)
        replies = send_until_504(lb)
        assert replies[-1] is not None and replies[-1].status == 504
    finally:
        two.signal(signal.SIGCONT)
    stats = lb.stats()
    failed = {b["name"]: b for b in stats["backends"]}[name(two.port)]
    assert failed["failures"] >= 1 and failed["ejections"] >= 1, failed
    assert stats["totals"]["responses"].get("504", 0) >= 1
    assert stats["totals"]["requests"] == n + len(replies)
    text = lb.metrics()
    assert metric(text, "gservers_lb_backend_failures_total", f'backend="{name(two.port)}"') >= 1
    assert metric(text, "gservers_lb_responses_total", 'code="504"') >= 1
    assert metric(text, "gservers_lb_requests_total") == n + len(replies)


def test_admin_listener_is_loopback_by_default(procs: Procs) -> None:
    helped = run_cli("lb", "--help")
    assert helped.returncode == 0
    text = " ".join(helped.stdout.split())
    assert "admin listener (the status page, /stats, /metrics, /backends), or off" in text
    assert "token (default: 127.0.0.1:44445)" in text
    assert "(default: 127.0.0.1:44444)" in text  # the proxy listener too
    # The log line of a running balancer names where its admin listener is.
    backend = procs.backend()
    lb = procs.lb(backends=[backend.port])
    assert re.search(r"admin http://127\.0\.0\.1:\d+\)", lb.server.log), lb.server.log
