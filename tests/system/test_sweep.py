# tests/system/test_sweep.py -- the main job end to end, on small sweeps.
#
# Strategy: run the real sweep command (python -m loadtests) against real
# servers it starts itself on free ports, with a small n and two levels, and
# check the files it writes, the order its progress lines say the runs were
# made in, and that it stopped every server it started.  The reference rows
# run the real haproxy and nginx where they are installed (skipped, saying
# so, where not); a --target row points at a backend the test starts itself,
# and its expected size is checked against the bytes read from it directly.
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.benchmark.fleet import find_tool
from loadtests.tools import ab
from tests.support import ROOT, free_ports, start_backend, wait_port_closed

PROGRESS_RE = re.compile(r"^\[(\d+)/(\d+)\] round (\d+) ab (\S+) c=(\d+): \d+ req/s, p99 .*, "
                         r"(valid|INVALID.*); about \d+:\d\d left$", re.M)


def sweep(tmp_path: Path, *extra: str, timeout: float = 300) -> tuple[
        subprocess.CompletedProcess, list[int]]:
    ports = free_ports(9)
    argv = [sys.executable, "-m", "loadtests", "--requests", "200", "--levels", "1,50",
            "--backend-ports", ",".join(map(str, ports[:4])), "--thread-port", str(ports[4]),
            "--lb-port", str(ports[5]), "--admin-port", str(ports[6]),
            "--haproxy-port", str(ports[7]), "--nginx-port", str(ports[8]),
            "--out", str(tmp_path), "--repeat", "1", "--references", "none", *extra]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout), ports


def cells_of(tmp_path: Path) -> list[dict]:
    return json.loads((tmp_path / "results.json").read_text())["cells"]


