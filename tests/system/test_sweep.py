# tests/system/test_sweep.py -- the main job end to end, on a small sweep.
#
# Strategy: run the real sweep command (python -m loadtests) against real
# servers it starts itself on free ports, with a small n and two levels, and
# check the files it writes and that it stopped every server it started.
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, free_ports, wait_port_closed


def sweep(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, list[int]]:
    ports = free_ports(7)
    argv = [sys.executable, "-m", "loadtests", "--requests", "200", "--levels", "1,50",
            "--backend-ports", ",".join(map(str, ports[:4])), "--thread-port", str(ports[4]),
            "--lb-port", str(ports[5]), "--admin-port", str(ports[6]),
            "--out", str(tmp_path), *extra]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300), ports


def test_small_sweep_all_models(tmp_path: Path) -> None:
    proc, ports = sweep(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    cells = data["cells"]
    assert [(c["model"], c["concurrency"]) for c in cells] == [
        ("async", 1), ("async", 50), ("thread", 1), ("thread", 50), ("lb", 1), ("lb", 50)]
    for c in cells:
        assert c["valid"] and c["complete"] == 200 and c["failed"] == 0 and c["non_2xx"] == 0
        assert c["total_transferred"] == 200 * c["expected_size"]
        assert c["server_cpu"] >= 0
    # /proc counts CPU in 10 ms ticks, which 200 fast requests may not fill:
    # a cell may read 0, the sweep as a whole cannot.
    assert sum(c["server_cpu"] for c in cells) > 0
    assert "Asynchronous+LB" in proc.stdout and "6 of 6 cells valid" in proc.stdout
    for name in ("results.md", "results.csv", "rps.png", "latency.png", "failures.png"):
        assert (tmp_path / name).stat().st_size > 0
    for port in ports:
        assert wait_port_closed(port), f"port {port} still served after the sweep"


def test_an_invalid_cell_fails_the_run_loudly(tmp_path: Path) -> None:
    proc, _ = sweep(tmp_path, "--models", "async", "--path", "/missing.html")
    assert proc.returncode == 1
    assert "INVALID" in proc.stderr and "non-2xx 200" in proc.stderr
    assert "**NO: non-2xx 200" in (tmp_path / "results.md").read_text()


def test_a_busy_port_is_refused_clearly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "loadtests", "--models", "thread",
                               "--thread-port", str(port), "--out", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"port {port} is already in use" in proc.stderr
    assert "Traceback" not in proc.stderr
