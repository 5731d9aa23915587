# tests/system/test_bench.py -- the comparison benchmark: its pure parts and one tiny run.
#
# Strategy: the pure parts of loadtests/benchmark/ (workloads and the plan,
# stats, targets, configs, report) and loadtests/tools/wrk.py are tested on
# saved wrk output and hand-built runs whose medians, ratios and target
# verdicts are known.
# The process figures (loadtests/procstats.py) are tested against real
# processes: a child that burns CPU, a parent with children and a
# grandchild, one that has exited, one that allocated and freed memory, and
# connections accepted from a real listener; every process is ended by PID.
# The rendered haproxy/nginx configs are also checked by the real programs'
# own config test when they are installed (skipped when not).  One
# end-to-end run of python -m loadtests.benchmark with a tiny workload and --only
# gservers --no-install (no haproxy/nginx needed) on free ports checks the
# files it writes and that it stopped every server it started.
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from loadtests import procstats
from loadtests.benchmark import configs, fleet, report, stats
from loadtests.benchmark import workloads as wl
from loadtests.benchmark.idle import IdleResult
from loadtests.benchmark.stats import Run
from loadtests.benchmark.targets import check_targets
from loadtests.benchmark.workloads import Workload
from loadtests.tools import wrk
from tests.support import ROOT, free_ports, wait_port_closed

WRK_OK = """\
Running 2s test @ http://127.0.0.1:62090/page.html
  1 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    11.87ms   17.07ms 142.25ms   86.01%
    Req/Sec    18.94k     3.45k   24.78k    70.00%
  Latency Distribution
     50%    5.55ms
     75%   17.43ms
     90%   34.54ms
     99%   75.48ms
  37745 requests in 2.00s, 13.64MB read
Requests/sec:  18833.18
Transfer/sec:      6.81MB
"""

WRK_BAD = """\
Running 1s test @ http://127.0.0.1:62090/missing.html
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   850.00us   36.36ms    1.21s    92.69%
    Req/Sec    14.77k     1.48k   17.29k    63.64%
  Latency Distribution
     50%   86.00us
     75%   11.40ms
     90%   33.73ms
     99%    1.19s
  16148 requests in 1.10s, 2.46MB read
  Socket errors: connect 0, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 16148
Requests/sec:  14694.25
Transfer/sec:      2.24MB
"""


# --------------------------------------------------------------------------- wrk

def test_parse_wrk_reads_every_figure() -> None:
    r = wrk.parse(WRK_OK)
    assert (r.threads, r.connections, r.requests) == (1, 100, 37745)
    assert r.duration == pytest.approx(2.0)
    assert r.bytes_read == pytest.approx(13.64 * 1024 ** 2)
    assert r.rps == pytest.approx(18833.18)
    assert r.latency == {50: 5.55, 75: 17.43, 90: 34.54, 99: 75.48}
    assert r.non_2xx == 0 and r.socket_errors == {}


def test_parse_wrk_units_errors_and_non_2xx() -> None:
    r = wrk.parse(WRK_BAD)
    assert r.latency[50] == pytest.approx(0.086) and r.latency[99] == pytest.approx(1190.0)
    assert r.non_2xx == 16148
    assert r.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 7}
    reasons = wrk.judge(r, 160)
    assert any("non-2xx/3xx 16148" in x for x in reasons)
    assert any("socket errors read 3, timeout 7" in x for x in reasons)


def test_judge_wrk_bytes_and_empty_output() -> None:
    r = wrk.parse(WRK_OK)
    size = round(r.bytes_read / r.requests)  # 379 bytes a response
    assert wrk.judge(r, size) == []
    assert any("expected about" in x for x in wrk.judge(r, size + 40))
    assert any("no request" in x for x in wrk.judge(wrk.parse("garbage"), size))


# --------------------------------------------------------------------------- procstats

