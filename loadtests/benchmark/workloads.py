# loadtests/benchmark/workloads.py -- what load each run sends, and the order of the runs.
#
# Strategy: a workload is a small frozen value -- the tool, keep-alive or
# not, the concurrency, and the phase of the round it belongs to -- whose
# name is only what the report prints: runs, medians and targets are keyed
# by the value itself, never by a name parsed back.  A workload also knows
# the exact request its tool sends, so the size every run is judged against
# is measured with that request.  The plan is a pure function of the
# options: every run of every round, interleaved across the balancers with
# their order rotated each round, so a slow drift of the shared machine falls
# on every balancer alike.
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from loadtests.tools import ab, wrk

#: Concurrency of the main balancer workloads (ab and wrk) and of the direct reference.
CONCURRENCY = 100
#: The load generators a workload may use.
TOOLS = ("ab", "wrk")
#: The parts of a round: the balancers' runs, the seed sweep, the direct reference,
#: the large-file row, the HTTPS row.
PHASES = ("main", "seed", "direct", "large", "https")
#: The balancers compared, in report order.
BALANCERS = ("gservers", "haproxy", "nginx")
#: Reference rows (no balancer): one async backend, nginx's ``return 200``
#: and one thread-model backend.
REFERENCES = ("async backend", "nginx return-200", "thread backend")
#: The large-file row: one async backend and nginx serving the same 10 MiB
#: file from disk (gservers with sendfile, nginx with ``sendfile on``).
LARGE_TARGETS = ("large-file backend", "large-file nginx")
LARGE_PATH = "/large.bin"
LARGE_CONCURRENCY = 10
#: The HTTPS row: each balancer again, terminating TLS with one certificate;
#: the runs are reported under the balancer's own name (as target), the
#: workload saying https.
HTTPS_TARGETS = {"gservers https": "gservers", "haproxy https": "haproxy",
                 "nginx https": "nginx"}
_PREFIX = {"main": "", "seed": "seed ", "direct": "direct ", "large": "large-file ",
           "https": "https "}


@dataclass(frozen=True)
class Workload:
    """One kind of load sent to a target."""

    tool: str                      #: "ab" or "wrk"
    keepalive: bool
    concurrency: int = CONCURRENCY
    phase: str = "main"            #: one of PHASES

    def __post_init__(self) -> None:
        if self.tool not in TOOLS:
            raise ValueError(f"tool {self.tool!r} is not one of {', '.join(TOOLS)}")
        if self.phase not in PHASES:
            raise ValueError(f"phase {self.phase!r} is not one of {', '.join(PHASES)}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency {self.concurrency} is below 1")
        if self.tool == "wrk" and not self.keepalive:
            raise ValueError("wrk always keeps its connections alive")
        if self.phase == "seed" and (self.tool != "ab" or self.keepalive):
            raise ValueError("the seed sweep is ab without keep-alive")
        if self.phase == "direct" and not self.keepalive:
            raise ValueError("the direct reference keeps its connections alive")
        if self.phase == "large" and (self.tool != "ab" or self.keepalive):
            raise ValueError("the large-file row is ab without keep-alive")
        if self.phase == "https" and self.tool != "ab":
            raise ValueError("the HTTPS row is ab")

    @property
    def name(self) -> str:
        """What the report calls it, e.g. ``ab -k c=100`` or ``seed ab c=10``."""
        keep = " -k" if self.keepalive else ""
        return f"{_PREFIX[self.phase]}{self.tool}{keep} c={self.concurrency}"

    def __str__(self) -> str:
        return self.name

    def request(self, host: str, port: int, path: str) -> bytes:
        """The request this workload's tool sends to ``host:port`` for ``path``."""
        if self.tool == "wrk":
            return wrk.request(host, port, path)
        return ab.request(host, port, path, self.keepalive)


def ab_run(keepalive: bool = False, concurrency: int = CONCURRENCY) -> Workload:
    """The big ab workload (``ab c=100`` / ``ab -k c=100``)."""
    return Workload("ab", keepalive, concurrency)


