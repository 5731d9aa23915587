# tests/system/test_netns.py -- backends on separate hosts, and one host's link cut.
#
# Strategy: as root, each backend gets a host of its own: a network
# namespace (named per test run, ``gsv-<pid>-a``...) joined to the root
# namespace by a veth pair, with the two ends in a private /30 of 10.x.y.z
# addresses chosen per run (the root end .1, the host end .2; these
# addresses exist only on the interfaces this test creates).  A real async
# backend runs inside each namespace (``ip netns exec NAME python -m
# gservers.backend --host 10.x.y.2 8080``), the balancer in the root
# namespace over them.  Under a bounded threaded keep-alive load, one host's
# link is cut -- from the host's side (its interface down: the balancer's
# packets vanish, connects time out) or from ours (the root end down: its
# route goes, and an "unreachable" route for the test's /24 -- added so
# that no packet for these addresses ever follows the default route off the
# machine -- makes connects fail at once) -- and later restored; the balancer must
# take the host out and bring it back by itself, without a restart.
# Everything created (processes by PID, namespaces, veths) is removed in the
# fixture's finally, whatever happened.  Without root or ``ip netns`` the
# test is skipped with the reason.
#
# What may fail, precisely: a request the balancer had already written onto
# an established keep-alive connection to the cut host when the link went
# (or that it writes onto such a pooled connection before it knows better)
# is *in flight on that link*: the bytes vanish, nothing comes back, and
# the balancer can only answer 504 after --response-timeout (a timeout is
# never retried: the backend may have processed the request).  Such
# requests exist only until the host is ejected (--eject-failures 3
# consecutive failures) or taken down by the health checks; at most
# ``eject_failures - 1 + load threads`` of them (the failures before the
# last one, plus every thread's request in flight at the moment of the
# ejection).  Every one must be a complete 504 attributed to the cut host in
# the access log.  A new connection to the cut host fails to connect and is
# retried on the other host, so it never fails.  Every other GET: 200.
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loadtests.faults import load as loadclient
from loadtests.faults.load import LoadClient
from loadtests.supervisor import python, spawn, wait_listening
from tests.support import ADMIN_RE, ROOT, Balancer, Server, start, wait_until

pytestmark = pytest.mark.netns

PAGE = (ROOT / "gservers" / "site" / "page.html").read_bytes()
HANG = 15.0
PORT = 8080                 #: each host has its own port space
THREADS = 4
EJECT_FAILURES = 3
LB_ARGS = ["--connect-timeout", "0.2", "--health-interval", "0.5", "--health-timeout", "0.3",
           "--response-timeout", "1", "--eject-failures", str(EJECT_FAILURES),
           "--eject-time", "30", "--retries", "2"]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Host:
    """One network namespace with a backend in it."""

    ns: str
    veth: str           #: the end in the root namespace
    peer: str           #: the end inside the namespace
    local: str          #: address of the root end
    address: str        #: address of the host end (the backend listens there)
    server: Server | None = None

    @property
    def name(self) -> str:
        return f"{self.address}:{PORT}"

    def link(self, up: bool, side: str) -> None:
        """Bring the link down/up from the host's side or from ours."""
        state = "up" if up else "down"
        if side == "host":
            ip("netns", "exec", self.ns, "ip", "link", "set", "dev", self.peer, state)
        else:
            ip("link", "set", "dev", self.veth, state)


@dataclass
class Hosts:
    hosts: list[Host] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    veths: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)