#: A process family for the procstats tests: ``family.py DEPTH WIDTH [MB]``
#: prints its PID, then starts WIDTH children one level down and waits for
#: them; at depth 0 it burns CPU, or with MB > 0 allocates that many MB,
#: frees them, says "freed" and sleeps.  Every member ends by itself after a
#: minute; the tests end them sooner, each by its PID.
FAMILY = """\
import os, subprocess, sys, time
depth, width = int(sys.argv[1]), int(sys.argv[2])
mb = int(sys.argv[3]) if len(sys.argv) > 3 else 0
os.write(1, b"%d\\n" % os.getpid())  # one write: the members share the pipe
end = time.monotonic() + 60
if depth:
    kids = [subprocess.Popen([sys.executable, __file__, str(depth - 1), "1"])
            for _ in range(width)]
    for kid in kids:
        kid.wait()
elif mb:
    block = b"x" * (mb << 20)
    del block
    os.write(1, b"freed\\n")
    time.sleep(60)
else:
    while time.monotonic() < end:
        pass
"""


class Family:
    """The members of one FAMILY, by PID and start time (psutil.Process)."""

    def __init__(self, tmp_path: Path, depth: int, width: int = 1, mb: int = 0) -> None:
        script = tmp_path / "family.py"
        script.write_text(FAMILY)
        self.popen = subprocess.Popen([sys.executable, str(script), str(depth), str(width),
                                       str(mb)], stdout=subprocess.PIPE, text=True)
        self.members: list[psutil.Process] = []
        try:
            for _ in range(1 + width * depth):  # the top one, then `width` chains
                self.members.append(psutil.Process(int(self.popen.stdout.readline())))
        except BaseException:
            self.end()
            raise

    def wait_line(self, text: str) -> None:
        assert self.popen.stdout.readline().strip() == text

    def end(self) -> None:
        for member in reversed(self.members):
            procstats.kill(member)
        self.popen.wait(10)
        self.popen.stdout.close()


def wait_cpu(pid: int, seconds: float, timeout: float = 30.0) -> float:
    """Poll until ``pid`` has used ``seconds`` of CPU (hang protection only)."""
    deadline = time.monotonic() + timeout
    while (used := procstats.cpu_seconds(pid)) < seconds:
        assert time.monotonic() < deadline, f"{pid} used only {used:.2f} CPU s"
        time.sleep(0.05)
    return used


def test_cpu_seconds_of_a_busy_process_grow(tmp_path: Path) -> None:
    family = Family(tmp_path, depth=0)
    try:
        pid = family.popen.pid
        first = wait_cpu(pid, 0.2)
        assert wait_cpu(pid, first + 0.2) > first
        times = psutil.Process(pid).cpu_times()
        assert procstats.cpu_seconds(pid) >= times.user + times.system
    finally:
        family.end()


def test_tree_sums_children_and_descendants(tmp_path: Path) -> None:
    two = Family(tmp_path, depth=1, width=2)  # a waiting parent, two burning children
    try:
        parent, *kids = two.members
        assert {p.pid for p in procstats.tree(parent.pid, recursive=False)} == \
            {parent.pid, *(k.pid for k in kids)}
        for kid in kids:
            wait_cpu(kid.pid, 0.3)
        parts = sum(procstats.cpu_seconds(p) for p in two.members)
        assert procstats.tree_cpu_seconds(parent.pid, recursive=False) >= parts >= 0.6
    finally:
        two.end()
    chain = Family(tmp_path, depth=2)  # parent -> child -> burning grandchild
    try:
        parent, child, grandchild = chain.members
        assert [p.pid for p in procstats.tree(parent.pid)] == [p.pid for p in chain.members]
        assert {p.pid for p in procstats.tree(parent.pid, recursive=False)} == \
            {parent.pid, child.pid}
        burnt = wait_cpu(grandchild.pid, 0.3)
        everyone = procstats.tree_cpu_seconds(parent.pid)
        near = procstats.tree_cpu_seconds(parent.pid, recursive=False)
        assert everyone - near >= burnt - 0.05, (everyone, near, burnt)
    finally:
        chain.end()


