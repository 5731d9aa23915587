# scripts/reliability.py (behind scripts/reliability) -- the fault scenarios as a table.
#
# Strategy: every scenario starts its own real processes on free ports of
# 127.0.0.1 -- async backends (``python -m gservers.backend``), a balancer
# (``python -m lb``) and, for the misbehaving-backend faults, a FaultProxy
# (tests/faultproxy.py, imported from this repository) in front of each
# backend -- runs a bounded, paced, threaded keep-alive load
# (tests/loadclient.py; every request's fate and time is recorded), injects
# one fault, ends it, and measures: requests sent, failed (no complete 2xx),
# lost (no complete response at all), the status codes seen, and the
# recovery time.  Each scenario has a stated expectation; the verdict says
# whether the run met it, and why not.  Processes are ended by the PIDs this
# script got when it started them (SIGCONT first, then SIGTERM, then
# SIGKILL), also on Ctrl-C or an error; nothing else is ever signalled.
from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import loadclient  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402
from tests.loadclient import LoadClient, Outcome  # noqa: E402
from tests.support import Balancer, Server, exchange, parse_responses, start, start_lb  # noqa: E402

PAGE = (ROOT / "gservers" / "site" / "page.html").read_bytes()
HANG = 15.0          #: hang protection for one request (never a performance bound)
WAIT = 20.0          #: hang protection for one phase of a scenario
#: Fast health checks (0.5 s apart, fall/rise 2) and a short ejection, so
#: that a backend comes back within a couple of seconds of its fault's end.
LB_BASE = ("--health-interval", "0.5", "--health-timeout", "0.5", "--eject-time", "2")
LABELS = {loadclient.CLOSED_BEFORE_RESPONSE: "closed", loadclient.TRUNCATED: "cut",
          loadclient.TIMEOUT: "timeout", loadclient.MALFORMED: "malformed",
          loadclient.CONNECT_FAILED: "refused"}


# -- processes, load, figures ----------------------------------------------------------

class Stack:
    """What one scenario started; everything ended by PID on the way out."""

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.proxies: list[FaultProxy] = []
        self.loads: list[LoadClient] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="gsv-reliability-")
        self.dir = Path(self.tmp.name)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def backend(self, port: int = 0) -> Server:
        server = start("gservers.backend", "--model", "async", str(port))
        self.servers.append(server)
        return server

    def lb(self, *args: str, backends: list[int]) -> Balancer:
        balancer = start_lb(*args, backends=backends)
        self.servers.append(balancer.server)
        return balancer

    def proxy(self, port: int, **options: Any) -> FaultProxy:
        proxy = FaultProxy(("127.0.0.1", port), **options).start()
        self.proxies.append(proxy)
        return proxy

    def load(self, port: int, **options: Any) -> Load:
        client = Load(port, **options)
        self.loads.append(client)
        return client.start()

    def close(self) -> None:
        for client in self.loads:
            client.stop()
        for server in reversed(self.servers):  # the balancer before its backends
            if server.proc.poll() is None:
                try:
                    os.kill(server.pid, signal.SIGCONT)  # a stopped one must see SIGTERM
                except ProcessLookupError:
                    pass
                server.stop(timeout=10)
        for proxy in self.proxies:
            proxy.stop()
        for client in self.loads:
            client.join(timeout=HANG + 5)
        self.tmp.cleanup()


class Load(LoadClient):
    """tests/loadclient.py, paced (``pace`` seconds before each request of a
    thread) and with the finishing time of every request (``outcome.at``)."""

    def __init__(self, port: int, threads: int = 8, pace: float = 0.02, cap: int = 500,
                 **options: Any) -> None:
        super().__init__(port, threads=threads, max_per_thread=cap, timeout=HANG, pace=pace,
                         **options)

    def _record(self, outcome: Outcome) -> None:
        outcome.at = time.monotonic()  # type: ignore[attr-defined]
        super()._record(outcome)

    def finish(self) -> list[Outcome]:
        self.stop()
        if not self.join(timeout=HANG + 10):
            raise Hang("a load thread hung")
        return list(self.outcomes)


class Hang(Exception):
    """A phase of a scenario did not end within its hang protection."""