def free_subnet(pid: int) -> tuple[int, int]:
    """Second and third octets of a 10.x.y.0/24 no interface here uses."""
    for attempt in range(64):
        x, y = 200 + (pid + attempt) % 50, (pid // 50 + attempt) % 256
        subnet = f"10.{x}.{y}.0/24"
        if not ip("-4", "addr", "show", "to", subnet).stdout.strip() and \
                not ip("-4", "route", "show", "to", "root", subnet).stdout.strip():
            return x, y
    raise RuntimeError("no free 10.x.y.0/24 found")


def start_in(host: Host) -> Server:
    """``python -m gservers.backend`` inside ``host``'s namespace; wait for it."""
    server = spawn(f"backend in {host.ns}", ["ip", "netns", "exec", host.ns,
                                            *python("gservers.backend", "--model", "async",
                                                    "--host", host.address, str(PORT))],
                   cwd=str(ROOT))
    return wait_listening(server, 20)


@pytest.fixture
def hosts() -> Iterator[Callable[[int], list[Host]]]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed: apt-get install -y iproute2")
    made = Hosts()
    pid = os.getpid()

    def make(n: int) -> list[Host]:
        x, y = free_subnet(pid)
        # With our end of a link down its connected route is gone; this
        # catch-all keeps packets for the test's hosts from ever following
        # the default route off the machine ("no route to host" instead).
        subnet = f"10.{x}.{y}.0/24"
        ip("route", "add", "unreachable", subnet, "metric", "4000")
        made.routes.append(subnet)
        for i in range(n):
            letter = "abcdefgh"[i]
            host = Host(ns=f"gsv-{pid}-{letter}", veth=f"gsv{pid}{letter}",
                        peer=f"gsv{pid}{letter}p", local=f"10.{x}.{y}.{4 * i + 1}",
                        address=f"10.{x}.{y}.{4 * i + 2}")
            added = ip("netns", "add", host.ns, check=False)
            if added.returncode != 0:
                pytest.skip(f"ip netns add is not available here: {added.stderr.strip()}")
            made.namespaces.append(host.ns)
            ip("link", "add", host.veth, "type", "veth", "peer", "name", host.peer)
            made.veths.append(host.veth)
            ip("link", "set", host.peer, "netns", host.ns)
            ip("addr", "add", f"{host.local}/30", "dev", host.veth)
            ip("link", "set", host.veth, "up")
            ip("netns", "exec", host.ns, "ip", "addr", "add", f"{host.address}/30",
               "dev", host.peer)
            ip("netns", "exec", host.ns, "ip", "link", "set", "dev", host.peer, "up")
            ip("netns", "exec", host.ns, "ip", "link", "set", "dev", "lo", "up")
            host.server = start_in(host)
            made.servers.append(host.server)
            made.hosts.append(host)
        return made.hosts

    try:
        yield make
    finally:
        for server in made.servers:
            if server.proc.poll() is None:
                server.stop(timeout=10)
        for ns in made.namespaces:
            ip("netns", "del", ns, check=False)
        for veth in made.veths:  # gone with its peer's namespace, normally
            if ip("link", "show", veth, check=False).returncode == 0:
                ip("link", "del", veth, check=False)
        for subnet in made.routes:
            ip("route", "del", "unreachable", subnet, "metric", "4000", check=False)


def start_lb_over(hosts: list[Host], *args: str) -> Balancer:
    argv = ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", *LB_ARGS, *args]
    for host in hosts:
        argv += ["--backend", host.name]
    server = start("lb", *argv)
    deadline = time.monotonic() + 10
    while (m := ADMIN_RE.search(server.log)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if m is None:
        server.stop()
        raise RuntimeError(f"no admin port:\n{server.log}")
    return Balancer(server, int(m.group(1)))




ACCESS_RE = re.compile(r"^\S+ \S+ GET (\S+) HTTP/1\.[01] (\d+) \d+ (\S+) ")


@pytest.mark.timeout(150)
@pytest.mark.parametrize("side", ["host", "local"])
def test_cut_link_ejects_the_host_and_it_comes_back(hosts: Callable[[int], list[Host]],
                                                    tmp_path: Path, side: str) -> None:
    a, b = hosts(2)
    log_path = tmp_path / "access.log"
    lb = start_lb_over([a, b], "--access-log", str(log_path))
    try:
        state = lambda h: {s["name"]: s for s in lb.stats()["backends"]}[h.name]  # noqa: E731
        assert wait_until(lambda: state(a)["state"] == state(b)["state"] == "up")
        # Stopped at the end; the cap only bounds it should a phase never end.
        client = LoadClient(lb.port, threads=THREADS, max_per_thread=20000, timeout=HANG,
                            pace=0.005).start()
        try:
            assert client.wait_for(300, timeout=60)
            assert state(b)["requests"] > 0
            b.link(False, side)
            cut_at = time.monotonic()
            assert wait_until(lambda: state(b)["state"] != "up", timeout=30), state(b)
            out_after = time.monotonic() - cut_at
            # The health checks take it down too (not only the ejection).
            assert wait_until(lambda: state(b)["state"] == "down", timeout=30), state(b)
            assert client.wait_for(client.count() + 300, timeout=60)
            before = state(b)["requests"]
            b.link(True, side)
            restored_at = time.monotonic()
            assert wait_until(lambda: (s := state(b))["state"] == "up"
                              and s["requests"] > before, timeout=30), state(b)
            back_after = time.monotonic() - restored_at
            assert client.wait_for(client.count() + 200, timeout=60)
        finally:
            client.stop()
            assert client.join(timeout=60), "a client thread hung"
        stats = lb.stats()
        assert lb.server.proc.poll() is None and stats["pid"] == lb.server.pid  # no restart
    finally:
        lb.server.stop(timeout=15)

    kinds = client.summary()
    failed = [o for o in client.outcomes if not o.ok]
    logged = {}
    for line in log_path.read_text().splitlines():
        match = ACCESS_RE.match(line)
        if match:
            logged[match.group(1)] = (int(match.group(2)), match.group(3))
    per_backend = {s["name"]: (s["state"], s["requests"], s["failures"], s["ejections"])
                   for s in stats["backends"]}
    print(f"\n[netns cut {side} side] requests sent={len(client.outcomes)} "
          f"failed={len(failed)} outcomes={dict(kinds)} out of rotation after "
          f"{out_after:.2f}s, back {back_after:.2f}s after the link; retries "
          f"{stats['totals']['retries']}; backends {per_backend}")
    # Only 200s and the in-flight 504s defined above; never a cut or a hang.
    assert set(kinds) <= {f"{loadclient.COMPLETE}:200", f"{loadclient.COMPLETE}:504"}, \
        (kinds, failed[:5])
    assert all(o.body_len == len(PAGE) for o in client.outcomes if o.ok)
    bound = EJECT_FAILURES - 1 + THREADS
    assert len(failed) <= bound, (len(failed), bound, failed)
    for o in failed:
        assert logged.get(o.target) == (504, b.name), (o, logged.get(o.target))
    # It came back, and is used again.
    final = {s["name"]: s for s in stats["backends"]}
    assert final[b.name]["state"] == "up" and final[a.name]["state"] == "up"
    assert final[b.name]["requests"] > before