def test_a_process_that_is_gone_counts_as_nothing(tmp_path: Path) -> None:
    popen = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = psutil.Process(popen.pid)
    deadline = time.monotonic() + 20
    while proc.status() != psutil.STATUS_ZOMBIE:  # exited, not yet reaped
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not procstats.alive(proc)
    assert procstats.num_fds(proc) == 0 and procstats.peak_rss_kb(proc) == 0
    procstats.cpu_seconds(proc)  # a zombie's own times: readable, no exception
    popen.wait()
    for pid in (popen.pid, proc):
        assert procstats.cpu_seconds(pid) == 0.0
        assert procstats.tree(pid) == [] and procstats.tree_cpu_seconds(pid) == 0.0
        assert procstats.rss_kb(pid) == 0 and procstats.peak_rss_kb(pid) == 0
        assert procstats.num_fds(pid) == 0 and procstats.established([pid], 80) == 0
    assert procstats.process(popen.pid) is None
    assert not procstats.alive(proc)
    procstats.kill(proc)  # nothing to kill, no exception


def test_peak_rss_is_at_least_rss_and_keeps_a_freed_peak(tmp_path: Path) -> None:
    family = Family(tmp_path, depth=0, mb=100)
    try:
        family.wait_line("freed")
        pid = family.popen.pid
        rss, peak = procstats.rss_kb(pid), procstats.peak_rss_kb(pid)
        assert rss > 0 and peak >= rss
        assert peak >= 100 * 1024, peak
        assert rss < peak - 50 * 1024, (rss, peak)  # the 100 MB went back; the peak stays
        assert procstats.rss_kb(pid) == psutil.Process(pid).memory_info().rss // 1024
    finally:
        family.end()


def test_num_fds_counts_open_descriptors(tmp_path: Path) -> None:
    before = procstats.num_fds(os.getpid())
    with open(tmp_path / "f", "w"):
        assert procstats.num_fds(os.getpid()) == before + 1
    assert procstats.num_fds(os.getpid()) == before


def test_established_counts_accepted_connections_only() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in range(2)]  # the third stays queued
        try:
            assert procstats.established([os.getpid(), os.getpid()], port) == 2
            accepted.pop().close()
            assert procstats.established([os.getpid()], port) == 1
        finally:
            for sock in clients + accepted:
                sock.close()


def test_machine_busy_seconds_include_a_busy_child(tmp_path: Path) -> None:
    family = Family(tmp_path, depth=0)
    try:
        pid = family.popen.pid
        busy0, cpu0 = procstats.machine_busy_seconds(), procstats.cpu_seconds(pid)
        cpu1 = wait_cpu(pid, cpu0 + 0.5)
        busy1 = procstats.machine_busy_seconds()
        assert busy1 - busy0 >= 0.5 * (cpu1 - cpu0), (busy1 - busy0, cpu1 - cpu0)
    finally:
        family.end()


# --------------------------------------------------------------------------- configs

def test_filler_body_has_the_exact_size_and_no_special_characters() -> None:
    for size in (5, 48, 240, 1000):
        body = configs.filler_body(size)
        assert len(body.encode()) == size
        assert not any(ch in body for ch in "$'\"\\{};")


def test_haproxy_config() -> None:
    text = configs.haproxy_config(62101, [62002, 62003, 62004, 62005], maxconn=4096)
    for line in ("nbthread 1", "mode http", "http-reuse always", "balance roundrobin",
                 "bind 127.0.0.1:62101", "maxconn 4096", "timeout client",
                 "server b4 127.0.0.1:62005"):
        assert line in text
    assert "\n    log " not in text  # no logging