@dataclass
class Row:
    scenario: str
    sent: int = 0
    failed: int = 0
    lost: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    recovery_s: float | None = None
    verdict: str = "ok"
    expectation: str = ""
    note: str = ""
    name: str = ""           #: the scenario's --only name

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def codes(self) -> str:
        keys = sorted(self.statuses, key=lambda k: (not k.isdigit(), k))
        return " ".join(f"{k}×{self.statuses[k]}" for k in keys) or "-"


def tally(row: Row, outcomes: list[Outcome]) -> None:
    """Add ``outcomes`` to the row's figures.  A refused connect sent no
    request: it shows as refused×N but is not counted as sent."""
    for o in outcomes:
        if o.kind == loadclient.CONNECT_FAILED:
            row.statuses["refused"] = row.statuses.get("refused", 0) + 1
            continue
        row.sent += 1
        if o.kind == loadclient.COMPLETE:
            key = str(o.status)
            if not 200 <= o.status < 300:
                row.failed += 1
        else:
            key = LABELS[o.kind]
            row.failed += 1
            row.lost += 1
        row.statuses[key] = row.statuses.get(key, 0) + 1


def judge(row: Row, problems: list[str]) -> Row:
    row.verdict = "ok" if not problems else "not ok: " + "; ".join(problems)
    return row


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT,
               interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(interval)
    return False


def backend_state(lb: Balancer, name: str) -> dict:
    return {b["name"]: b for b in lb.stats()["backends"]}[name]


def back_in_rotation(lb: Balancer, name: str, since: int, timeout: float = WAIT) -> float | None:
    """Monotonic time when ``name`` is up and taking requests again (its
    request count past ``since``), or None."""
    found: list[float] = []

    def back() -> bool:
        state = backend_state(lb, name)
        if state["state"] == "up" and state["requests"] > since:
            found.append(time.monotonic())
            return True
        return False

    wait_until(back, timeout)
    return found[0] if found else None


def need(condition: bool, message: str) -> None:
    if not condition:
        raise Hang(message)


def get(port: int, path: str = "/page.html") -> Any:
    request = b"GET %s HTTP/1.1\r\nHost: reliability\r\nConnection: close\r\n\r\n" % path.encode()
    try:
        replies = parse_responses(exchange(port, request, HANG), [b"GET"])
    except (OSError, ValueError):
        return None
    return replies[0] if replies else None


def short_bodies(outcomes: list[Outcome]) -> int:
    return sum(1 for o in outcomes if o.ok and o.body_len != len(PAGE))


def page_targets(targets: list[str]) -> Counter:
    return Counter(t for t in targets if t.startswith("/page.html?"))


# -- scenarios ------------------------------------------------------------------------

def backend_fault(inject: Callable[[], None], end: Callable[[], None], lb: Balancer,
                  victim: str, load: Load, row: Row, out_by: str = "any"
                  ) -> tuple[list[Outcome], list[str]]:
    """The common timeline: load, fault, out of rotation (+1 s of load
    without it), fault ends, back in rotation (recovery), a tail of load."""
    problems: list[str] = []
    need(load.wait_for(300, timeout=WAIT), "load did not start")
    inject()
    out = wait_until(lambda: backend_state(lb, victim)["state"] != "up")
    if out and out_by == "down":
        out = wait_until(lambda: backend_state(lb, victim)["state"] == "down")
    if not out:
        problems.append(f"never taken out of rotation ({backend_state(lb, victim)['state']})")
    time.sleep(1.0)
    since = backend_state(lb, victim)["requests"]
    end()
    ended = time.monotonic()
    back = back_in_rotation(lb, victim, since)
    if back is None:
        problems.append(f"not back in rotation within {WAIT:.0f}s")
    else:
        row.recovery_s = round(back - ended, 2)
    load.wait_for(load.count() + 300, timeout=WAIT)
    outcomes = load.finish()
    tally(row, outcomes)
    if lb.server.proc.poll() is not None:
        problems.append(f"the balancer exited ({lb.server.proc.returncode})")
    if short_bodies(outcomes):
        problems.append(f"{short_bodies(outcomes)} 200s with a short body")
    return outcomes, problems


