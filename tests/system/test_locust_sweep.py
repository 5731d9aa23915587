# tests/system/test_locust_sweep.py -- loadtests/sweep.py run for real, as Locust runs it.
#
# Strategy: Locust monkey-patches on import, so it never runs in this process:
# every test starts `python -m locust -f loadtests/sweep.py` as a subprocess
# against a real backend (start_backend) and judges the cells it wrote with
# --sweep-out.  The runs must end by themselves (the shape returns None after
# the last level); every timeout is hang protection only.  Processes are
# ended by their own PIDs (Popen.kill), never by name.
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.report import read_json
from tests.support import ROOT, Server, start_backend

HANG = 60.0  # seconds; hang protection only
LOCUSTFILE = str(ROOT / "loadtests" / "sweep.py")


@pytest.fixture(scope="module")
def server() -> Server:
    """One async backend for the whole module."""
    backend = start_backend("async")
    yield backend
    backend.stop()


def locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *args]


def run(*args: str) -> subprocess.CompletedProcess:
    """Run Locust to completion (subprocess.run kills it by PID on a hang)."""
    return subprocess.run(locust(*args), cwd=ROOT, capture_output=True, text=True,
                          timeout=HANG)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr (tail):\n{proc.stderr[-4000:]}"


def test_headless_two_levels_stop_by_themselves(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "cells.json"
    proc = run("--headless", "-H", f"http://127.0.0.1:{server.port}", "--sweep-levels", "1,5",
               "--sweep-requests", "200", "--sweep-model", "async", "--sweep-out", str(out))
    assert proc.returncode == 0, explain(proc)
    cells, env = read_json(str(out))
    assert env["mode"] == "local" and env["locust_version"]
    assert [c.concurrency for c in cells] == [1, 5]
    for c in cells:
        assert (c.tool, c.model, c.requests, c.keepalive) == ("locust", "async", 200, True)
        assert c.complete == 200 and c.failed == 0 and c.non_2xx == 0, c
        assert c.valid, c.reasons
        assert c.expected_size > 0 and c.total_transferred == 200 * c.expected_size
        assert c.time_taken > 0 and c.rps == pytest.approx(200 / c.time_taken)
        assert c.time_per_request == pytest.approx(c.time_taken * 1000 * c.concurrency / 200)
        assert c.p50 is not None and c.p50 <= c.p90 <= c.p99
        assert c.client_cpu > 0 and c.server_cpu == 0
    assert "| Asynchronous | 5 |" in proc.stdout  # the printed table


def test_distributed_holds_the_request_count(server: Server, tmp_path: Path) -> None:
    out, port = tmp_path / "cells.json", free_port()
    procs = [subprocess.Popen(
        locust("--headless", "--master", "--expect-workers", "2", "--master-bind-host",
               "127.0.0.1", "--master-bind-port", str(port), "-H",
               f"http://127.0.0.1:{server.port}", "--sweep-levels", "2,6",
               "--sweep-requests", "150", "--sweep-out", str(out)),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port)),
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        log, _ = procs[0].communicate(timeout=HANG)
        assert procs[0].returncode == 0, log[-4000:]
        for worker in procs[1:]:
            worker.wait(HANG)  # the master's quit message ends them
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    cells, env = read_json(str(out))
    assert env["mode"] == "master/worker"
    assert [c.concurrency for c in cells] == [2, 6]
    for c in cells:
        assert c.complete == 150 and c.failed == 0 and c.valid, c
        assert c.detail["processes"] == 2 and sum(c.detail["shares"].values()) == 150
        assert c.total_transferred == 150 * c.expected_size


def test_non_2xx_path_gives_invalid_cells(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "cells.json"
    proc = run("--headless", "-H", f"http://127.0.0.1:{server.port}", "--sweep-path",
               "/no-such-page.html", "--sweep-levels", "2", "--sweep-requests", "40",
               "--sweep-out", str(out))
    assert proc.returncode != 0, explain(proc)
    cells, _ = read_json(str(out))
    assert len(cells) == 1 and not cells[0].valid
    assert cells[0].non_2xx == 40 and cells[0].detail["statuses"] == {"404": 40}
    assert any("non-2xx" in reason for reason in cells[0].reasons), cells[0].reasons
    assert "INVALID CELL" in proc.stderr
