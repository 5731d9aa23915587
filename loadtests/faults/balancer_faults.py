# loadtests/faults/balancer_faults.py -- the checks of the scenarios aimed at the balancer.
#
# Strategy: here the fault is done to the balancer itself, under a paced
# load through it: a signal to its PID (SIGTERM: the graceful drain, whose
# every unanswered request must be one it never processed, matched against
# its access log; SIGHUP: a reload that swaps the whole backend set), or
# clients that abuse it -- slowloris connections (a request head begun,
# then one byte every half second, never finished) and a flood of idle
# keep-alive connections past --max-connections -- driven by one select()
# loop each, on non-blocking sockets, bounded in connections and time.
# Each check function drives its scenario on a ScenarioSetup, fills the Row and
# returns the problems against the expectation stated in scenarios.py.
from __future__ import annotations

import os
import re
import select
import signal
import socket
import time
from collections import Counter
from pathlib import Path

from loadtests.faults import load as loadmod
from loadtests.faults.stack import (
    HANG,
    LB_BASE,
    WAIT,
    Row,
    ScenarioSetup,
    allowed,
    backends,
    finish,
    name_of,
    need,
    short_bodies,
    tally,
    wait_until,
)
from loadtests.supervisor import HOST

ACCESS_RE = re.compile(r"^\S+ \S+ GET (\S+) HTTP/1\.[01] (\d+) \d+ (\S+) ")
HEADER_TIMEOUT = 2.0      #: --header-timeout of the slowloris scenario
SLOW_CONNECTIONS = 100    #: slowloris connections
FLOOD, MAX_CONNECTIONS = 150, 30  #: flood connections, and the balancer's limit
FLOOD_REQUEST = b"GET /page.html?flood HTTP/1.1\r\nHost: flood\r\n\r\n"


# -- signals to the balancer --------------------------------------------------------------

def access_log(path: Path, problems: list[str]) -> dict[str, int]:
    """target -> status from the balancer's access log (a problem per line
    that is not an access-log line)."""
    logged: dict[str, int] = {}
    for line in path.read_text().splitlines():
        match = ACCESS_RE.match(line)
        if match:
            logged[match.group(1)] = int(match.group(2))
        else:
            problems.append(f"not an access-log line: {line!r}")
    return logged


def lb_sigterm(stack: ScenarioSetup, row: Row) -> list[str]:
    """SIGTERM the balancer under load (--grace 10)."""
    procs = [stack.backend() for _ in range(2)]
    log_path = stack.dir / "access.log"
    lb = stack.balancer(*LB_BASE, "--access-log", str(log_path), "--grace", "10",
                        backends=[p.port for p in procs])
    load = stack.load(lb.port, stop_on_connect_failure=True)
    need(load.wait_for(1000, timeout=WAIT), "load did not start")
    lb.server.signal(signal.SIGTERM)
    try:
        code: int | None = lb.server.popen.wait(WAIT)
    except Exception:
        code = None
    need(load.join(timeout=WAIT), "a load thread hung after SIGTERM")
    outcomes = finish(load)
    tally(row, outcomes)
    problems: list[str] = []
    if code != 0:
        problems.append(f"exit code {code}")
    if not wait_until(lambda: "stopped" in lb.server.log, 5):
        problems.append(f"no 'stopped' in its log ({lb.server.last_line()})")
    allowed(row, {"200", "closed", "refused"}, problems)
    if row.statuses.get("200", 0) < 1000:
        problems.append(f"only {row.statuses.get('200', 0)} answered 200 (want >= 1000)")
    if short_bodies(outcomes):
        problems.append(f"{short_bodies(outcomes)} 200s with a short body")
    if row.statuses.get("refused", 0) != load.threads:
        problems.append(f"{row.statuses.get('refused', 0)} load threads ended on a refused "
                        f"connect, not all {load.threads}")
    logged = access_log(log_path, problems)
    unanswered = [o for o in outcomes if o.kind == loadmod.CLOSED_BEFORE_RESPONSE]
    processed = [o for o in unanswered if o.target in logged]
    if processed:
        problems.append(f"{len(processed)} processed but unanswered")
    if {o.target for o in outcomes if o.ok} != set(logged):
        problems.append("access log and clients disagree")
    if any(status != 200 for status in logged.values()):
        problems.append(f"logged statuses {dict(Counter(logged.values()))}")
    row.note = (f"{len(unanswered)} unanswered requests were never processed (safe to "
                f"resend); {row.statuses.get('refused', 0)} connects refused once closed")
    return problems