def proxied(stack: Stack, lb_args: tuple[str, ...], **proxy_options: Any
            ) -> tuple[list[Server], list[FaultProxy], Balancer]:
    backends = [stack.backend() for _ in range(3)]
    proxies = [stack.proxy(b.port, **proxy_options) for b in backends]
    lb = stack.lb(*LB_BASE, *lb_args, backends=[p.port for p in proxies])
    need(wait_until(lambda: all(b["state"] == "up" for b in lb.stats()["backends"])),
         "backends not up at start")
    return backends, proxies, lb


def allowed(row: Row, codes: set[str], problems: list[str]) -> None:
    extra = set(row.statuses) - codes
    if extra:
        problems.append("unexpected " + ", ".join(f"{k}×{row.statuses[k]}" for k in sorted(extra)))


def s_sigkill(stack: Stack) -> Row:
    row = Row("backend SIGKILL mid-load", expectation="0 failed (in-flight GETs retried); "
              "the restarted backend back in rotation")
    backends = [stack.backend() for _ in range(3)]
    lb = stack.lb(*LB_BASE, backends=[b.port for b in backends])
    victim = backends[1]
    load = stack.load(lb.port)

    def restart() -> None:
        stack.backend(victim.port)

    _, problems = backend_fault(victim.proc.kill, restart, lb, f"127.0.0.1:{victim.port}",
                                load, row)
    if row.failed:
        problems.append(f"{row.failed} failed")
    return judge(row, problems)


def s_sigstop(stack: Stack) -> Row:
    row = Row("SIGSTOP hung backend", expectation="only 200 and 504 (requests stuck at the "
              "hung backend, after --response-timeout 1), nothing lost; back after SIGCONT")
    backends = [stack.backend() for _ in range(3)]
    lb = stack.lb(*LB_BASE, "--response-timeout", "1", backends=[b.port for b in backends])
    victim = backends[1]
    load = stack.load(lb.port)
    _, problems = backend_fault(lambda: victim.signal(signal.SIGSTOP),
                                lambda: victim.signal(signal.SIGCONT), lb,
                                f"127.0.0.1:{victim.port}", load, row, out_by="down")
    allowed(row, {"200", "504"}, problems)
    return judge(row, problems)


def proxy_scenario(stack: Stack, scenario: str, expectation: str, mode: str,
                   lb_args: tuple[str, ...], codes: set[str], out_by: str = "down",
                   **proxy_options: Any) -> tuple[Row, list[Outcome], FaultProxy, list[str]]:
    row = Row(scenario, expectation=expectation)
    backends, proxies, lb = proxied(stack, lb_args, **proxy_options)
    bad = proxies[1]
    if mode == "truncate":
        head = exchange(backends[1].port, b"GET /page.html HTTP/1.1\r\nHost: x\r\n"
                        b"Connection: close\r\n\r\n", HANG).index(b"\r\n\r\n") + 4
        bad.truncate_bytes = head + len(PAGE) // 2  # mid-body
    load = stack.load(lb.port)

    def inject() -> None:
        bad.mode = mode

    def end() -> None:
        bad.mode = "pass"

    outcomes, problems = backend_fault(inject, end, lb, f"127.0.0.1:{bad.port}", load, row,
                                       out_by=out_by)
    allowed(row, codes, problems)
    return row, outcomes, bad, problems


def s_garbage(stack: Stack) -> Row:
    row, outcomes, bad, problems = proxy_scenario(
        stack, "garbage response", "exactly the garbled requests answered 502 (never the "
        "garbage), nothing lost, each garbage-answering connection closed by the balancer; "
        "down by health checks, back after", "garbage", ("--pool-idle-timeout", "60"),
        {"200", "502"})
    got = Counter(o.target for o in outcomes if o.status == 502)
    garbled = page_targets(bad.targets("garbage"))
    if got != garbled:
        problems.append(f"502s {sum(got.values())} != garbled requests {sum(garbled.values())}")
    if bad.stats().get("garbage_reused", 0):
        problems.append("a connection that answered garbage was used again")
    if not wait_until(lambda: (s := bad.stats()).get("garbage_closed", 0) == s["garbage"], 5):
        problems.append(f"connections that answered garbage left open: {bad.stats()}")
    return judge(row, problems)


