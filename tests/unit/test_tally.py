# tests/unit/test_tally.py -- the workers' shared-memory counters, and their sum.
#
# Strategy: a real Tally in a temporary directory, written through its
# blocks and read back by read_all as another worker would read it.  The
# other worker is a real process (``python -c``) that writes its counts,
# says so on stdout and waits for its stdin to close, so a test holds it
# alive, dead and reaped, or dead and not yet reaped.  Histogram buckets and
# quantiles are checked against values worked out by hand.  lb.stats.snapshot
# then combines this process's file with the other one's, over a Backends
# whose addresses nothing listens on (nothing connects until a request is
# proxied).
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import lb
from lb.backends import Backends
from lb.config import Address, LBConfig
from lb.stats import snapshot
from lb.tally import (
    BOUNDS,
    BackendBlock,
    Tally,
    WorkerBlock,
    quantiles,
    read_all,
    run_directory,
)

ROOT = Path(lb.__file__).resolve().parent.parent  # the tree whose lb is under test
A, B = "127.0.0.1:65001", "127.0.0.1:65002"

# The other worker: set the fields a JSON spec names, observe latencies, then wait.
OTHER = """
import json, sys
from lb.tally import Tally
spec = json.loads(sys.argv[2])
tally = Tally(sys.argv[1], 1)
for key, value in spec.get("worker", {}).items():
    setattr(tally.worker, key, value)
for name, fields in spec.get("backends", {}).items():
    block = tally.backend(name)
    for seconds in fields.pop("observe", []):
        block.observe(seconds)
    for key, value in fields.items():
        setattr(block, key, value)
for status in spec.get("statuses", []):
    tally.worker.count(status)
print(tally.path, flush=True)
sys.stdin.readline()
"""