def test_small_sweep_all_models_in_interleaved_rounds(tmp_path: Path) -> None:
    proc, ports = sweep(tmp_path, "--repeat", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    cells = data["cells"]
    assert [(c["model"], c["level"]) for c in cells] == [
        ("Asynchronous", 1), ("Asynchronous", 50), ("Thread", 1), ("Thread", 50),
        ("Asynchronous+LB", 1), ("Asynchronous+LB", 50)]
    for c in cells:
        assert c["valid"] and c["tool"] == "ab" and [r["round"] for r in c["runs"]] == [1, 2]
        for r in c["runs"]:
            assert r["valid"] and r["failed"] == 0 and r["non_2xx"] == 0
            assert r["total_bytes"] == 200 * c["expected_size"]
        assert c["rps_min"] <= c["median"]["rps"] <= c["rps_max"]
        assert c["median"]["rps"] in [r["rps"] for r in c["runs"]]
        assert c["median"]["server_peak_rss_kb"] > 5 * 1024  # a Python server or more
    # the progress lines are the runs in the order made: rounds, levels, rotated rows
    made = [(int(m[2]), m[3], int(m[4])) for m in PROGRESS_RE.findall(proc.stderr)]
    a, t, lb = "Asynchronous", "Thread", "Asynchronous+LB"
    assert made == [(1, a, 1), (1, t, 1), (1, lb, 1), (1, a, 50), (1, t, 50), (1, lb, 50),
                    (2, t, 1), (2, lb, 1), (2, a, 1), (2, t, 50), (2, lb, 50), (2, a, 50)]
    assert [m[0] for m in PROGRESS_RE.findall(proc.stderr)] == [str(i) for i in range(1, 13)]
    names_seen = {r["name"] for r in data["ratios"]}
    assert {"thread/async", "lb/async"} <= names_seen
    assert {r["level"] for r in data["ratios"]} == {1, 50, "all"}
    assert "6 of 6 cells valid (2 runs each, interleaved)" in proc.stdout
    for name in ("results.md", "results.csv", "rps.png", "latency.png", "failures.png"):
        assert (tmp_path / name).stat().st_size > 0
    for port in ports[:7]:
        assert wait_port_closed(port), f"port {port} still served after the sweep"


def test_an_invalid_cell_fails_the_run_loudly(tmp_path: Path) -> None:
    proc, _ = sweep(tmp_path, "--models", "async", "--path", "/missing.html")
    assert proc.returncode == 1
    assert "INVALID" in proc.stderr and "round 1: non-2xx 200" in proc.stderr
    assert "**NO: round 1: non-2xx 200" in (tmp_path / "results.md").read_text()
    assert [c["valid"] for c in cells_of(tmp_path)] == [False, False]


@pytest.mark.parametrize("ref", ["haproxy", "nginx"])
def test_a_reference_balancer_row_beside_the_lb(tmp_path: Path, ref: str) -> None:
    if not find_tool(ref):
        pytest.skip(f"{ref} is not installed here (apt-get install "
                    f"{'nginx-light' if ref == 'nginx' else ref}): its row cannot be run")
    proc, ports = sweep(tmp_path, "--models", "lb", "--references", ref, "--repeat", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = {(c["model"], c["level"]): c for c in cells_of(tmp_path)}
    name = f"Asynchronous+{ref}"
    for level in (1, 50):
        c = cells[(name, level)]
        assert c["valid"] and len(c["runs"]) == 2
        assert all(r["total_bytes"] == 200 * c["expected_size"] for r in c["runs"])
        assert c["median"]["server_cpu_us_per_request"] is not None  # its processes counted
    ratios = {(r["name"], r["level"]) for r in json.loads(
        (tmp_path / "results.json").read_text())["ratios"]}
    assert {(f"lb/{ref}", 1), (f"lb/{ref}", 50), (f"lb/{ref}", "all")} <= ratios
    assert f"Asynchronous+LB / {name}" in (tmp_path / "results.md").read_text()
    assert wait_port_closed(ports[7 if ref == "haproxy" else 8]), f"{ref} still runs"


def test_a_target_row_measures_a_server_the_user_runs(tmp_path: Path) -> None:
    server = start_backend("async")
    try:
        url = f"http://127.0.0.1:{server.port}/page.html"
        proc, _ = sweep(tmp_path, "--models", "none", "--target", f"mine={url}",
                        "--repeat", "2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        direct = ab.request("127.0.0.1", server.port, "/page.html")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(direct)
            raw = b""
            while chunk := sock.recv(65536):  # HTTP/1.0 without keep-alive: closed at the end
                raw += chunk
        assert server.alive(), "the sweep stopped a server it did not start"
    finally:
        server.stop()
    cells = cells_of(tmp_path)
    assert [(c["model"], c["level"]) for c in cells] == [("mine", 1), ("mine", 50)]
    for c in cells:
        assert c["valid"] and c["expected_size"] == len(raw)
        assert c["median"]["total_bytes"] == 200 * len(raw)
        assert c["median"]["server_cpu_us_per_request"] is None  # not ours to measure
        assert c["median"]["server_peak_rss_kb"] is None
    assert "| mine | 1 |" in proc.stdout


def test_a_target_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    [port] = free_ports(1)
    proc, _ = sweep(tmp_path, "--models", "none", "--target",
                    f"gone=http://127.0.0.1:{port}/", timeout=60)
    assert proc.returncode == 2
    assert f"gone (http://127.0.0.1:{port}/) did not answer" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("value", "message"), [
    ("nourl", "is not NAME=URL"),
    ("lb=http://127.0.0.1:1/", "is taken by a model"),
    ("x=https://127.0.0.1:1/", "is not an http:// URL"),
    ("bad name=http://127.0.0.1:1/", "use letters, digits"),
    ("x=http://127.0.0.1:99999/", "bad port"),
])
def test_bad_targets_are_refused_naming_the_value(tmp_path: Path, value: str,
                                                  message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "loadtests", "--target", value, "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_nothing_to_measure_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "loadtests", "--models", "none",
                           "--references", "none", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "nothing to measure" in proc.stderr


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


@pytest.mark.parametrize(("work", "path", "tool"), [
    ("cpu:2", "/work/cpu?ms=2", "ab"), ("wait:20", "/work/wait?ms=20", "ab"),
    ("wait:20", "/work/wait?ms=20", "locust")])
def test_each_workload_sweeps_its_endpoint(tmp_path: Path, work: str, path: str,
                                           tool: str) -> None:
    proc, _ = sweep(tmp_path, "--models", "async,thread", "--workload", work, "--tool", tool)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["environment"]["workload"] == work and data["environment"]["path"] == path
    body = len(f"{work.split(':')[0]} {int(work.split(':')[1]):05d} ms\n")
    for c in data["cells"]:
        assert c["valid"] and c["tool"] == tool
        assert c["median"]["total_bytes"] == 200 * c["expected_size"]
        assert c["expected_size"] > body  # a head and the fixed-size body
    if work.startswith("wait") and tool == "ab":  # 200 waits of 20 ms one at a time: >= 4 s
        c1 = next(c for c in data["cells"] if c["level"] == 1)
        assert c1["median"]["time_taken"] >= 200 * 0.020
    md = (tmp_path / "results.md").read_text()
    assert md.startswith(f"# Results: workload {work} ({path})")


def test_path_and_a_workload_are_not_both_taken(tmp_path: Path) -> None:
    proc, _ = sweep(tmp_path, "--workload", "cpu:1", "--path", "/page.html", timeout=60)
    assert proc.returncode == 2 and "--path is for the static workload" in proc.stderr