def s_truncate(stack: Stack) -> Row:
    row, outcomes, bad, problems = proxy_scenario(
        stack, "truncated response", "only 200 and cut (a response cut mid-body after its "
        "head went out can only be cut at the client): each cut one is a request the proxy "
        "truncated, never a short body presented as complete; each cut connection closed "
        "by the balancer; ejected, back after", "truncate", ("--pool-idle-timeout", "60"),
        {"200", "cut"}, out_by="any")
    seen = Counter(o.target for o in outcomes if o.kind == loadclient.TRUNCATED)
    cut = page_targets(bad.targets("truncate"))
    if seen != cut:
        problems.append(f"cut at clients {sum(seen.values())} != truncated {sum(cut.values())}")
    if not wait_until(lambda: (s := bad.stats()).get("truncate_closed", 0) == s["truncate"], 5) \
            or bad.stats().get("request_after_truncate", 0):
        problems.append(f"truncated connections not discarded: {bad.stats()}")
    row.note = f"{sum(cut.values())} responses truncated mid-body by the proxy"
    return judge(row, problems)


def s_reset(stack: Stack) -> Row:
    row, outcomes, bad, problems = proxy_scenario(
        stack, "connection reset", "0 failed (a GET reset before its response is retried on "
        "another backend); down by health checks, back after", "reset", (), {"200"})
    if row.failed:
        problems.append(f"{row.failed} failed")
    row.note = f"{bad.stats().get('reset', 0)} connections reset by the proxy"
    return judge(row, problems)


def s_latency(stack: Stack) -> Row:
    row, outcomes, bad, problems = proxy_scenario(
        stack, "latency beyond timeout", "only 200 and 504 (300 ms per chunk vs "
        "--response-timeout 0.1), nothing lost; down, back after", "latency",
        ("--response-timeout", "0.1"), {"200", "504"}, latency_ms=300)
    if not row.statuses.get("504"):
        problems.append("no 504 seen")
    return judge(row, problems)


def s_blackhole(stack: Stack) -> Row:
    row, outcomes, bad, problems = proxy_scenario(
        stack, "blackhole", "only 200 and 504 (after --response-timeout 0.5), nothing lost; "
        "down, back after", "blackhole", ("--response-timeout", "0.5"), {"200", "504"})
    return judge(row, problems)


def s_all_down(stack: Stack) -> Row:
    row = Row("all backends down, then up", expectation="503 with Retry-After while none is "
              "up (502 while the last ones fail), nothing lost; 200 again after the restart "
              "(recovery: restart to first 200)")
    problems: list[str] = []
    backends = [stack.backend() for _ in range(2)]
    lb = stack.lb(*LB_BASE, backends=[b.port for b in backends])
    load = stack.load(lb.port, threads=4, cap=750)
    need(load.wait_for(300, timeout=WAIT), "load did not start")
    for b in backends:
        b.proc.kill()
        b.proc.wait(10)
    if not wait_until(lambda: all(b["state"] == "down" for b in lb.stats()["backends"])):
        problems.append("backends not taken down")
    time.sleep(1.0)
    probe = get(lb.port)
    if probe is None or probe.status != 503 or probe.header("Retry-After") is None:
        problems.append(f"no 503 with Retry-After while down ({probe and probe.status})")
    restarted = time.monotonic()
    for b in backends:
        stack.backend(b.port)
    if not wait_until(lambda: any(o.ok and o.at > restarted for o in list(load.outcomes))):
        problems.append("no 200 after the restart")
    load.wait_for(load.count() + 300, timeout=WAIT)
    outcomes = load.finish()
    tally(row, outcomes)
    after = [o.at for o in outcomes if o.ok and o.at > restarted]
    if after:
        row.recovery_s = round(min(after) - restarted, 2)
    allowed(row, {"200", "502", "503"}, problems)
    if not row.statuses.get("503"):
        problems.append("no 503 seen")
    return judge(row, problems)


ACCESS_RE = re.compile(r"^\S+ GET (\S+) (\d+) \d+ (\S+) ")