def write_backends(config: Path, ports: list[int]) -> None:
    """Replace the config file atomically, as an operator's deploy would."""
    tmp = config.with_suffix(".tmp")
    tmp.write_text("backend = [" + ", ".join(f'"{name_of(p)}"' for p in ports) + "]\n")
    os.replace(tmp, config)


def lb_sighup(stack: ScenarioSetup, row: Row) -> list[str]:
    """SIGHUP the balancer under load after its config swapped A, B for C, D."""
    a, b, c, d = (stack.backend() for _ in range(4))
    config = stack.dir / "lb.toml"
    write_backends(config, [a.port, b.port])
    lb = stack.balancer(*LB_BASE, "--config", str(config), backends=[])
    need(set(backends(lb)) == {name_of(a.port), name_of(b.port)},
         f"started over {sorted(backends(lb))}, not the config's two")
    load = stack.load(lb.port)
    problems: list[str] = []
    need(load.wait_for(600, timeout=WAIT), "load did not start")
    write_backends(config, [c.port, d.port])
    lb.server.signal(signal.SIGHUP)
    if not wait_until(lambda: "SIGHUP: reloaded" in lb.server.log):
        problems.append("no reload")
    load.wait_for(load.count() + 600, timeout=WAIT)
    outcomes = finish(load)
    tally(row, outcomes)
    allowed(row, {"200"}, problems)
    if short_bodies(outcomes):
        problems.append(f"{short_bodies(outcomes)} 200s with a short body")
    new = {name_of(c.port), name_of(d.port)}
    before = backends(lb)
    n = 40  # sequential GETs after the load: each must land on C or D
    answers = Counter(r.status if r else None for r in (loadmod.fetch(lb.port) for _ in range(n)))
    after = backends(lb)
    if answers != {200: n}:
        problems.append(f"GETs after the reload answered {dict(answers)}")
    if set(before) != new or set(after) != new:
        problems.append(f"new backend set not in use: {sorted(after)}")
    elif sum(s["requests"] for s in after.values()) != sum(
            s["requests"] for s in before.values()) + n:
        problems.append(f"{n} GETs not all counted on the new backends")
    if not all(s["requests"] > 0 and s["state"] == "up" for s in after.values()):
        problems.append(f"a new backend idle or not up: {after}")
    if not lb.server.alive():
        problems.append("the balancer exited")
    if row.failed:
        problems.append(f"{row.failed} failed")
    return problems


# -- abusive clients ----------------------------------------------------------------------

def slow_clients(port: int, n: int, interval: float,
                 deadline: float) -> tuple[Counter, list[float]]:
    """``n`` slowloris connections: a request head begun, then one more byte
    every ``interval`` s, never finished.  Returns how each ended (status or
    "closed"/"timeout") and when (seconds after the start)."""
    began = time.monotonic()
    socks: dict[socket.socket, bytearray] = {}
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=HANG)
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
                data = recv_quietly(s)
                if data:
                    socks[s].extend(data)
                    continue
                m = re.match(rb"HTTP/1\.[01] (\d{3})", bytes(socks.pop(s)))
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


def recv_quietly(sock: socket.socket) -> bytes:
    """What is there to read; b"" at EOF or on a reset."""
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def add_ended(row: Row, ended: Counter, prefix: str, ok: str = "") -> None:
    """Count abusive connections into the row: each one a request sent,
    failed unless its status is ``ok``, lost unless it was answered at all."""
    row.sent += sum(ended.values())
    for k, v in ended.items():
        row.count(k if k.isdigit() else f"{prefix}-{k}", v)
        if k != ok:
            row.failed += v
            if not k.isdigit():
                row.lost += v


