# tests/system/test_lb_one_truth.py -- /stats and /metrics speak for all workers.
#
# Strategy: real backends and a real ``python -m lb --workers 2``; requests
# on fresh connections (ab without keep-alive) so the kernel spreads them
# over both workers, then many scrapes, each answered by whichever worker
# the kernel picks, must all read the same totals.  A worker SIGKILLed (a
# child of the balancer we started, found by its PID in /stats) must not
# take its counts with it.  Drain under load: a LoadClient keeps requests
# going while one backend is drained; every request must succeed and, a
# second after the change, none may reach the drained backend.
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.faults.load import COMPLETE, LoadClient
from loadtests.tools import ab
from tests.support import ROOT, Balancer, Server, start_backend, start_lb, wait_until

REQUESTS = 1000
SCRAPES = 20


@pytest.fixture
def backends() -> Iterator[list[Server]]:
    made = [start_backend() for _ in range(3)]
    yield made
    for backend in made:
        backend.stop()


def balancer(backends: list[Server], *args: str) -> Balancer:
    lb = start_lb("--workers", "2", *args, backends=[b.port for b in backends])
    if not wait_until(lambda: lb.stats()["workers_alive"] == 2, timeout=20):
        lb.server.stop()
        pytest.fail(f"/stats never counted two workers alive: {lb.stats()['workers']}")
    return lb


def scrape(lb: Balancer) -> dict[str, dict[tuple, float]]:
    """/metrics as {sample name: {labels: value}}."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(lb.metrics()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def send(lb: Balancer, n: int) -> None:
    result, _ = ab.run(f"http://127.0.0.1:{lb.port}/page.html", n, 10, keepalive=False)
    assert (result.complete, result.failed, result.non_2xx) == (n, 0, 0), result


@pytest.mark.timeout(120)
def test_every_scrape_of_any_worker_reads_the_whole(backends: list[Server]) -> None:
    lb = balancer(backends)
    try:
        send(lb, REQUESTS)
        stats = lb.stats()
        workers = [w for w in stats["workers"] if w["alive"]]
        assert len(workers) == 2 and all(w["requests"] > 0 for w in workers), workers
        assert sum(w["requests"] for w in workers) == REQUESTS
        answered_by = set()
        for _ in range(SCRAPES):
            samples = scrape(lb)
            assert samples["gservers_lb_requests_total"][()] == REQUESTS
            assert samples["gservers_lb_responses_total"][(("code", "200"),)] == REQUESTS
            counts = samples["gservers_lb_backend_latency_seconds_count"]
            assert sum(counts.values()) == REQUESTS
            buckets = samples["gservers_lb_backend_latency_seconds_bucket"]
            for labels, count in counts.items():
                per = sorted((float(dict(k)["le"]), v) for k, v in buckets.items()
                             if dict(k)["backend"] == dict(labels)["backend"])
                assert per[-1] == (float("inf"), count)
                assert [v for _, v in per] == sorted(v for _, v in per)  # cumulative
            answered_by.add(lb.stats()["pid"])
        assert answered_by <= {w["pid"] for w in workers}
        for b in lb.stats()["backends"]:
            p = b["latency_ms"]
            assert p["p50"] is not None and 0 < p["p50"] <= p["p90"] <= p["p99"]
    finally:
        lb.server.stop()


@pytest.mark.timeout(120)
def test_a_replaced_worker_keeps_its_counts(backends: list[Server]) -> None:
    lb = balancer(backends)
    try:
        send(lb, 200)
        victim = lb.stats()["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)

        def replaced() -> bool:
            alive = [w for w in lb.stats()["workers"] if w["alive"]]
            return len(alive) == 2 and victim["pid"] not in {w["pid"] for w in alive}

        assert wait_until(replaced, timeout=20), lb.server.log
        stats = lb.stats()
        assert stats["totals"]["requests"] == 200  # not 200 minus the dead worker's
        dead = [w for w in stats["workers"] if not w["alive"]]
        assert [w["pid"] for w in dead] == [victim["pid"]]
        assert dead[0]["requests"] == victim["requests"] and dead[0]["client_connections"] == 0
        send(lb, 100)
        assert scrape(lb)["gservers_lb_requests_total"][()] == 300
    finally:
        lb.server.stop()


@pytest.mark.timeout(120)
def test_drain_under_load_moves_every_new_request_with_none_failed(
        backends: list[Server]) -> None:
    lb = balancer(backends)
    drained = f"127.0.0.1:{backends[0].port}"
    client = LoadClient(lb.port, threads=8, keep_alive=True, max_per_thread=100_000,
                        pace=0.002).start()
    try:
        assert client.wait_for(300, timeout=30)
        assert lb.set_backend(drained, state="drain")["state"] == "drain"
        time.sleep(1.0)  # the promise: every worker within a second
        before = {b["name"]: b["requests"] for b in lb.stats()["backends"]}
        done = client.count()
        assert client.wait_for(done + 1000, timeout=60)
        after = {b["name"]: b["requests"] for b in lb.stats()["backends"]}
    finally:
        client.stop()
        outcomes = client.finish(timeout=30)
        lb.server.stop()
    assert after[drained] == before[drained]
    assert sum(after.values()) - sum(before.values()) >= 1000
    assert all(after[n] > before[n] for n in after if n != drained)
    summary = {k: v for k, v in client.summary().items()}
    assert set(summary) == {f"{COMPLETE}:200"}, summary
    assert len(outcomes) == sum(summary.values())


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) for a private, tiny /dev/shm")
def test_a_full_dev_shm_is_one_error_line_at_start() -> None:
    """In a mount namespace of its own, /dev/shm is a 64 KiB tmpfs: too small
    for the counters, which are allocated at start rather than page by page
    (where a full tmpfs would be a SIGBUS under load)."""
    script = ("mount -t tmpfs -o size=64k tmpfs /dev/shm && exec \"$0\" -m lb "
              "--listen 127.0.0.1:0 --admin off")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             script, sys.executable], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert "cannot keep the counters in /dev/shm/" in result.stderr
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