def s_lb_sigterm(stack: Stack) -> Row:
    row = Row("lb SIGTERM under load", expectation="exit 0; only 200, unanswered-and-"
              "unprocessed (closed, safe to resend) and refused connects after the listener "
              "closed; every processed request answered")
    problems: list[str] = []
    backends = [stack.backend() for _ in range(2)]
    log_path = stack.dir / "access.log"
    lb = stack.lb(*LB_BASE, "--access-log", str(log_path), "--grace", "10",
                  backends=[b.port for b in backends])
    load = stack.load(lb.port, stop_on_connect_failure=True)
    need(load.wait_for(1000, timeout=WAIT), "load did not start")
    lb.server.signal(signal.SIGTERM)
    try:
        code = lb.server.proc.wait(WAIT)
    except Exception:
        code = None
    need(load.join(timeout=WAIT), "a load thread hung after SIGTERM")
    outcomes = load.finish()
    tally(row, outcomes)
    if code != 0:
        problems.append(f"exit code {code}")
    allowed(row, {"200", "closed", "refused"}, problems)
    logged = {}
    for line in log_path.read_text().splitlines():
        m = ACCESS_RE.match(line)
        if m:
            logged[m.group(1)] = int(m.group(2))
    unanswered = [o for o in outcomes if o.kind == loadclient.CLOSED_BEFORE_RESPONSE]
    processed = [o for o in unanswered if o.target in logged]
    if processed:
        problems.append(f"{len(processed)} processed but unanswered")
    if {o.target for o in outcomes if o.ok} != set(logged):
        problems.append("access log and clients disagree")
    row.note = (f"{len(unanswered)} unanswered requests were never processed (safe to "
                f"resend); {row.statuses.get('refused', 0)} connects refused once closed")
    return judge(row, problems)


def s_lb_sighup(stack: Stack) -> Row:
    row = Row("lb SIGHUP reload under load", expectation="0 failed across a swap of the "
              "whole backend set; the new backends take every request after it")
    problems: list[str] = []
    a, b, c, d = (stack.backend() for _ in range(4))
    config = stack.dir / "lb.toml"

    def write(ports: list[int]) -> None:
        tmp = config.with_suffix(".tmp")
        tmp.write_text("backend = [" + ", ".join(f'"127.0.0.1:{p}"' for p in ports) + "]\n")
        os.replace(tmp, config)

    write([a.port, b.port])
    lb = stack.lb(*LB_BASE, "--config", str(config), backends=[])
    load = stack.load(lb.port)
    need(load.wait_for(600, timeout=WAIT), "load did not start")
    write([c.port, d.port])
    lb.server.signal(signal.SIGHUP)
    if not wait_until(lambda: "SIGHUP: reloaded" in lb.server.log):
        problems.append("no reload")
    load.wait_for(load.count() + 600, timeout=WAIT)
    outcomes = load.finish()
    tally(row, outcomes)
    names = {s["name"]: s for s in lb.stats()["backends"]}
    if set(names) != {f"127.0.0.1:{c.port}", f"127.0.0.1:{d.port}"} or \
            not all(s["requests"] > 0 for s in names.values()):
        problems.append(f"new backend set not in use: {sorted(names)}")
    if row.failed:
        problems.append(f"{row.failed} failed")
    return judge(row, problems)


