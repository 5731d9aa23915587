# tests/system/test_lb_retries.py -- what the balancer replays when a backend dies before answering.
#
# Strategy: two recording origins behind a live balancer.  ``dying`` reads
# each whole request and closes without a byte (a backend that died after
# taking the request); ``good`` answers 200.  Smooth weighted round robin
# with weights 1000:1 makes ``dying`` the first choice of every request, so a
# replay can only go to ``good``; ejection is pushed out of reach so that
# ``dying`` stays a first choice for the whole test.  What every origin
# received is counted, so "never sent twice" and "retried elsewhere" are
# both read off the origins, not the balancer's own word.
from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.recording_backend import RecordingBackend, fixed, hang_up
from tests.support import Balancer, exchange, parse_responses, start_lb

#: Health checks once at start only; ejection never (it would take ``dying`` out).
QUIET = ("--health-interval", "3600", "--eject-failures", "1000000")


@dataclass
class Rig:
    dying: RecordingBackend
    good: RecordingBackend
    lb: Balancer

    def request(self, method: str, body: bytes = b"") -> int:
        """One request on a fresh connection; the status the client got
        (0: no response at all)."""
        head = (f"{method} /thing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        data = exchange(self.lb.port, head + body, timeout=20)
        replies = parse_responses(data, [method.encode()])
        return replies[0].status if replies else 0

    def received(self, method: str) -> tuple[int, int]:
        """(at dying, at good): requests of ``method`` each origin received."""
        def count(origin: RecordingBackend) -> int:
            return sum(1 for r in origin.requests if r.method == method.encode())
        return count(self.dying), count(self.good)


def make_rig(*args: str) -> Rig:
    dying, good = RecordingBackend(hang_up()), RecordingBackend(fixed(b"good"))
    lb = start_lb(*QUIET, "--policy", "weighted_round_robin",
                  "--backend", f"127.0.0.1:{dying.port}=1000",
                  "--backend", f"127.0.0.1:{good.port}=1", *args)
    dying.wait_health_check()
    good.wait_health_check()
    return Rig(dying, good, lb)


def end_rig(rig: Rig) -> None:
    code = rig.lb.server.stop()
    rig.dying.stop()
    rig.good.stop()
    assert "Traceback" not in rig.lb.server.log, rig.lb.server.log
    assert code == 0


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    made = make_rig(*getattr(request, "param", ()))
    yield made
    end_rig(made)


# -- 1. a POST that reached a backend is never sent twice; a GET is retried ----------

def test_post_that_reached_a_backend_is_not_replayed(rig: Rig) -> None:
    statuses = [rig.request("POST", b"payload-%d" % i) for i in range(5)]
    assert statuses == [502] * 5
    at_dying, at_good = rig.received("POST")
    assert at_dying == 5, "each POST reached the dying backend once, whole"
    assert all(r.body.startswith(b"payload-") for r in rig.dying.requests)
    assert at_good == 0, "a POST the dying backend took was sent again to another backend"


def test_get_that_reached_a_backend_is_retried_elsewhere(rig: Rig) -> None:
    statuses = [rig.request("GET") for _ in range(5)]
    assert statuses == [200] * 5
    assert rig.received("GET") == (5, 5)


# -- 2. --retries 0 and the retry budget -------------------------------------------

@pytest.mark.parametrize("rig", [("--retries", "0")], indirect=True)
def test_retries_0_refuses_replays(rig: Rig) -> None:
    statuses = [rig.request("GET") for _ in range(3)]
    assert statuses == [502] * 3
    assert rig.received("GET") == (3, 0)


#: Failing GETs in one burst, and the clients sending them.
BURST, CLIENTS = 120, 8
#: What RetryBudget allows on top of its ratio (lb/backends.py): tokens start
#: at, and never exceed, PER_SECOND + ratio * 10000, and refill PER_SECOND a second.
PER_SECOND = 10


def burst(rig: Rig) -> tuple[list[int], float]:
    """BURST failing GETs from CLIENTS at once: their statuses, and the seconds
    from before the first was sent to after the last was answered."""
    began = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(lambda _: rig.request("GET"), range(BURST)))
    return statuses, time.monotonic() - began


@pytest.mark.parametrize("rig", [("--retry-budget", "0")], indirect=True)
def test_retry_budget_0_refuses_every_replay(rig: Rig) -> None:
    """--retry-budget 0: no failure is replayed; each gets 502 and the other
    backend sees none of them."""
    statuses, _ = burst(rig)
    assert statuses == [502] * BURST
    assert rig.received("GET") == (BURST, 0)


@pytest.mark.parametrize("rig", [("--retry-budget", "0.001")], indirect=True)
def test_a_small_retry_budget_bounds_the_replays(rig: Rig) -> None:
    """--retry-budget is "retries allowed as a share of requests, plus 10/s",
    with up to 10,000 requests' share kept: at 0.001 that is 10 + 10 tokens,
    so in a burst of failures at most 20 + 10/s x (the burst's length) are
    replayed; the rest get 502 and reach no other backend.  (The bound grows
    with the measured time, so a slow machine only loosens it.)"""
    statuses, elapsed = burst(rig)
    assert set(statuses) <= {200, 502}, statuses
    replayed = statuses.count(200)
    allowed = 2 * PER_SECOND + PER_SECOND * elapsed + 0.001 * BURST + 1
    assert replayed <= allowed, f"{replayed} replays in {elapsed:.2f}s with --retry-budget 0"
    assert statuses.count(502) >= BURST - allowed
    at_dying, at_good = rig.received("GET")
    assert at_dying == BURST
    assert at_good == replayed, "a refused replay still reached the other backend"


def test_defaults_replay_the_same_burst(rig: Rig) -> None:
    """The same burst with the default budget (0.2, up to 2010 tokens): every
    failure is replayed, so the bound above is the budget's doing."""
    statuses, _ = burst(rig)
    assert statuses == [200] * BURST
    assert rig.received("GET") == (BURST, BURST)
