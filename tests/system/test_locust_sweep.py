# tests/system/test_locust_sweep.py -- loadtests/sweep.py run for real, as Locust runs it.
#
# Strategy: Locust monkey-patches on import, so it never runs in this process:
# every test starts `python -m locust -f loadtests/sweep.py` as a subprocess
# against a real backend (start_backend) and judges the cells it wrote with
# --sweep-out.  The runs must end by themselves (the shape returns None after
# the last level); every timeout is hang protection only.  Processes are
# ended by their own PIDs (Popen.kill), never by name.
#
# Every rule of a Locust cell's verdict has a test that asserts the reason it
# gives: non-2xx (a 404 path), failed and complete != requested (a recording
# backend that drops every third request), no response at all (nothing
# listening), length (bodies of two sizes; two processes that each saw one
# size), a run stopped mid-level (the web UI's /stop while a level waits for
# answers that never come).  The count is checked at the server: the
# balancer's /stats (start_lb) or the recording backend must have seen
# exactly N requests per level, in one process and with --processes 2.  The
# bytes are ab's (status line + headers + body), checked against the raw
# bytes of one response read over a plain socket.
from __future__ import annotations

import itertools
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from loadtests.cell import Cell
from loadtests.report import read_json
from tests.recording_backend import RecordingBackend, Request, Responder, fixed, head_bytes
from tests.recording_backend import Reply as RecordedReply
from tests.support import ROOT, Server, connect, start_backend, start_lb, wait_until

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


# -- every validity rule, and the count at the server ---------------------------------


def sweep_args(port: int, levels: str, requests: int, out: Path, *extra: str) -> list[str]:
    return ["--headless", "-H", f"http://127.0.0.1:{port}", "--sweep-levels", levels,
            "--sweep-requests", str(requests), "--sweep-out", str(out), *extra]


def has(cell: Cell, reason: str) -> bool:
    return any(r.startswith(reason) for r in cell.reasons)


MODES = ("local", "processes")


def mode_args(mode: str) -> tuple[str, ...]:
    """Locust's arguments for ``mode``; --processes gets a master port of its
    own (the default, 5557, is shared by every Locust on the machine)."""
    if mode == "local":
        return ()
    port = str(free_port())
    return ("--processes", "2", "--master-bind-port", port, "--master-port", port)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_balancer_counts_exactly_n_per_level(server: Server, tmp_path: Path,
                                                 mode: str) -> None:
    """The balancer's /stats counts every client request it got: N per level,
    nothing else (no probe, no re-send), in one process and in two."""
    out = tmp_path / "cells.json"
    balancer = start_lb(backends=[server.port])
    try:
        before = balancer.stats()["totals"]["requests"]
        proc = run(*sweep_args(balancer.port, "2,4", 60, out, *mode_args(mode)))
        after = balancer.stats()["totals"]["requests"]
    finally:
        balancer.server.stop()
    assert proc.returncode == 0, explain(proc)
    cells, env = read_json(str(out))
    assert env["mode"] == ("local" if mode == "local" else "--processes 2")
    assert [c.concurrency for c in cells] == [2, 4]
    for c in cells:
        assert c.valid and c.complete == 60, c.reasons
        assert c.detail["processes"] == (1 if mode == "local" else 2), c.detail
    assert after - before == 2 * 60


def raw_response(port: int, path: str) -> bytes:
    """The bytes of the answer to one keep-alive HTTP/1.1 GET, as Locust sends it (no
    Connection header, identity encoding), read off a plain socket: head, then the
    Content-Length bytes of body, and nothing more."""
    with connect(port) as sock:
        def more(data: bytes) -> bytes:
            block = sock.recv(65536)
            assert block, f"the server closed after {data!r}"
            return data + block
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Accept-Encoding: identity\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data = more(data)
        head = data[:data.index(b"\r\n\r\n") + 4]
        length = re.search(rb"(?im)^content-length: *(\d+)\r$", head)
        assert length, head
        while len(data) < len(head) + int(length.group(1)):
            data = more(data)
        assert len(data) == len(head) + int(length.group(1)), data
        return data


