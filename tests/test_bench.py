# tests/test_bench.py -- the comparison benchmark: its pure parts and one tiny run.
#
# Strategy: loadtests/bench.py is pure, so it is tested on saved wrk output,
# made-up /proc text and hand-built runs whose medians, ratios and target
# verdicts are known.  The rendered haproxy/nginx configs are also checked by
# the real programs' own config test when they are installed (skipped when
# not).  One end-to-end run of scripts/benchmark with a tiny workload and
# --only gservers --no-install (no haproxy/nginx needed) on free ports checks
# the files it writes and that it stopped every server it started.
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests import bench
from loadtests.bench import IdleResult, Run
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
    r = bench.parse_wrk(WRK_OK)
    assert (r.threads, r.connections, r.requests) == (1, 100, 37745)
    assert r.duration == pytest.approx(2.0)
    assert r.bytes_read == pytest.approx(13.64 * 1024 ** 2)
    assert r.rps == pytest.approx(18833.18)
    assert r.latency == {50: 5.55, 75: 17.43, 90: 34.54, 99: 75.48}
    assert r.non_2xx == 0 and r.socket_errors == {}


def test_parse_wrk_units_errors_and_non_2xx() -> None:
    r = bench.parse_wrk(WRK_BAD)
    assert r.latency[50] == pytest.approx(0.086) and r.latency[99] == pytest.approx(1190.0)
    assert r.non_2xx == 16148
    assert r.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 7}
    reasons = bench.judge_wrk(r, 160)
    assert any("non-2xx/3xx 16148" in x for x in reasons)
    assert any("socket errors read 3, timeout 7" in x for x in reasons)


def test_judge_wrk_bytes_and_empty_output() -> None:
    r = bench.parse_wrk(WRK_OK)
    size = round(r.bytes_read / r.requests)  # 379 bytes a response
    assert bench.judge_wrk(r, size) == []
    assert any("expected about" in x for x in bench.judge_wrk(r, size + 40))
    assert any("no request" in x for x in bench.judge_wrk(bench.parse_wrk("garbage"), size))


# --------------------------------------------------------------------------- /proc text

def test_proc_text_parsers() -> None:
    stat = "4242 (python -m lb) S 17 4242 4242 0 -1 4194560 9 0 0 0 250 75 0 0 20 0 1 0 99 1 1"
    assert bench.stat_cpu_seconds(stat, 100) == pytest.approx(3.25)
    assert bench.stat_ppid(stat) == 17
    status = "Name:\tpython\nVmHWM:\t   40960 kB\nVmRSS:\t   36864 kB\n"
    assert bench.status_kb(status, "VmHWM") == 40960
    assert bench.status_kb(status, "VmRSS") == 36864
    assert bench.status_kb(status, "VmSwap") == 0
    proc_stat = "cpu  100 5 50 1000 20 3 2 0 7 1\ncpu0 50 2 25 500 10 1 1 0 3 0\n"
    assert bench.busy_seconds(proc_stat, 100) == pytest.approx((100 + 5 + 50 + 3 + 2) / 100)
    with pytest.raises(ValueError):
        bench.busy_seconds("intr 1 2 3\n")


# --------------------------------------------------------------------------- configs

def test_filler_body_has_the_exact_size_and_no_special_characters() -> None:
    for size in (5, 48, 240, 1000):
        body = bench.filler_body(size)
        assert len(body.encode()) == size
        assert not any(ch in body for ch in "$'\"\\{};")


def test_haproxy_config() -> None:
    text = bench.haproxy_config(62101, [62002, 62003, 62004, 62005], maxconn=4096)
    for line in ("nbthread 1", "mode http", "http-reuse always", "balance roundrobin",
                 "bind 127.0.0.1:62101", "maxconn 4096", "timeout client",
                 "server b4 127.0.0.1:62005"):
        assert line in text
    assert "\n    log " not in text  # no logging


def test_nginx_config() -> None:
    body = bench.filler_body(240)
    lb = bench.nginx_config("/tmp/x", 62102, None, [62002, 62003], body)
    for line in ("daemon off;", "worker_processes 1;", "keepalive 64;",
                 "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                 "worker_connections 8192;", "access_log off;", "pid /tmp/x/nginx.pid;",
                 "error_log /tmp/x/nginx-error.log", "listen 127.0.0.1:62102",
                 "server 127.0.0.1:62003;"):
        assert line in lb
    assert "return 200" not in lb
    ref = bench.nginx_config("/tmp/x", None, 62103, [62002], body)
    assert f"return 200 '{body}';" in ref and "upstream" not in ref
    with pytest.raises(ValueError):
        bench.nginx_config("/tmp/x", 1, None, [2], "costs $5")
    with pytest.raises(ValueError):
        bench.nginx_config("/tmp/x", None, None, [2], body)


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if Path(p).exists()), None)