def wrk_run(concurrency: int = CONCURRENCY) -> Workload:
    """The wrk keep-alive workload (``wrk -k c=100``)."""
    return Workload("wrk", True, concurrency)


def seed_level(concurrency: int) -> Workload:
    """One level of the seed sweep (``seed ab c=10``: ab -n 1000, no keep-alive)."""
    return Workload("ab", False, concurrency, "seed")


def direct(tool: str, concurrency: int = CONCURRENCY) -> Workload:
    """The backend-vs-nginx reference (``direct wrk -k c=100``; ab -k without wrk)."""
    return Workload(tool, True, concurrency, "direct")


def large_file() -> Workload:
    """The large-file row (``large-file ab c=10``: ab -c 10 of LARGE_PATH, no -k)."""
    return Workload("ab", False, LARGE_CONCURRENCY, "large")


def https_run(keepalive: bool, concurrency: int = CONCURRENCY) -> Workload:
    """The HTTPS row (``https ab c=100`` / ``https ab -k c=100``)."""
    return Workload("ab", keepalive, concurrency, "https")


@dataclass(frozen=True)
class Step:
    """One run of the plan: a workload against a target in a round."""

    round: int
    target: str
    workload: Workload
    requests: int = 0              #: ab's -n; 0 for wrk, which runs for a duration


def _rotated(names: Sequence[str], round_: int) -> list[str]:
    shift = (round_ - 1) % max(1, len(names))
    return list(names[shift:]) + list(names[:shift])


def _round(round_: int, balancers: list[str], refs: list[str], levels: Sequence[int],
           requests: int, seed_requests: int, with_wrk: bool) -> list[Step]:
    order = _rotated(balancers, round_)
    steps = [Step(round_, b, ab_run(keepalive), requests)
             for keepalive in (False, True) for b in order]
    if with_wrk:
        steps += [Step(round_, b, wrk_run()) for b in order]
    steps += [Step(round_, t, seed_level(level), seed_requests)
              for level in levels for t in order + ["thread backend"]]
    reference = direct("wrk" if with_wrk else "ab")
    for t in (refs if round_ % 2 else list(reversed(refs))):
        steps.append(Step(round_, t, reference, 0 if with_wrk else requests))
    return steps


def large_file_steps(targets: Collection[str], round_: int, requests: int) -> list[Step]:
    """The large-file row of a round: ab -n ``requests`` -c 10 on each of
    LARGE_TARGETS started, their order rotated each round (none when 0)."""
    if not requests:
        return []
    started = [t for t in LARGE_TARGETS if t in targets]
    return [Step(round_, t, large_file(), requests) for t in _rotated(started, round_)]


def https_steps(targets: Collection[str], round_: int, requests: int) -> list[Step]:
    """The HTTPS row of a round: ab -n ``requests`` -c 100 without and with
    -k on each of HTTPS_TARGETS started, their order rotated each round."""
    if not requests:
        return []
    started = [t for t in HTTPS_TARGETS if t in targets]
    return [Step(round_, t, https_run(keepalive), requests)
            for keepalive in (False, True) for t in _rotated(started, round_)]


def plan(targets: Collection[str], rounds: int, levels: Sequence[int], requests: int,
         seed_requests: int, with_wrk: bool, large_requests: int = 0,
         https_requests: int = 0) -> list[Step]:
    """Every run of every round over the ``targets`` started (names from
    BALANCERS and REFERENCES): ab without and with -k and wrk (when
    ``with_wrk``) on each balancer, the seed sweep on each balancer and the
    thread backend, then the direct reference (wrk, else ab -k) on the async
    backend and the nginx return-200 server; last, the large-file row
    (``large_requests`` per run, when its targets were started) and the
    HTTPS row (``https_requests`` per run)."""
    balancers = [b for b in BALANCERS if b in targets]
    refs = [t for t in ("async backend", "nginx return-200") if t in targets]
    steps: list[Step] = []
    for round_ in range(1, rounds + 1):
        steps += _round(round_, balancers, refs, levels, requests, seed_requests, with_wrk)
        steps += large_file_steps(targets, round_, large_requests)
        steps += https_steps(targets, round_, https_requests)
    return steps
