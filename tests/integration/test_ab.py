# tests/integration/test_ab.py -- the ApacheBench parser and verdict, on saved ab outputs.
#
# Strategy: tests/data/ab holds real ab outputs captured here: clean runs
# (with and without -k), a run of 404s, a run against a server that dropped
# and resized responses (ab counts those as "Length" failures), a run that ab
# abandoned (connection refused), and three made with `ab -r` against a small
# raw-socket server: one closing every connection unanswered (ab "completes"
# them all, 0 failed, 0 bytes: empty-responses), one sending 50 of the 100
# body bytes it declared (short-body: 0 failed, only the bytes show it) and
# one too slow for `-t 1 -n 100000` (timelimit: 96 complete of 100000).
# Parsing is pure, so these are plain unit tests, one per rule of ab.judge,
# each asserting the reason that rule gives (so it fails when only that rule
# is disabled); two tests run the real ab through loadtests.tools.ab.run.
# The one response-size probe (loadtests.tools.probe) is checked against a
# raw server with and without Content-Length, and against what real ab and
# wrk runs transferred.
from __future__ import annotations

import shutil
import socket
import threading

import pytest

from loadtests.tools import ab, probe, wrk
from tests.support import ROOT, start_backend

DATA = ROOT / "tests" / "data" / "ab"


def load(name: str) -> ab.AbResult:
    text = (DATA / f"{name}.txt").read_text()
    csv_path = DATA / f"{name}.csv"
    return ab.parse(text, csv_path.read_text() if csv_path.exists() else "")


def test_clean_run_every_field() -> None:
    r = load("ok-c10")
    assert (r.concurrency, r.complete, r.failed, r.non_2xx) == (10, 1000, 0, 0)
    assert r.total_transferred == 398000 and r.html_transferred == 240000
    assert r.document_length == 240
    assert r.rps > 0 and r.time_taken > 0 and r.transfer_rate > 0
    assert r.time_per_request == pytest.approx(r.time_per_request_all * 10, rel=0.01)
    assert set(r.connection_times) == {"connect", "processing", "waiting", "total"}
    # -e gives fractional milliseconds for every percentile 0..100
    assert len(r.percentiles) == 101 and r.percentiles[50] != int(r.percentiles[50])
    assert r.percentiles[50] <= r.percentiles[99] <= r.percentiles[100]
    assert ab.judge(r, 1000, 398) == []


def test_keepalive_run() -> None:
    r = load("ok-keepalive-c50")
    assert r.keepalive_requests == 2000 == r.complete
    assert r.percentiles[99] >= r.percentiles[50]  # whole-ms table without -e
    assert ab.judge(r, 2000, 425) == []


def test_non_2xx_is_invalid() -> None:
    r = load("non2xx-404")
    assert r.non_2xx == 200 and r.failed == 0
    reasons = ab.judge(r, 200, 179)
    assert any("non-2xx 200" in x for x in reasons)


def test_dropped_and_resized_responses_are_failures() -> None:
    r = load("failures")
    assert r.complete == 300 and r.failed == 249
    assert (r.failed_connect, r.failed_receive, r.failed_length,
            r.failed_exceptions) == (0, 0, 249, 0)
    reasons = ab.judge(r, 300, 50)
    assert any(x.startswith("failed 249") for x in reasons)
    assert any("total transferred 12644" in x for x in reasons)


def test_aborted_run_is_invalid_and_says_why() -> None:
    r = load("refused")
    assert r.aborted.startswith("apr_socket_recv: Connection refused")
    assert r.complete == 0
    reasons = ab.judge(r, 100, 398)
    assert reasons[0].startswith("ab gave up: apr_socket_recv")


def test_short_transfer_alone_makes_a_cell_invalid() -> None:
    r = load("ok-c10")
    assert ab.judge(r, 1000, 399) == ["total transferred 398000 != 1000 x 399 bytes"]