@pytest.mark.parametrize("through", ["backend", "balancer"])
def test_bytes_are_the_whole_responses(server: Server, tmp_path: Path, through: str) -> None:
    """expected_size is one response's status line + headers + body, byte for byte as a
    plain socket reads them (what ab counts), and total_transferred is N times that."""
    out = tmp_path / "cells.json"
    balancer = start_lb(backends=[server.port]) if through == "balancer" else None
    try:
        port = balancer.port if balancer else server.port
        raw = raw_response(port, "/page.html")
        proc = run(*sweep_args(port, "1,3", 50, out))
    finally:
        if balancer:
            balancer.server.stop()
    assert proc.returncode == 0, explain(proc)
    body = raw.partition(b"\r\n\r\n")[2]
    cells, env = read_json(str(out))
    assert env["total_transferred"] == "status line, headers and body (as ab)"
    for c in cells:
        assert c.valid and c.detail["bytes_counted"] == env["total_transferred"], c.reasons
        assert c.expected_size == len(raw) > len(body), (c.expected_size, raw)
        assert c.total_transferred == 50 * len(raw)


def dropping_every_third() -> Responder:
    """200 with a 10-byte body, except every third request: closed unanswered."""
    seen = itertools.count(1)

    def respond(req: Request) -> RecordedReply:
        if next(seen) % 3 == 0:
            return RecordedReply(b"", close=True)
        return fixed(b"0123456789")(req)
    return respond