def slowloris(stack: ScenarioSetup, row: Row) -> list[str]:
    """SLOW_CONNECTIONS slowloris connections while a load runs."""
    procs = [stack.backend() for _ in range(2)]
    lb = stack.balancer(*LB_BASE, "--header-timeout", f"{HEADER_TIMEOUT:g}",
                        backends=[p.port for p in procs])
    load = stack.load(lb.port)
    need(load.wait_for(300, timeout=WAIT), "load did not start")
    ended, times = slow_clients(lb.port, SLOW_CONNECTIONS, 0.5, HEADER_TIMEOUT + 10)
    load.wait_for(load.count() + 300, timeout=WAIT)
    tally(row, finish(load))
    problems: list[str] = []
    if row.failed:
        problems.append(f"{row.failed} of the load failed")
    add_ended(row, ended, "slow")
    if ended.get("408", 0) != SLOW_CONNECTIONS:
        problems.append(f"slow connections ended {dict(ended)}, not 408×{SLOW_CONNECTIONS}")
    if not lb.server.alive():
        problems.append("the balancer exited")
    row.note = (f"slow connections cut {min(times):.1f}-{max(times):.1f}s after they began"
                if times else "")
    return problems


def flood_clients(port: int, n: int, deadline: float) -> tuple[Counter, float | None]:
    """``n`` connections that each send one keep-alive GET and then stay open.
    Returns how each ended and when the last answer came (s after the start)."""
    began = time.monotonic()
    socks: dict[socket.socket, bytearray] = {}
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((HOST, port))  # in progress: select() says when it is writable
        socks[s] = bytearray()
    pending, unsent = set(socks), set(socks)
    ended: Counter = Counter()
    last: float | None = None
    try:
        while pending and time.monotonic() - began < deadline:
            readable, writable, _ = select.select(list(pending), list(unsent), [], 0.1)
            for s in writable:
                try:
                    s.send(FLOOD_REQUEST)
                except OSError:
                    pass  # refused or reset: the read side will tell
                unsent.discard(s)
            for s in readable:
                how = answered(socks[s], recv_quietly(s))
                if how is not None:
                    ended[how] += 1
                    pending.discard(s)
                    if how.isdigit():
                        last = time.monotonic() - began
    finally:
        if pending:
            ended["timeout"] += len(pending)
        for s in socks:
            s.close()
    return ended, last


def answered(buf: bytearray, data: bytes) -> str | None:
    """Add ``data`` to ``buf``: the status once a whole response is there,
    "cut" or "closed" at EOF, else None (more to come)."""
    buf.extend(data)
    end = buf.find(b"\r\n\r\n")
    m = re.search(rb"content-length: *(\d+)", bytes(buf[:end]), re.I) if end >= 0 else None
    if m and len(buf) >= end + 4 + int(m.group(1)):
        return buf[9:12].decode()
    if not data:
        return "cut" if buf else "closed"
    return None


def flood(stack: ScenarioSetup, row: Row) -> list[str]:
    """FLOOD idle keep-alive connections past --max-connections MAX_CONNECTIONS."""
    procs = [stack.backend() for _ in range(2)]
    lb = stack.balancer(*LB_BASE, "--max-connections", str(MAX_CONNECTIONS),
                        "--keepalive-timeout", "0.5", backends=[p.port for p in procs])
    load = stack.load(lb.port, threads=4, pace=0.02)
    need(load.wait_for(300, timeout=WAIT), "load did not start")
    ended, last = flood_clients(lb.port, FLOOD, WAIT)
    load.wait_for(load.count() + 200, timeout=WAIT)
    tally(row, finish(load))
    problems: list[str] = []
    if row.failed:
        problems.append(f"{row.failed} of the load failed")
    add_ended(row, ended, "flood", ok="200")
    if ended.get("200", 0) != FLOOD:
        problems.append(f"flood requests ended {dict(ended)}, not 200×{FLOOD}")
    row.recovery_s = round(last, 2) if last is not None else None
    if not lb.server.alive():
        problems.append("the balancer exited")
    return problems