def test_nginx_config() -> None:
    body = configs.filler_body(240)
    lb = configs.nginx_config("/tmp/x", 62102, None, [62002, 62003], body)
    for line in ("daemon off;", "worker_processes 1;", "keepalive 64;",
                 "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                 "worker_connections 8192;", "access_log off;", "pid /tmp/x/nginx.pid;",
                 "error_log /tmp/x/nginx-error.log", "listen 127.0.0.1:62102",
                 "server 127.0.0.1:62003;"):
        assert line in lb
    assert "return 200" not in lb
    ref = configs.nginx_config("/tmp/x", None, 62103, [62002], body)
    assert f"return 200 '{body}';" in ref and "upstream" not in ref
    with pytest.raises(ValueError):
        configs.nginx_config("/tmp/x", 1, None, [2], "costs $5")
    with pytest.raises(ValueError):
        configs.nginx_config("/tmp/x", None, None, [2], body)


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if Path(p).exists()), None)


@pytest.mark.skipif(not _tool("haproxy"), reason="haproxy not installed")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(configs.haproxy_config(62101, [62002, 62003]))
    proc = subprocess.run([_tool("haproxy"), "-c", "-f", str(cfg)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(not _tool("nginx"), reason="nginx not installed")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    cfg = tmp_path / "nginx.conf"
    cfg.write_text(configs.nginx_config(str(tmp_path), 62102, 62103, [62002, 62003],
                                      configs.filler_body(240)))
    proc = subprocess.run([_tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(cfg),
                           "-e", str(tmp_path / "error.log")], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- workloads

def test_workload_names_are_the_report_labels() -> None:
    assert [w.name for w in (wl.ab_run(), wl.ab_run(keepalive=True), wl.wrk_run(),
                             wl.seed_level(10), wl.direct("wrk"), wl.direct("ab"))] == [
        "ab c=100", "ab -k c=100", "wrk -k c=100", "seed ab c=10", "direct wrk -k c=100",
        "direct ab -k c=100"]
    assert str(wl.seed_level(1000)) == "seed ab c=1000"
    assert wl.seed_level(10) == Workload("ab", False, 10, "seed")  # a value, usable as a key
    assert wl.seed_level(10).phase == "seed" and wl.ab_run().phase == "main"


@pytest.mark.parametrize("tool, keepalive, concurrency, phase", [
    ("curl", False, 100, "main"), ("ab", False, 0, "main"), ("wrk", False, 100, "main"),
    ("ab", True, 10, "seed"), ("wrk", True, 10, "seed"), ("ab", False, 100, "direct"),
    ("ab", False, 100, "warm-up")])
def test_impossible_workloads_are_refused(tool: str, keepalive: bool, concurrency: int,
                                          phase: str) -> None:
    with pytest.raises(ValueError):
        Workload(tool, keepalive, concurrency, phase)


def test_a_workload_sizes_with_its_own_tools_request() -> None:
    assert wl.ab_run().request("127.0.0.1", 80, "/p") == \
        b"GET /p HTTP/1.0\r\nHost: 127.0.0.1:80\r\nUser-Agent: ApacheBench/2.3\r\n" \
        b"Accept: */*\r\n\r\n"
    assert wl.seed_level(10).request("h", 1, "/p") == wl.ab_run().request("h", 1, "/p")
    keep = wl.ab_run(keepalive=True).request("h", 1, "/p")
    assert keep.startswith(b"GET /p HTTP/1.0\r\nConnection: Keep-Alive\r\n")
    assert wl.direct("ab").request("h", 1, "/p") == keep
    assert wl.wrk_run().request("h", 1, "/p") == b"GET /p HTTP/1.1\r\nHost: h:1\r\n\r\n"
    assert wl.direct("wrk").request("h", 1, "/p") == wl.wrk_run().request("h", 1, "/p")


def test_plan_interleaves_and_rotates_the_balancers() -> None:
    targets = ["async backend", "thread backend", "gservers", "haproxy", "nginx return-200"]
    steps = wl.plan(targets, 2, [1, 10], 2000, 1000, with_wrk=True)
    first = [(s.target, s.workload.name, s.requests) for s in steps if s.round == 1]
    assert first == [
        ("gservers", "ab c=100", 2000), ("haproxy", "ab c=100", 2000),
        ("gservers", "ab -k c=100", 2000), ("haproxy", "ab -k c=100", 2000),
        ("gservers", "wrk -k c=100", 0), ("haproxy", "wrk -k c=100", 0),
        ("gservers", "seed ab c=1", 1000), ("haproxy", "seed ab c=1", 1000),
        ("thread backend", "seed ab c=1", 1000),
        ("gservers", "seed ab c=10", 1000), ("haproxy", "seed ab c=10", 1000),
        ("thread backend", "seed ab c=10", 1000),
        ("async backend", "direct wrk -k c=100", 0),
        ("nginx return-200", "direct wrk -k c=100", 0)]
    second = [(s.target, s.workload.name) for s in steps if s.round == 2]
    assert second[:2] == [("haproxy", "ab c=100"), ("gservers", "ab c=100")]
    assert second[-2:] == [("nginx return-200", "direct wrk -k c=100"),
                           ("async backend", "direct wrk -k c=100")]
    without = wl.plan(targets, 1, [1], 2000, 1000, with_wrk=False)
    assert not any(s.workload.tool == "wrk" for s in without)
    assert [(s.workload.name, s.requests) for s in without if s.workload.phase == "direct"] \
        == [("direct ab -k c=100", 2000)] * 2


# ------------------------------------------------------------------ medians, ratios, targets

AB, AB_K, DIRECT = wl.ab_run(), wl.ab_run(keepalive=True), wl.direct("wrk")


def run(target: str, workload: Workload, rps: float, *, cpu_s: float = 0.0,
        complete: int = 1000, p99: float = 10.0, reasons: list[str] | None = None,
        rss_kb: int = 0) -> Run:
    return Run(target, workload, 1, complete, complete, rps, 1.0, p99, 300,
               reasons or [], server_cpu=cpu_s, backend_cpu=cpu_s * 2, peak_rss_kb=rss_kb)


def test_median_and_ratio() -> None:
    assert stats.median([3, None, 1, 2]) == 2
    assert stats.median([None]) is None
    assert stats.ratio(3, 4) == 0.75
    assert stats.ratio(None, 4) is None and stats.ratio(3, 0) is None


def test_summarize_leaves_invalid_runs_out() -> None:
    runs = [run("gservers", AB, 100, cpu_s=0.05, rss_kb=2048),
            run("gservers", AB, 300, cpu_s=0.07, rss_kb=4096),
            run("gservers", AB, 200, cpu_s=0.06, rss_kb=3072),
            run("gservers", AB, 9999, reasons=["failed 3"])]
    s = stats.summarize(runs)[("gservers", AB)]
    assert (s.runs, s.invalid, s.rps) == (4, 1, 200)
    assert s.cpu_us == pytest.approx(60.0) and s.backend_cpu_us == pytest.approx(120.0)
    assert s.peak_rss_mb == pytest.approx(3.0)
    assert "**INVALID**" in report.medians_table(stats.summarize(runs))
    assert stats.invalid_lines(runs) == ["INVALID: round 1 gservers ab c=100: failed 3"]


def _fleet(g_plain: float, g_keep: float, g_seed: float, g_p99: float) -> list[Run]:
    runs = [run("gservers", AB, g_plain, cpu_s=0.05),
            run("haproxy", AB, 1000, cpu_s=0.02),
            run("nginx", AB, 500, cpu_s=0.02),
            run("gservers", AB_K, g_keep, cpu_s=0.02),
            run("haproxy", AB_K, 1000),
            run("async backend", DIRECT, 800),
            run("nginx return-200", DIRECT, 1000)]
    for c in (1, 10, 1000):
        runs.append(run("gservers", wl.seed_level(c), g_seed if c > 1 else 1, p99=g_p99))
        runs.append(run("haproxy", wl.seed_level(c), 9000, p99=20.0))
        runs.append(run("thread backend", wl.seed_level(c), 3500))
    return runs


def test_targets_met_and_missed() -> None:
    idle = IdleResult(10000, 10000, 10000, 10000, 30000, 90 * 1024, 95 * 1024, 1.5)
    met = check_targets(stats.summarize(_fleet(900, 800, 7000, 15.0)), [1, 10, 1000],
                              DIRECT, idle)
    assert [t.met for t in met] == [True] * 9, report.targets_table(met)
    assert "0.90x (900 vs 1000 req/s)" in met[0].measured
    assert met[5].measured == "min 7000 req/s (c=10)"  # c=1 is not held to 6000

    small = IdleResult(10000, 10000, 9000, 9000, 30000, 50 * 1024, 60 * 1024, 1.5)
    missed = check_targets(stats.summarize(_fleet(500, 100, 5000, 30.0)), [1, 10, 1000],
                                 DIRECT, small)
    verdicts = {t.name: t.met for t in missed}
    assert verdicts["lb throughput vs haproxy, ab c=100 (no keep-alive)"] is False
    assert verdicts["seed sweep through lb, every c >= 10"] is False
    assert verdicts["seed sweep p99 at c=1000, lb vs haproxy"] is False
    assert verdicts["lb RSS holding 10000 idle connections"] is False  # not all held
    assert "**NO**" in report.targets_table(missed)


def test_targets_without_haproxy_or_nginx_are_not_applicable() -> None:
    runs = [r for r in _fleet(900, 800, 7000, 15.0)
            if r.target not in ("haproxy", "nginx", "nginx return-200")]
    targets = check_targets(stats.summarize(runs), [1, 10, 1000],
                                  DIRECT, None)
    by_name = {t.name: t for t in targets}
    assert by_name["lb throughput vs haproxy, ab c=100 (no keep-alive)"].met is None
    assert by_name["lb throughput vs haproxy, ab c=100 (no keep-alive)"].measured == \
        "haproxy not run"
    assert by_name["async backend vs nginx return-200, direct wrk -k c=100"].met is None
    assert by_name["lb CPU per request, ab c=100"].met is True  # 50 µs
    assert by_name["lb RSS holding idle connections"].met is None


def test_ratios_table_and_report() -> None:
    runs = _fleet(900, 800, 7000, 15.0)
    summary = stats.summarize(runs)
    table = report.ratios_table(summary)
    assert "| ab c=100 | 900 | 1000 | 500 | 0.90x | 1.80x |" in table
    targets = check_targets(summary, [1, 10, 1000], DIRECT, None)
    md = report.markdown(runs, summary, targets, {"machine": "test"}, ["a note"], None)
    assert "## Targets" in md and "- a note" in md and "- machine: test" in md
    data = report.to_json(runs, summary, targets, {}, [], None)
    assert len(data["runs"]) == len(runs) and data["runs"][0]["valid"] is True
    json.dumps(data)


# --------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("flag, value", [("--lb-port", "70000"), ("--backend-ports", "1,2,x"),
                                         ("--only", "traefik"), ("--pause", "-1")])
def test_bad_options_are_one_line_errors(flag: str, value: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "loadtests.benchmark", flag, value],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert flag in proc.stderr and "Traceback" not in proc.stderr



# --------------------------------------------------------------------------- the HTTPS row

def test_plan_adds_the_https_row_rotated() -> None:
    targets = ["gservers", "haproxy", "gservers https", "haproxy https"]
    steps = wl.plan(targets, 2, [1], 2000, 1000, with_wrk=False, https_requests=500)
    https = [(s.round, s.target, s.workload.name, s.requests) for s in steps
             if s.workload.phase == "https"]
    assert https == [
        (1, "gservers https", "https ab c=100", 500), (1, "haproxy https", "https ab c=100", 500),
        (1, "gservers https", "https ab -k c=100", 500),
        (1, "haproxy https", "https ab -k c=100", 500),
        (2, "haproxy https", "https ab c=100", 500), (2, "gservers https", "https ab c=100", 500),
        (2, "haproxy https", "https ab -k c=100", 500),
        (2, "gservers https", "https ab -k c=100", 500)]
    assert not [s for s in wl.plan(targets, 1, [1], 2000, 1000, False)
                if s.workload.phase == "https"]
    with pytest.raises(ValueError):
        Workload("wrk", True, 100, "https")


def test_https_runs_are_compared_under_the_balancers_names() -> None:
    assert wl.HTTPS_TARGETS == {"gservers https": "gservers", "haproxy https": "haproxy",
                                "nginx https": "nginx"}
    plain, tls = wl.https_run(False), wl.https_run(True)
    summary = stats.summarize([run("gservers", plain, 500.0), run("haproxy", plain, 1000.0),
                               run("gservers", tls, 2000.0), run("haproxy", tls, 4000.0)])
    table = report.ratios_table(summary)
    assert "| https ab c=100 | 500 | 1000 | - | 0.50x |" in table
    assert "| https ab -k c=100 | 2000 | 4000 | - | 0.50x |" in table


@pytest.mark.skipif(not (_tool("haproxy") and _tool("nginx") and _tool("openssl")),
                    reason="haproxy, nginx or openssl not installed")
def test_the_https_row_certificate_and_configs_are_accepted(tmp_path: Path) -> None:
    import ssl
    tmp_path.chmod(0o755)
    cert, key, both = fleet.make_certificate(str(_tool("openssl")), str(tmp_path / "tls"))
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(both)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(configs.haproxy_tls_config(62111, 62112, [62002, 62003], both))
    assert f"bind 127.0.0.1:62111 ssl crt {both} alpn http/1.1" in cfg.read_text()
    proc = subprocess.run([_tool("haproxy"), "-c", "-f", str(cfg)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = tmp_path / "nginx.conf"
    cfg.write_text(configs.nginx_tls_config(str(tmp_path), 62113, 62114, [62002], cert, key,
                                            configs.filler_body(64)))
    assert "listen 127.0.0.1:62113 ssl" in cfg.read_text()
    proc = subprocess.run([_tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(cfg),
                           "-e", str(tmp_path / "error.log")], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tiny_benchmark_run_gservers_only(tmp_path: Path) -> None:
    ports = free_ports(6)
    argv = [sys.executable, "-m", "loadtests.benchmark", "--quick", "--only",
            "gservers", "--no-install", "--requests", "300", "--wrk-duration", "1",
            "--levels", "1,10", "--seed-requests", "100", "--idle-connections", "200",
            "--pause", "0.05", "--backend-ports", ",".join(map(str, ports[:4])),
            "--thread-port", str(ports[4]), "--lb-port", str(ports[5]), "--out", str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "benchmark.json").read_text())
    runs = data["runs"]
    assert runs and all(r["valid"] for r in runs)
    seen = {(r["target"], r["workload"]) for r in runs}
    assert {("gservers", "ab c=100"), ("gservers", "ab -k c=100"), ("gservers", "seed ab c=10"),
            ("thread backend", "seed ab c=1"), ("gservers", "https ab c=100"),
            ("gservers", "https ab -k c=100"),
            ("large-file backend", "large-file ab c=10")} <= seen
    large = [r for r in runs if r["workload"] == "large-file ab c=10"]
    assert [(r["complete"], r["valid"]) for r in large] == [(20, True)]  # 20 x 10 MiB, whole
    assert not any(r["target"] in ("haproxy", "nginx") for r in runs)
    lb_runs = [r for r in runs if r["target"] == "gservers"]
    assert all(r["server_cpu"] > 0 or r["complete"] <= 300 for r in lb_runs)
    assert all(r["peak_rss_kb"] > 0 and r["backend_cpu"] is not None for r in lb_runs)
    assert data["idle"]["accepted"] == 200 and data["idle"]["rss_kb"] > 0
    assert len(data["targets"]) == 9
    assert "## Targets" in proc.stdout and "haproxy not run" in proc.stdout
    for name in ("benchmark.md", "benchmark.png"):
        assert (tmp_path / name).stat().st_size > 0
    for port in ports:
        assert wait_port_closed(port), f"port {port} still served after the benchmark"