@pytest.fixture(scope="module", params=sorted(MODES))
def dropped(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[subprocess.CompletedProcess, Cell, int]:
    """One run of 30 requests against a server that drops every third: the
    run, its cell and how many requests the server got."""
    out = tmp_path_factory.mktemp("dropped") / "cells.json"
    backend = RecordingBackend(dropping_every_third())
    try:
        proc = run(*sweep_args(backend.port, "3", 30, out, *mode_args(request.param)))
        got = len(backend.requests)
    finally:
        backend.stop()
    assert out.exists(), f"Locust wrote no cells\n{explain(proc)}"
    cells, _ = read_json(str(out))
    assert len(cells) == 1, explain(proc)
    return proc, cells[0], got


def test_dropped_requests_are_sent_once(dropped: tuple) -> None:
    proc, c, got = dropped
    assert got == 30, f"the server got {got} requests for 30 asked\n{explain(proc)}"
    assert c.detail["statuses"] == {"200": 20, "0": 10}, c.detail


def test_dropped_requests_are_failed(dropped: tuple) -> None:
    proc, c, _ = dropped
    assert proc.returncode == 1 and "INVALID CELL" in proc.stderr, explain(proc)
    assert c.failed == 10 and not c.valid
    assert has(c, "failed 10 (no response 10, wrong length 0)"), c.reasons


def test_fewer_complete_than_requested_is_invalid(dropped: tuple) -> None:
    _, c, _ = dropped
    assert c.complete == 20
    assert has(c, "complete 20 of 30 done != 30 requested"), c.reasons


def test_nothing_listening_is_invalid(tmp_path: Path) -> None:
    out = tmp_path / "cells.json"
    proc = run(*sweep_args(free_port(), "1", 5, out))
    assert proc.returncode == 1, explain(proc)
    cells, _ = read_json(str(out))
    c = cells[0]
    assert (c.complete, c.failed, c.total_transferred) == (0, 5, 0), c
    assert has(c, "no 2xx response to learn the expected size from"), c.reasons
    assert has(c, "complete 0 of 5 done != 5 requested") and has(c, "failed 5"), c.reasons


#: the head fixed() sends before a 10- or a 20-byte body (the same length for both)
FIXED_HEAD = len(head_bytes(200, "OK", [("Content-Length", "10")]))


def test_bodies_of_another_length_are_invalid(tmp_path: Path) -> None:
    """Every response a well-framed 2xx, but every other body 20 bytes, not 10."""
    seen = itertools.count()
    bodies = (b"0123456789", b"01234567890123456789")

    def alternating(req: Request) -> RecordedReply:
        return fixed(bodies[next(seen) % 2])(req)
    backend = RecordingBackend(alternating)
    out = tmp_path / "cells.json"
    try:
        proc = run(*sweep_args(backend.port, "2", 40, out))
        got = len(backend.requests)
    finally:
        backend.stop()
    assert proc.returncode == 1 and got == 40, explain(proc)
    c = read_json(str(out))[0][0]
    total = 20 * (FIXED_HEAD + 10) + 20 * (FIXED_HEAD + 20)
    assert c.complete == 40 and c.non_2xx == 0 and c.total_transferred == total, c
    assert c.failed == 20 and has(c, "failed 20 (no response 0, wrong length 20)"), c.reasons
    assert c.expected_size in (FIXED_HEAD + 10, FIXED_HEAD + 20), c
    assert has(c, f"total transferred {total} != 40 x {c.expected_size}"), c.reasons


def test_processes_that_saw_other_sizes_are_invalid(tmp_path: Path) -> None:
    """Two processes, one user and one keep-alive connection each; the server
    sends 10-byte bodies on one connection and 20 on the other: each process
    learns its own size and counts no failure, only the master sees it."""
    def by_connection(req: Request) -> RecordedReply:
        return fixed(b"0123456789" * (1 + req.connection % 2))(req)
    backend = RecordingBackend(by_connection)
    out = tmp_path / "cells.json"
    try:
        proc = run(*sweep_args(backend.port, "2", 40, out, *mode_args("processes")))
        got, conns = len(backend.requests), len(backend.proxied_connections())
    finally:
        backend.stop()
    assert proc.returncode == 1 and got == 40 and conns == 2, explain(proc)
    c = read_json(str(out))[0][0]
    assert c.failed == 0 and c.non_2xx == 0 and c.complete == 40, c
    sizes = [FIXED_HEAD + 10, FIXED_HEAD + 20]
    assert has(c, f"processes disagree on the expected size: {sizes}"), c.reasons


@pytest.mark.parametrize("how", ["web-stop", "sigterm"])
def test_a_sweep_stopped_mid_level_fails(tmp_path: Path, how: str) -> None:
    """Locust stopped while level 2 of 2 waits for answers that never come: level 1's
    cell is written, SWEEP INCOMPLETE is logged, exit 1.  The stop is the web UI's POST
    /stop, which a web greenlet handles the same way every time, or a SIGTERM to a
    headless Locust, which the locustfile handles (Locust's own handler comes only when
    the shape has ended); a SIGINT can land in a user greenlet and be lost, and
    --run-time is ignored with a LoadTestShape."""
    hold, seen = threading.Event(), itertools.count(1)

    def five_then_hold(req: Request) -> RecordedReply:
        if next(seen) > 5:  # level 1 is 5 requests; level 2's wait
            hold.wait(HANG)
        return fixed(b"0123456789")(req)
    backend, web = RecordingBackend(five_then_hold), free_port()
    out, log = tmp_path / "cells.json", tmp_path / "locust.log"
    args = sweep_args(backend.port, "1,2", 5, out)
    if how == "web-stop":  # not --headless: the web UI runs
        args = ["--autostart", "--autoquit", "0", "--web-host", "127.0.0.1", "--web-port",
                str(web), *args[1:]]
    with log.open("w") as sink:
        proc = subprocess.Popen(locust(*args), cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        # level 1's 5, then one held request from each of level 2's 2 users
        assert wait_until(lambda: len(backend.requests) == 7, HANG), log.read_text()
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            stop = urllib.request.Request(f"http://127.0.0.1:{web}/stop", data=b"",
                                          method="POST")
            with urllib.request.urlopen(stop, timeout=10) as answer:
                assert answer.status == 200
        proc.wait(HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        hold.set()
        got = len(backend.requests)
        backend.stop()
    text = log.read_text()
    assert proc.returncode == 1, f"exit {proc.returncode}\n{text[-4000:]}"
    assert "SWEEP INCOMPLETE: stopped during level 2 of 2 (2 users)" in text, text[-4000:]
    assert "INVALID CELL" not in text, text[-4000:]  # the exit code is the stop's alone
    cells, _ = read_json(str(out))
    assert [(c.concurrency, c.complete, c.valid) for c in cells] == [(1, 5, True)], cells
    assert got == 7, f"{got} requests reached the server after the stop"