def test_fewer_complete_than_requested_is_invalid() -> None:
    r = load("timelimit")  # ab -t 1 -n 100000: the time limit ended it early
    assert (r.complete, r.failed, r.non_2xx, r.aborted) == (96, 0, 0, "")
    reasons = ab.judge(r, 100000, 49)
    assert "complete 96 != 100000 requested" in reasons, reasons


def test_short_bodies_ab_does_not_count_as_failed_are_invalid() -> None:
    r = load("short-body")  # Content-Length: 100, 50 bytes sent, then close
    assert (r.complete, r.failed, r.non_2xx, r.document_length) == (200, 0, 0, 50)
    head = len(b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n")
    assert r.total_transferred == 200 * (head + 50)
    assert ab.judge(r, 200, head + 100) == [
        f"total transferred {200 * (head + 50)} != 200 x {head + 100} bytes"]


def test_connections_closed_unanswered_are_invalid() -> None:
    r = load("empty-responses")  # ab -r "completes" them: 0 failed, 0 bytes
    assert (r.complete, r.failed, r.non_2xx, r.total_transferred) == (100, 0, 0, 0)
    assert ab.judge(r, 100, 398) == ["total transferred 0 != 100 x 398 bytes"]


def test_real_ab_run_and_response_size() -> None:
    server = start_backend("async")
    try:
        size = ab.response_size("127.0.0.1", server.port, "/page.html")
        result, output = ab.run(f"http://127.0.0.1:{server.port}/page.html", 300, 20)
        assert "Complete requests" in output
        assert ab.judge(result, 300, size) == [], output
        ka_size = ab.response_size("127.0.0.1", server.port, "/page.html", keepalive=True)
        result, output = ab.run(f"http://127.0.0.1:{server.port}/page.html", 300, 20, True)
        assert result.keepalive_requests == 300
        assert ab.judge(result, 300, ka_size) == [], output
        assert ka_size != size  # "Connection: close" vs "Connection: keep-alive"
    finally:
        server.stop()


def test_real_ab_against_a_server_that_never_answers_gives_up() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    with listener:
        result, output = ab.run(f"http://127.0.0.1:{listener.getsockname()[1]}/", 5, 5,
                                timeout=1)
    assert result.complete == 0, output
    reasons = ab.judge(result, 5, 398)
    assert reasons[0].startswith("ab gave up: apr_pollset_poll"), (reasons, output)
    assert "complete 0 != 5 requested" in reasons


def one_answer(answer: bytes) -> tuple[int, list[bytes]]:
    """A listener answering one connection with ``answer``, then closing it;
    its port, and the request it read (filled in when it has been read)."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve() -> None:
        with listener, listener.accept()[0] as conn:
            got.append(conn.recv(65536))
            conn.sendall(answer)
    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], got


def test_probe_counts_head_and_content_length_body_only() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    port, got = one_answer(head + b"hello" + b"EXTRA BYTES")
    assert probe.response_size("127.0.0.1", port, b"GET / HTTP/1.1\r\n\r\n") == len(head) + 5
    assert got == [b"GET / HTTP/1.1\r\n\r\n"]


def test_probe_without_content_length_reads_to_the_close() -> None:
    answer = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody until the close"
    port, _ = one_answer(answer)
    assert probe.response_size("127.0.0.1", port, ab.request("127.0.0.1", port, "/")) == \
        len(answer)


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk not installed")
def test_wrk_run_matches_its_probed_size() -> None:
    server = start_backend("async")
    try:
        size = wrk.response_size("127.0.0.1", server.port, "/page.html")
        assert size != ab.response_size("127.0.0.1", server.port, "/page.html", True)
        result, output = wrk.run("wrk", f"http://127.0.0.1:{server.port}/page.html", 10, 1)
        assert result.requests > 0 and wrk.judge(result, size) == [], output
        assert wrk.judge(result, size + 20) != []  # the size is what makes the verdict
    finally:
        server.stop()