@pytest.mark.skipif(not _tool("haproxy"), reason="haproxy not installed")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(bench.haproxy_config(62101, [62002, 62003]))
    proc = subprocess.run([_tool("haproxy"), "-c", "-f", str(cfg)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(not _tool("nginx"), reason="nginx not installed")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    cfg = tmp_path / "nginx.conf"
    cfg.write_text(bench.nginx_config(str(tmp_path), 62102, 62103, [62002, 62003],
                                      bench.filler_body(240)))
    proc = subprocess.run([_tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(cfg),
                           "-e", str(tmp_path / "error.log")], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------ medians, ratios, targets

def run(target: str, workload: str, rps: float, *, cpu_s: float = 0.0, complete: int = 1000,
        p99: float = 10.0, reasons: list[str] | None = None, rss_kb: int = 0) -> Run:
    return Run(target, workload, 1, "ab", False, 100, complete, complete, rps, 1.0, p99, 300,
               reasons or [], server_cpu=cpu_s, backend_cpu=cpu_s * 2, peak_rss_kb=rss_kb)


def test_median_and_ratio() -> None:
    assert bench.median([3, None, 1, 2]) == 2
    assert bench.median([None]) is None
    assert bench.ratio(3, 4) == 0.75
    assert bench.ratio(None, 4) is None and bench.ratio(3, 0) is None


def test_summarize_leaves_invalid_runs_out() -> None:
    runs = [run("gservers", "ab c=100", 100, cpu_s=0.05, rss_kb=2048),
            run("gservers", "ab c=100", 300, cpu_s=0.07, rss_kb=4096),
            run("gservers", "ab c=100", 200, cpu_s=0.06, rss_kb=3072),
            run("gservers", "ab c=100", 9999, reasons=["failed 3"])]
    s = bench.summarize(runs)[("gservers", "ab c=100")]
    assert (s.runs, s.invalid, s.rps) == (4, 1, 200)
    assert s.cpu_us == pytest.approx(60.0) and s.backend_cpu_us == pytest.approx(120.0)
    assert s.peak_rss_mb == pytest.approx(3.0)
    assert "**INVALID**" in bench.medians_table(bench.summarize(runs))
    assert bench.invalid_lines(runs) == ["INVALID: round 1 gservers ab c=100: failed 3"]


def _fleet(g_plain: float, g_keep: float, g_seed: float, g_p99: float) -> list[Run]:
    runs = [run("gservers", "ab c=100", g_plain, cpu_s=0.05),
            run("haproxy", "ab c=100", 1000, cpu_s=0.02),
            run("nginx", "ab c=100", 500, cpu_s=0.02),
            run("gservers", "ab -k c=100", g_keep, cpu_s=0.02),
            run("haproxy", "ab -k c=100", 1000),
            run("async backend", "direct wrk -k c=100", 800),
            run("nginx return-200", "direct wrk -k c=100", 1000)]
    for c in (1, 10, 1000):
        runs.append(run("gservers", f"seed ab c={c}", g_seed if c > 1 else 1, p99=g_p99))
        runs.append(run("haproxy", f"seed ab c={c}", 9000, p99=20.0))
        runs.append(run("thread backend", f"seed ab c={c}", 3500))
    return runs


def test_targets_met_and_missed() -> None:
    idle = IdleResult(10000, 10000, 10000, 10000, 30000, 90 * 1024, 95 * 1024, 1.5)
    met = bench.check_targets(bench.summarize(_fleet(900, 800, 7000, 15.0)), [1, 10, 1000],
                              "direct wrk -k c=100", idle)
    assert [t.met for t in met] == [True] * 9, bench.targets_table(met)
    assert "0.90x (900 vs 1000 req/s)" in met[0].measured
    assert met[5].measured == "min 7000 req/s (c=10)"  # c=1 is not held to 6000

    small = IdleResult(10000, 10000, 9000, 9000, 30000, 50 * 1024, 60 * 1024, 1.5)
    missed = bench.check_targets(bench.summarize(_fleet(500, 100, 5000, 30.0)), [1, 10, 1000],
                                 "direct wrk -k c=100", small)
    verdicts = {t.name: t.met for t in missed}
    assert verdicts["lb throughput vs haproxy, ab c=100 (no keep-alive)"] is False
    assert verdicts["seed sweep through lb, every c >= 10"] is False
    assert verdicts["seed sweep p99 at c=1000, lb vs haproxy"] is False
    assert verdicts["lb RSS holding 10000 idle connections"] is False  # not all held
    assert "**NO**" in bench.targets_table(missed)


def test_targets_without_haproxy_or_nginx_are_not_applicable() -> None:
    runs = [r for r in _fleet(900, 800, 7000, 15.0)
            if r.target not in ("haproxy", "nginx", "nginx return-200")]
    targets = bench.check_targets(bench.summarize(runs), [1, 10, 1000],
                                  "direct wrk -k c=100", None)
    by_name = {t.name: t for t in targets}
    assert by_name["lb throughput vs haproxy, ab c=100 (no keep-alive)"].met is None
    assert by_name["lb throughput vs haproxy, ab c=100 (no keep-alive)"].measured == \
        "haproxy not run"
    assert by_name["async backend vs nginx return-200, direct wrk -k c=100"].met is None
    assert by_name["lb CPU per request, ab c=100"].met is True  # 50 µs
    assert by_name["lb RSS holding idle connections"].met is None


def test_ratios_table_and_report() -> None:
    runs = _fleet(900, 800, 7000, 15.0)
    summary = bench.summarize(runs)
    table = bench.ratios_table(summary)
    assert "| ab c=100 | 900 | 1000 | 500 | 0.90x | 1.80x |" in table
    targets = bench.check_targets(summary, [1, 10, 1000], "direct wrk -k c=100", None)
    md = bench.markdown(runs, summary, targets, {"machine": "test"}, ["a note"], None)
    assert "## Targets" in md and "- a note" in md and "- machine: test" in md
    data = bench.to_json(runs, summary, targets, {}, [], None)
    assert len(data["runs"]) == len(runs) and data["runs"][0]["valid"] is True
    json.dumps(data)


# --------------------------------------------------------------------------- end to end



def test_tiny_benchmark_run_gservers_only(tmp_path: Path) -> None:
    ports = free_ports(6)
    argv = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--quick", "--only",
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
            ("thread backend", "seed ab c=1")} <= seen
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