@contextmanager
def other_worker(directory: Path, spec: dict[str, Any]) -> Iterator[subprocess.Popen[str]]:
    """A second worker process, alive until the block ends; reaped after it."""
    proc = subprocess.Popen([sys.executable, "-c", OTHER, str(directory), json.dumps(spec)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip(), "the other worker did not start"
        yield proc
    finally:
        proc.stdin.close()  # its cue to exit
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == 0


def test_counters_written_are_read_back(tmp_path: Path) -> None:
    tally = Tally(str(tmp_path), 3)
    tally.worker.requests, tally.worker.client_connections = 7, 2
    tally.backend(A).requests = 5
    tally.backend(B).failures = 1
    [mine] = read_all(str(tmp_path))
    assert (mine.worker.pid, mine.worker.index, mine.alive) == (os.getpid(), 3, True)
    assert (mine.worker.requests, mine.worker.client_connections) == (7, 2)
    assert sorted(mine.backends) == [A, B]
    assert (mine.backends[A].requests, mine.backends[B].failures) == (5, 1)


def test_a_name_keeps_its_block(tmp_path: Path) -> None:
    tally = Tally(str(tmp_path), 0)
    first = tally.backend(A)
    assert tally.backend(A) is first and tally.backend(B) is not first
    first.requests = 9
    assert tally.backend(B).requests == 0
    assert (first.name, tally.backend(B).name) == (A.encode(), B.encode())
    assert tally.worker.nbackends == 2


def test_a_dead_workers_file_keeps_its_counts(tmp_path: Path) -> None:
    Tally(str(tmp_path), 0).worker.requests = 1
    spec = {"worker": {"requests": 40}, "backends": {A: {"requests": 30, "failures": 2}},
            "statuses": [200, 200, 503]}
    with other_worker(tmp_path, spec) as proc:
        assert [f.alive for f in read_all(str(tmp_path))] == [True, True]
    mine, other = read_all(str(tmp_path))  # oldest first
    assert (mine.worker.pid, mine.alive) == (os.getpid(), True)
    assert (other.worker.pid, other.alive, other.worker.index) == (proc.pid, False, 1)
    assert other.worker.requests == 40
    assert (other.backends[A].requests, other.backends[A].failures) == (30, 2)
    assert (other.worker.responses[200 - 100], other.worker.responses[503 - 100]) == (2, 1)


def test_a_worker_that_died_unreaped_counts_as_dead(tmp_path: Path) -> None:
    Tally(str(tmp_path), 0)
    with other_worker(tmp_path, {}) as proc:
        proc.stdin.close()  # type: ignore[union-attr]
        # Wait for its exit but leave it a zombie, as a master that has not reaped it yet.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        assert [f.alive for f in read_all(str(tmp_path))] == [True, False]


def test_status_codes_100_to_599_are_counted() -> None:
    block = WorkerBlock()
    for status in (100, 200, 200, 599, 99, 600, 0, -1, 1000):
        block.count(status)
    assert (block.responses[0], block.responses[100], block.responses[499]) == (1, 2, 1)
    assert sum(block.responses) == 4


def test_an_observation_lands_in_its_bucket() -> None:
    block = BackendBlock()
    block.observe(0.0)                            # bucket 0: (0, BOUNDS[0]]
    block.observe(BOUNDS[0])                      # a bound belongs to its own bucket
    block.observe((BOUNDS[4] + BOUNDS[5]) / 2)    # within (BOUNDS[4], BOUNDS[5]]
    block.observe(BOUNDS[5])
    block.observe(BOUNDS[-1])                     # the last finite bucket
    block.observe(BOUNDS[-1] * 2)                 # beyond every bound: +Inf
    counts = list(block.buckets)
    assert len(counts) == len(BOUNDS) + 1
    assert (counts[0], counts[5], counts[len(BOUNDS) - 1], counts[len(BOUNDS)]) == (2, 2, 1, 1)
    assert sum(counts) == 6
    want = BOUNDS[0] + (BOUNDS[4] + BOUNDS[5]) / 2 + BOUNDS[5] + BOUNDS[-1] * 3
    assert block.latency_sum == pytest.approx(want)


def histogram(**at: int) -> list[int]:
    """Per-bucket counts with ``b<i>=n`` in bucket i (b26 is +Inf)."""
    counts = [0] * (len(BOUNDS) + 1)
    for key, n in at.items():
        counts[int(key[1:])] = n
    return counts


@pytest.mark.parametrize(("counts", "qs", "want"), [
    # No observations: no quantile.
    (histogram(), (0.5, 0.99), [None, None]),
    # 4 in (0.0001, 0.0002]: rank 2 of 4 is halfway, 3.6 is 90% of the way.
    (histogram(b1=4), (0.5, 0.9, 1.0), [0.00015, 0.00019, 0.0002]),
    # 4 in the first bucket, (0, 0.0001]: it starts at 0.
    (histogram(b0=4), (0.5,), [0.00005]),
    # 1 in (0, 0.0001], 3 in (0.00075, 0.001]: rank 1 ends the first bucket;
    # rank 2 is a third into the second: 0.00075 + 0.00025/3.
    (histogram(b0=1, b5=3), (0.25, 0.5), [0.0001, 0.00083333333]),
    # Only in +Inf: the last finite bound, 60 s, as Prometheus answers.
    (histogram(b26=3), (0.5, 0.99), [60.0, 60.0]),
    # 2 in (30, 60], 2 beyond: the median is 60, p99 is capped at 60.
    (histogram(b25=2, b26=2), (0.25, 0.99), [45.0, 60.0]),
])
def test_quantiles(counts: list[int], qs: tuple[float, ...], want: list[float | None]) -> None:
    got = quantiles(counts, qs)
    assert got == [None if w is None else pytest.approx(w, rel=1e-6) for w in want]


def test_snapshot_sums_counters_over_all_and_gauges_over_the_living(tmp_path: Path) -> None:
    tally = Tally(str(tmp_path), 0)
    config = LBConfig(backend=(Address("127.0.0.1", 65001), Address("127.0.0.1", 65002)))
    backends = Backends(config, tally)
    mine = tally.worker
    mine.requests, mine.retries, mine.client_connections = 10, 1, 3
    mine.count(200)
    a, b = tally.backend(A), tally.backend(B)
    a.requests, a.in_flight, a.idle, a.health = 6, 2, 1, 0       # up
    b.requests, b.health = 1, 2                                  # down
    a.observe(0.00005)                                           # 1 in bucket 0
    spec = {"worker": {"requests": 5, "retries": 2, "client_connections": 7},
            "statuses": [200, 502],
            "backends": {A: {"requests": 4, "in_flight": 3, "idle": 2, "health": 1,  # ejected
                             "observe": [0.0009] * 3},                    # 3 in bucket 5
                         B: {"requests": 2, "health": 0}}}
    with other_worker(tmp_path, spec):
        both = snapshot(str(tmp_path), backends).view
    after = snapshot(str(tmp_path), backends)

    for view in (both, after.view):  # counters: the dead worker's still count
        assert view["totals"]["requests"] == 15 and view["totals"]["retries"] == 3
        assert view["totals"]["responses"] == {"200": 2, "502": 1}
        byname = {x["name"]: x for x in view["backends"]}
        assert (byname[A]["requests"], byname[B]["requests"]) == (10, 3)
        # p50: rank 2 of 4 is a third into (0.00075, 0.001] -> 0.833 ms;
        # p90: rank 3.6 -> 0.00075 + 0.00025 * 2.6/3 -> 0.967 ms.
        assert byname[A]["latency_ms"]["p50"] == 0.833
        assert byname[A]["latency_ms"]["p90"] == 0.967
        assert byname[B]["latency_ms"]["p50"] is None
    assert after.histograms[A][0][0] == 1 and after.histograms[A][0][5] == 3
    assert after.histograms[A][1] == pytest.approx(0.00005 + 3 * 0.0009)

    a_both = next(x for x in both["backends"] if x["name"] == A)
    a_after = next(x for x in after.view["backends"] if x["name"] == A)
    assert both["workers_alive"] == 2 and both["totals"]["client_connections"] == 10
    assert (a_both["in_flight"], a_both["pool"]["idle"]) == (5, 3)
    assert [x["health"] for x in both["backends"]] == ["ejected", "down"]  # the worst seen
    assert after.view["workers_alive"] == 1 and after.view["totals"]["client_connections"] == 3
    assert (a_after["in_flight"], a_after["pool"]["idle"]) == (2, 1)
    assert [x["health"] for x in after.view["backends"]] == ["up", "down"]  # the dead's no more
    assert [w["alive"] for w in after.view["workers"]] == [True, False]
    assert after.view["workers"][1]["client_connections"] == 0
    assert all(s.pool.connects == 0 for s in backends.states)  # nothing was dialled


def test_a_dead_balancers_run_directory_is_swept_and_a_living_ones_kept() -> None:
    made = subprocess.run([sys.executable, "-c", "from lb.tally import run_directory; "
                           "print(run_directory())"], capture_output=True, text=True,
                          cwd=ROOT, check=True).stdout.strip()
    assert os.path.isdir(made)  # its maker exited (as after a SIGKILL) without removing it
    mine = run_directory()
    try:
        assert not os.path.exists(made)
        again = run_directory()
        assert os.path.isdir(mine)  # its maker (this process) is alive
        shutil.rmtree(again)
    finally:
        shutil.rmtree(mine, ignore_errors=True)


def test_a_tally_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot keep the counters in .*missing"):
        Tally(str(tmp_path / "missing"), 0)
