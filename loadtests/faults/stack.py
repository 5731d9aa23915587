# loadtests/faults/stack.py -- what one fault scenario runs on, and the row it fills.
#
# Strategy: a ScenarioSetup is everything one scenario started -- a Supervisor
# (loadtests/supervisor.py: async backends and a balancer, real processes
# on free ports of 127.0.0.1, each ended by its PID), the fault proxies put
# in front of backends, the load clients, and a scratch directory -- and it
# ends all of it on the way out, also when the scenario fails or is
# interrupted: the loads are told to stop first, then the processes (newest
# first, SIGCONT before SIGTERM), then the proxies, then the loads are
# joined.  A Row holds a scenario's figures (requests sent, failed, lost,
# the status codes seen, the recovery time) and its verdict; ``tally`` adds
# load outcomes to it.  The helpers here poll the balancer's /stats with
# deadlines that only protect against hangs (Hang), never performance bounds.
from __future__ import annotations

import socket
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gservers
from loadtests import supervisor
from loadtests.faults import load as loadmod
from loadtests.faults.load import LoadClient, Outcome
from loadtests.faults.proxy import FaultProxy
from loadtests.supervisor import HOST, Balancer, Process, Supervisor

PAGE = (Path(gservers.__file__).resolve().parent / "site" / "page.html").read_bytes()
HANG = 15.0          #: hang protection for one request (never a performance bound)
WAIT = 20.0          #: hang protection for one phase of a scenario
#: Fast health checks (0.5 s apart, fall/rise 2) and a short ejection, so
#: that a backend comes back within a couple of seconds of its fault's end.
LB_BASE = ("--health-interval", "0.5", "--health-timeout", "0.5", "--eject-time", "2")
#: How the table names an outcome that is not a complete response.
LABELS = {loadmod.CLOSED_BEFORE_RESPONSE: "closed", loadmod.TRUNCATED: "cut",
          loadmod.TIMEOUT: "timeout", loadmod.MALFORMED: "malformed",
          loadmod.CONNECT_FAILED: "refused"}


class Hang(Exception):
    """A phase of a scenario did not end within its hang protection, or a
    precondition of the scenario failed (the verdict says which)."""


@dataclass
class Row:
    """One scenario's figures and verdict: a line of the table."""

    scenario: str            #: the table's title for it
    name: str = ""           #: the scenario's --only name
    sent: int = 0            #: requests that went out (refused connects excluded)
    failed: int = 0          #: no complete 2xx response
    lost: int = 0            #: no complete response at all
    statuses: dict[str, int] = field(default_factory=dict)
    recovery_s: float | None = None
    verdict: str = "ok"
    injected: str = ""
    expectation: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether the scenario behaved as specified."""
        return self.verdict == "ok"

    def codes(self) -> str:
        """The status codes seen, e.g. ``200×1200 504×3 cut×2`` (numbers first)."""
        keys = sorted(self.statuses, key=lambda k: (not k.isdigit(), k))
        return " ".join(f"{k}×{self.statuses[k]}" for k in keys) or "-"

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the status code (or outcome label) ``key``."""
        self.statuses[key] = self.statuses.get(key, 0) + n

    def figures(self) -> str:
        """The row in one line, for logs and failure messages."""
        recovery = "-" if self.recovery_s is None else f"{self.recovery_s:.2f}s"
        note = f"; {self.note}" if self.note else ""
        return (f"{self.scenario}: sent {self.sent}, failed {self.failed}, lost {self.lost}, "
                f"codes {self.codes()}, recovery {recovery}; {self.verdict}{note}")


def tally(row: Row, outcomes: list[Outcome]) -> None:
    """Add ``outcomes`` to the row's figures.  A refused connect sent no
    request: it shows as refused×N but is not counted as sent."""
    for o in outcomes:
        if o.kind == loadmod.CONNECT_FAILED:
            row.count("refused")
            continue
        row.sent += 1
        if o.kind == loadmod.COMPLETE:
            row.count(str(o.status))
            if not 200 <= o.status < 300:
                row.failed += 1
        else:
            row.count(LABELS[o.kind])
            row.failed += 1
            row.lost += 1