def slow_clients(port: int, n: int, interval: float,
                 deadline: float) -> tuple[Counter, list[float]]:
    """``n`` slowloris connections: a request head begun, then one more byte
    every ``interval`` s, never finished.  Returns how each ended (status or
    "closed"/"timeout") and when (seconds after the start)."""
    began = time.monotonic()
    socks: dict[socket.socket, bytearray] = {}
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=HANG)
        s.sendall(b"GET /page.html HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        s.setblocking(False)
        socks[s] = bytearray()
    ended: Counter = Counter()
    times: list[float] = []
    next_drip = time.monotonic() + interval
    try:
        while socks and time.monotonic() - began < deadline:
            readable, _, _ = select.select(list(socks), [], [], 0.1)
            for s in readable:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if data:
                    socks[s].extend(data)
                    continue
                got = bytes(socks.pop(s))
                m = re.match(rb"HTTP/1\.[01] (\d{3})", got)
                ended[m.group(1).decode() if m else "closed"] += 1
                times.append(time.monotonic() - began)
                s.close()
            if time.monotonic() >= next_drip:
                next_drip += interval
                for s in list(socks):
                    try:
                        s.send(b"x")
                    except OSError:
                        pass  # closed by the peer: the read side will tell
    finally:
        for s in socks:
            ended["timeout"] += 1
            s.close()
    return ended, times


def s_slowloris(stack: Stack) -> Row:
    header_timeout = 2.0
    row = Row("slowloris (100 slow connections)", expectation="the load 0 failed; every slow "
              f"connection answered 408 after --header-timeout {header_timeout:g} and closed")
    problems: list[str] = []
    backends = [stack.backend() for _ in range(2)]
    lb = stack.lb(*LB_BASE, "--header-timeout", str(header_timeout),
                  backends=[b.port for b in backends])
    load = stack.load(lb.port)
    need(load.wait_for(300, timeout=WAIT), "load did not start")
    ended, times = slow_clients(lb.port, 100, 0.5, header_timeout + 10)
    load.wait_for(load.count() + 300, timeout=WAIT)
    outcomes = load.finish()
    tally(row, outcomes)
    if row.failed:
        problems.append(f"{row.failed} of the load failed")
    row.sent += 100
    for k, v in ended.items():  # each is a failed request; lost unless answered at all
        key = k if k.isdigit() else "slow-" + k
        row.statuses[key] = row.statuses.get(key, 0) + v
        row.failed += v
        if not k.isdigit():
            row.lost += v
    if ended.get("408", 0) != 100:
        problems.append(f"slow connections ended {dict(ended)}, not 408×100")
    if lb.server.proc.poll() is not None:
        problems.append("the balancer exited")
    row.note = (f"slow connections cut {min(times):.1f}-{max(times):.1f}s after they began"
                if times else "")
    return judge(row, problems)


def flood(port: int, n: int, deadline: float) -> tuple[Counter, float | None]:
    """``n`` connections that each send one keep-alive GET and then stay open.
    Returns how each ended and when the last answer came (s after the start)."""
    began = time.monotonic()
    socks: dict[socket.socket, bytearray] = {}
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks[s] = bytearray()
    pending = set(socks)
    unsent = set(socks)
    ended: Counter = Counter()
    last: float | None = None
    request = b"GET /page.html?flood HTTP/1.1\r\nHost: flood\r\n\r\n"
    try:
        while pending and time.monotonic() - began < deadline:
            readable, writable, _ = select.select(list(pending), list(unsent), [], 0.1)
            for s in writable:
                try:
                    s.send(request)
                except OSError:
                    pass
                unsent.discard(s)
            for s in readable:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                buf = socks[s]
                buf.extend(data)
                end = buf.find(b"\r\n\r\n")
                m = (re.search(rb"content-length: *(\d+)", bytes(buf[:end]), re.I)
                     if end >= 0 else None)
                if m and len(buf) >= end + 4 + int(m.group(1)):
                    ended[buf[9:12].decode()] += 1
                    pending.discard(s)
                    last = time.monotonic() - began
                elif not data:
                    ended["cut" if buf else "closed"] += 1
                    pending.discard(s)
    finally:
        ended["timeout"] += len(pending)
        if not ended["timeout"]:
            del ended["timeout"]
        for s in socks:
            s.close()
    return ended, last


def s_flood(stack: Stack) -> Row:
    n, limit = 150, 30
    row = Row(f"connection flood ({n} > --max-connections {limit})", expectation="the "
              "established load 0 failed; the flood waits in the backlog and every flood "
              "request is answered 200 as slots free (recovery: flood start to the last "
              "answer)")
    problems: list[str] = []
    backends = [stack.backend() for _ in range(2)]
    lb = stack.lb(*LB_BASE, "--max-connections", str(limit), "--keepalive-timeout", "0.5",
                  backends=[b.port for b in backends])
    load = stack.load(lb.port, threads=4, pace=0.02)
    need(load.wait_for(300, timeout=WAIT), "load did not start")
    ended, last = flood(lb.port, n, WAIT)
    load.wait_for(load.count() + 200, timeout=WAIT)
    outcomes = load.finish()
    tally(row, outcomes)
    if row.failed:
        problems.append(f"{row.failed} of the load failed")
    row.sent += n
    for k, v in ended.items():
        key = k if k.isdigit() else "flood-" + k
        row.statuses[key] = row.statuses.get(key, 0) + v
        if k != "200":
            row.failed += v
            if not k.isdigit():
                row.lost += v
    if ended.get("200", 0) != n:
        problems.append(f"flood requests ended {dict(ended)}, not 200×{n}")
    row.recovery_s = round(last, 2) if last is not None else None
    if lb.server.proc.poll() is not None:
        problems.append("the balancer exited")
    return judge(row, problems)


SCENARIOS: dict[str, Callable[[Stack], Row]] = {
    "sigkill": s_sigkill,
    "sigstop": s_sigstop,
    "garbage": s_garbage,
    "truncate": s_truncate,
    "reset": s_reset,
    "latency": s_latency,
    "blackhole": s_blackhole,
    "all_down": s_all_down,
    "lb_sigterm": s_lb_sigterm,
    "lb_sighup": s_lb_sighup,
    "slowloris": s_slowloris,
    "flood": s_flood,
}


# -- output --------------------------------------------------------------------------

def table(rows: list[Row]) -> str:
    lines = ["| scenario | requests sent | failed | lost | status codes seen | recovery (s) "
             "| verdict |",
             "|---|---:|---:|---:|---|---:|---|"]
    for r in rows:
        recovery = f"{r.recovery_s:.2f}" if r.recovery_s is not None else "-"
        lines.append(f"| {r.scenario} | {r.sent} | {r.failed} | {r.lost} | {r.codes()} | "
                     f"{recovery} | {r.verdict} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/reliability",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the balancer's fault scenarios against real processes on 127.0.0.1 "
                    "(async backends, python -m lb, and tests/faultproxy.py in front of the "
                    "backends for misbehaving-backend faults), each under a bounded, paced, "
                    "threaded keep-alive load of about 1000-3000 requests, and print a "
                    "Markdown table. Exit code 1 if any verdict is not ok.",
        epilog="Scenarios: " + ", ".join(SCENARIOS) + ".\n\n"
               "Columns: requests sent (refused connects excluded: no request went out); "
               "failed = no complete 2xx response; lost = no complete response at all; "
               "status codes seen (cut = response cut short, closed = closed before any "
               "response byte, refused = connect refused, timeout = hang protection hit); "
               "recovery = seconds from the fault's end (backend restarted, SIGCONT, proxy "
               "back to pass) until the backend is back in rotation (up and taking "
               "requests), or until the first 200 (all_down), or from the flood's start "
               "until its last answer (flood); '-' where it does not apply; verdict = ok, "
               "or not ok with the reason, against the scenario's expectation (in the "
               "--json rows).\n\nEvery process is started by this script and ended by its "
               "PID, also on Ctrl-C. A default run takes about two minutes.")
    p.add_argument("--only", metavar="NAME[,NAME]", help="run only these scenarios")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    args = p.parse_args(argv)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown or not names:
            p.error(f"--only: unknown scenario {', '.join(unknown) or '(none)'}; choose from "
                    + ", ".join(SCENARIOS))
        args.names = names
    else:
        args.names = list(SCENARIOS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt()

    # Ctrl-C and SIGTERM both end the run through the same clean-up (also
    # when started with SIGINT ignored, as background jobs of a script are).
    signal.signal(signal.SIGINT, terminate)
    signal.signal(signal.SIGTERM, terminate)
    rows: list[Row] = []
    began = time.monotonic()
    try:
        for name in args.names:
            print(f"reliability: {name} ...", file=sys.stderr, flush=True)
            t = time.monotonic()
            with Stack() as stack:
                try:
                    row = SCENARIOS[name](stack)
                except Hang as exc:
                    row = Row(name, verdict=f"not ok: {exc}")
            row.name = name
            rows.append(row)
            print(f"reliability: {name}: {row.verdict} ({time.monotonic() - t:.1f}s)",
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("reliability: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    print(table(rows))
    notes = [f"- {r.scenario}: {r.note}" for r in rows if r.note]
    if notes:
        print("\n" + "\n".join(notes))
    print(f"\n{len(rows)} scenarios in {time.monotonic() - began:.0f}s; "
          f"{sum(not r.ok for r in rows)} not ok")
    if args.json:
        data = [{**asdict(r), "statuses_text": r.codes(), "ok": r.ok} for r in rows]
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