def verdict(problems: list[str]) -> str:
    """``ok``, or ``not ok: `` and every problem found."""
    return "ok" if not problems else "not ok: " + "; ".join(problems)


def allowed(row: Row, codes: set[str], problems: list[str]) -> None:
    """A problem for every status code (or label) seen outside ``codes``."""
    extra = set(row.statuses) - codes
    if extra:
        problems.append("unexpected " + ", ".join(f"{k}×{row.statuses[k]}" for k in sorted(extra)))


def short_bodies(outcomes: list[Outcome]) -> int:
    """200s whose body is not the whole page (a short body presented as complete)."""
    return sum(1 for o in outcomes if o.ok and o.body_len != len(PAGE))


def page_targets(targets: list[str]) -> Counter:
    """The load's requests among a proxy's fault targets (not /health)."""
    return Counter(t for t in targets if t.startswith("/page.html?"))


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """supervisor.wait_until with a scenario phase's hang protection."""
    return supervisor.wait_until(predicate, timeout)


def need(condition: bool, message: str) -> None:
    """A precondition or phase of the scenario: Hang unless it holds."""
    if not condition:
        raise Hang(message)


def name_of(port: int) -> str:
    """The balancer's name for a backend on 127.0.0.1:``port``."""
    return f"{HOST}:{port}"


def backends(lb: Balancer) -> dict[str, dict[str, Any]]:
    """/stats of every backend, by name."""
    return {b["name"]: b for b in lb.stats()["backends"]}


def head_length(port: int) -> int:
    """Bytes of a backend's response head to GET /page.html."""
    with socket.create_connection((HOST, port), timeout=HANG) as sock:
        sock.sendall(b"GET /page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            need(bool(chunk), f"no response head from port {port}")
            data += chunk
    return data.index(b"\r\n\r\n") + 4


class ScenarioSetup:
    """What one scenario started; everything ended on the way out."""

    def __init__(self) -> None:
        self.supervisor = Supervisor()
        self.proxies: list[FaultProxy] = []
        self.loads: list[LoadClient] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="gsv-faults-")
        self.dir = Path(self._tmp.name)  #: scratch space (configs, access logs)

    def __enter__(self) -> ScenarioSetup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backend(self, port: int = 0) -> Process:
        """An async backend, on a free port or on ``port`` (a restart)."""
        return self.supervisor.backend(port, "async")

    def balancer(self, *args: str, backends: list[int]) -> Balancer:
        """``python -m lb args`` over ``backends`` (ports), admin on a free port."""
        return self.supervisor.balancer(*args, backends=backends)

    def proxy(self, port: int, **options: Any) -> FaultProxy:
        """A started FaultProxy in front of 127.0.0.1:``port``."""
        proxy = FaultProxy((HOST, port), **options).start()
        self.proxies.append(proxy)
        return proxy

    def load(self, port: int, threads: int = 8, pace: float = 0.02, cap: int = 500,
             **options: Any) -> LoadClient:
        """A started, paced keep-alive load of at most ``threads * cap`` requests."""
        client = LoadClient(port, threads=threads, max_per_thread=cap, timeout=HANG,
                            pace=pace, **options)
        self.loads.append(client)
        return client.start()

    def close(self) -> None:
        """Stop the loads, the processes (by PID), the proxies; join the loads."""
        for client in self.loads:
            client.stop()
        try:
            self.supervisor.stop(timeout=10)
        finally:
            for proxy in self.proxies:
                proxy.stop()
            for client in self.loads:
                client.join(timeout=HANG + 5)
            self._tmp.cleanup()


def finish(load: LoadClient) -> list[Outcome]:
    """Stop ``load`` and return its outcomes; Hang if a thread hung."""
    try:
        return load.finish(timeout=HANG + 10)
    except TimeoutError as exc:
        raise Hang(str(exc)) from None
