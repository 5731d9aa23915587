# scripts/benchmark.py -- the gservers balancer against haproxy and nginx, honestly.
#
# Strategy: run by scripts/benchmark, which has installed what it could of
# haproxy, nginx-light and wrk; this file starts every server on 127.0.0.1 as a child process
# remembered by PID (four async backends, a thread-model backend, the gservers
# lb, haproxy and nginx over the same four backends, and an nginx
# ``return 200`` reference), then runs the workloads interleaved across the
# balancers, round after round: ab with and without -k, wrk keep-alive, the
# seed sweep (ab -n 1000 at c=1..1000), and a direct backend-vs-nginx
# reference.  Every run is judged (loadtests.ab.judge / bench.judge_wrk) and
# measured with psutil through loadtests/procstats.py (utime+stime of the
# target's process tree before and after, and of the backends; VmHWM).  At
# the end the lb holds 10,000 idle client connections while its VmRSS is
# read.  The pure parts (parsing, medians, targets, configs, tables) live in
# loadtests/bench.py; this file owns processes, sockets and files, and stops
# every process it started by PID on the way out -- on success, error or
# Ctrl-C alike.
from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import psutil

from gservers.net.listen import raise_nofile_limit
from loadtests import ab, bench, procstats
from loadtests.topology import wait_healthy, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROG = "scripts/benchmark"
HOST = "127.0.0.1"
PATH = "/page.html"
PAGE = os.path.join(ROOT, "gservers", "site", "page.html")
TICKS = os.sysconf("SC_CLK_TCK")


class SetupError(Exception):
    """A server or tool could not be set up; the message says which and why."""


# --------------------------------------------------------------------------- processes

def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


@dataclass
class Server:
    """A server process we started (and the processes it started)."""

    name: str
    port: int
    popen: subprocess.Popen
    log_path: str
    #: pid -> the process (psutil keeps its start time, so stop() never
    #: signals a PID the kernel has since given to another process)
    known: dict[int, psutil.Process] = field(default_factory=dict)

    def pids(self) -> list[psutil.Process]:
        """The live process tree (the server and every process below it);
        every member is remembered for stop()."""
        if self.popen.poll() is not None:
            return []
        procs = procstats.tree(self.popen.pid)
        for proc in procs:
            self.known.setdefault(proc.pid, proc)
        return procs

    def cpu(self) -> float:
        """utime + stime seconds of the live tree."""
        return sum(procstats.cpu_seconds(proc) for proc in self.pids())

    def rss_kb(self) -> int:
        """VmRSS of the tree, in KiB."""
        return sum(procstats.rss_kb(proc) for proc in self.pids())

    def peak_rss_kb(self) -> int:
        """VmHWM (peak RSS) summed over the tree, in KiB."""
        return sum(procstats.peak_rss_kb(proc) for proc in self.pids())

    def fds(self) -> int:
        """Open descriptors of the tree."""
        return sum(procstats.num_fds(proc) for proc in self.pids())

    def log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(_read(self.log_path).strip().splitlines()[-lines:]) or "(no output)"
        except OSError:
            return "(no log)"


class Fleet:
    """Every server of the run; stops them all by PID."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.servers: list[Server] = []

    def start(self, name: str, port: int, argv: list[str]) -> Server:
        """Start ``argv`` and wait until GET /health on ``port`` answers 200."""
        if not wait_port(HOST, port):  # waits out TIME_WAIT of an earlier run
            raise SetupError(f"{name}: port {port} is already in use; free it or choose "
                             f"other ports (see --help)")
        log_path = os.path.join(self.log_dir, f"{name}.log")
        with open(log_path, "w") as log:
            popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT,
                                     start_new_session=True)
        server = Server(name, port, popen, log_path)
        self.servers.append(server)
        if not wait_healthy(port, popen, timeout=30):
            raise SetupError(f"{name} on port {port} did not come up:\n{server.log_tail()}")
        server.pids()
        return server

    def stop(self) -> None:
        """SIGTERM each server (last started first), wait, SIGKILL what is left of
        the processes we started or they started (checked by start time)."""
        for server in reversed(self.servers):
            server.pids()
            if server.popen.poll() is None:
                server.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for server in reversed(self.servers):
            try:
                server.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.popen.kill()
                server.popen.wait(5)
            for pid, proc in server.known.items():
                if pid != server.popen.pid:
                    procstats.kill(proc)  # only if still the same process
        self.servers.clear()


# --------------------------------------------------------------------------- tools

def find_tool(name: str) -> str | None:
    """The path of a program, also in the sbin directories a non-root PATH lacks."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    return None


def ensure_tools(names: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """Find each tool (scripts/benchmark installed the missing ones it could,
    see scripts/env.sh); returns the paths (None when missing) and notes for
    the report saying what is skipped without them."""
    paths = {name: find_tool(name) for name in names}
    notes: list[str] = []
    for name in names:
        if paths[name] is None:
            skipped = {"haproxy": "haproxy rows skipped",
                       "nginx": "nginx rows and the nginx return-200 reference skipped",
                       "wrk": "wrk rows skipped; the direct reference uses ab -k"}[name]
            notes.append(f"{name} is not available: {skipped}")
    return paths, notes


def _version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "-"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else "-"


# --------------------------------------------------------------------------- load generators

def http11_response_size(port: int, path: str = PATH) -> int:
    """Bytes of one full response to the request wrk sends (HTTP/1.1, Host only)."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                head = data[:end].lower()
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if len(data) >= end + 4 + length:
                    return end + 4 + length
    return len(data)


def run_wrk(wrk: str, url: str, concurrency: int, duration: float,
            threads: int = 1) -> tuple[bench.WrkResult, str]:
    """wrk -t1 -cC -dDs --latency; its parsed figures and raw output."""
    argv = [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{duration:g}s", "--latency",
            "--timeout", "10s", url]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        return bench.WrkResult(), "wrk did not finish"
    return bench.parse_wrk(proc.stdout), proc.stdout + proc.stderr


@dataclass
class Target:
    """Something load is sent to: a balancer or a reference server."""

    name: str
    server: Server
    backends: list[Server]        #: measured separately (balancers only)

    @property
    def port(self) -> int:
        return self.server.port


class Bench:
    """Runs the workloads and collects the runs."""

    def __init__(self, args: argparse.Namespace, wrk: str | None) -> None:
        self.args = args
        self.wrk = wrk
        self.runs: list[bench.Run] = []
        self.sizes: dict[tuple[int, str], int] = {}
        self.steps_done = 0
        self.steps_total = 0
        self.invalid = 0

    def size(self, port: int, kind: str) -> int:
        """Expected bytes of one response: kind "ab", "ab-k" or "wrk"."""
        key = (port, kind)
        if key not in self.sizes:
            self.sizes[key] = (http11_response_size(port) if kind == "wrk" else
                               ab.response_size(HOST, port, PATH, kind == "ab-k"))
        return self.sizes[key]

    def _measure(self, target: Target, body: Callable[[], tuple[bench.Run, str]]) -> bench.Run:
        cpu0 = target.server.cpu()
        backend0 = sum(b.cpu() for b in target.backends)
        start = time.monotonic()
        run, _output = body()
        run.elapsed = time.monotonic() - start
        run.server_cpu = target.server.cpu() - cpu0
        if target.backends:
            run.backend_cpu = sum(b.cpu() for b in target.backends) - backend0
        run.peak_rss_kb = target.server.peak_rss_kb()
        return run

    def ab(self, target: Target, workload: str, round_: int, requests: int, concurrency: int,
           keepalive: bool) -> bench.Run:
        """One ab run, judged with loadtests.ab.judge."""
        size = self.size(target.port, "ab-k" if keepalive else "ab")

        def body() -> tuple[bench.Run, str]:
            result, output = ab.run(f"http://{HOST}:{target.port}{PATH}", requests,
                                    concurrency, keepalive)
            pct = result.percentiles
            run = bench.Run(target.name, workload, round_, "ab", keepalive, concurrency,
                            requests, result.complete, result.rps, pct.get(50), pct.get(99),
                            size, ab.judge(result, requests, size),
                            detail={"failed": result.failed, "non_2xx": result.non_2xx,
                                    "total_transferred": result.total_transferred,
                                    "keepalive_requests": result.keepalive_requests,
                                    "time_taken": result.time_taken,
                                    "aborted": result.aborted})
            return run, output
        return self._record(self._measure(target, body))

    def wrk_run(self, target: Target, workload: str, round_: int, concurrency: int) -> bench.Run:
        """One wrk keep-alive run, judged with bench.judge_wrk."""
        assert self.wrk
        size = self.size(target.port, "wrk")

        def body() -> tuple[bench.Run, str]:
            result, output = run_wrk(self.wrk, f"http://{HOST}:{target.port}{PATH}",
                                     concurrency, self.args.wrk_duration)
            run = bench.Run(target.name, workload, round_, "wrk", True, concurrency,
                            result.requests, result.requests, result.rps,
                            result.latency.get(50), result.latency.get(99), size,
                            bench.judge_wrk(result, size),
                            detail={"bytes_read": result.bytes_read,
                                    "duration": result.duration,
                                    "socket_errors": result.socket_errors,
                                    "non_2xx": result.non_2xx,
                                    "output_tail": output.strip().splitlines()[-3:]})
            return run, output
        return self._record(self._measure(target, body))

    def _record(self, run: bench.Run) -> bench.Run:
        self.runs.append(run)
        self.steps_done += 1
        head = (f"[{self.steps_done}/{self.steps_total}] round {run.round} "
                f"{run.target:<16} {run.workload:<14}")
        if run.valid:
            p99 = "-" if run.p99 is None else f"{run.p99:.1f}"
            cpu = "-" if run.cpu_us is None else f"{run.cpu_us:.0f}"
            print(f"{head} {run.rps:9.0f} req/s  p99 {p99:>7} ms  cpu {cpu:>5} µs/req",
                  file=sys.stderr, flush=True)
        else:
            self.invalid += 1
            print(f"{head} *** INVALID ***: {'; '.join(run.reasons)}", file=sys.stderr,
                  flush=True)
        time.sleep(self.args.pause)
        return run


# --------------------------------------------------------------------------- idle connections

def established(server: Server, port: int) -> int:
    """Connections the lb has accepted on local ``port``: the ESTABLISHED
    sockets on that port its process tree holds (psutil), so not those still
    waiting in the listener's accept queue.  (Counting the lb's descriptors
    instead is thrown off by its upstream pool closing idle connections
    meanwhile.)"""
    return procstats.established(server.pids(), port)


def idle_connections(server: Server, port: int, count: int, batch: int = 500) -> bench.IdleResult:
    """Open ``count`` idle TCP connections to the lb (non-blocking connects, in
    batches it can accept), read its VmRSS while they are held, close them."""
    rss0 = server.rss_kb()
    fds0 = established(server, port)
    socks: list[socket.socket] = []
    note = ""
    start = time.monotonic()
    try:
        for first in range(0, count, batch):
            for _ in range(min(batch, count - first)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                code = sock.connect_ex((HOST, port))
                if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
                    sock.close()
                    note = f"connect failed after {len(socks)}: {os.strerror(code)}"
                    break
                socks.append(sock)
            if note:
                break
            deadline = time.monotonic() + 5
            while established(server, port) - fds0 < len(socks) and \
                    time.monotonic() < deadline:
                time.sleep(0.02)
        deadline = time.monotonic() + 5
        while established(server, port) - fds0 < len(socks) and time.monotonic() < deadline:
            time.sleep(0.05)
        seconds = time.monotonic() - start
        time.sleep(0.5)  # let the accepted connections settle into their read
        rss = server.rss_kb()
        hwm = server.peak_rss_kb()
        accepted = established(server, port) - fds0
        still_open = _count_open(socks)
    finally:
        for sock in socks:
            sock.close()
    return bench.IdleResult(count, len(socks), accepted, still_open, rss0, rss, hwm, seconds,
                            note)


def _count_open(socks: list[socket.socket]) -> int:
    """Connected sockets the peer has not closed (not readable, no error)."""
    import select
    poller = select.poll()
    by_fd = {}
    for sock in socks:
        poller.register(sock.fileno(), select.POLLIN | select.POLLOUT | select.POLLERR
                        | select.POLLHUP)
        by_fd[sock.fileno()] = sock
    ready = dict(poller.poll(1000))
    good = 0
    for fd in by_fd:
        flags = ready.get(fd, 0)
        if flags & select.POLLOUT and not flags & (select.POLLIN | select.POLLERR
                                                   | select.POLLHUP):
            good += 1
    return good


# --------------------------------------------------------------------------- plot

def plot(summary: dict[tuple[str, str], bench.Summary], levels: list[int], path: str) -> None:
    """benchmark.png: req/s per workload per target (left), the seed sweep (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(bench.BALANCERS + bench.REFERENCES)
    workloads = [w for w in dict.fromkeys(s.workload for s in summary.values())
                 if bench.seed_level(w) is None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5),
                                      gridspec_kw={"width_ratios": [3, 2]})
    labelled: set[str] = set()
    for j, w in enumerate(workloads):
        present = [(i, t, summary[(t, w)].rps) for i, t in enumerate(targets)
                   if (t, w) in summary and summary[(t, w)].rps is not None]
        width = 0.8 / max(1, len(present))
        for k, (i, target, rps) in enumerate(present):
            bars = left.bar([j - 0.4 + width * (k + 0.5)], [rps], width=width,
                            color=f"C{i}", label=None if target in labelled else target)
            labelled.add(target)
            left.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    left.set_xticks(range(len(workloads)))
    left.set_xticklabels(workloads, fontsize=8)
    left.set_ylabel("requests per second (median)")
    left.set_title("Throughput per workload (balancers and references)")
    left.grid(True, axis="y", alpha=0.3)
    left.legend(fontsize=8)
    for i, target in enumerate(targets):
        points = [(c, summary[(target, bench.seed_workload(c))].rps) for c in levels
                  if (target, bench.seed_workload(c)) in summary]
        points = [(c, v) for c, v in points if v is not None]
        if points:
            right.plot([c for c, _ in points], [v for _, v in points], marker="o",
                       label=target, color=f"C{i}")
    right.axhline(bench.TARGET_SEED_RPS, color="grey", linestyle=":", label="lb target")
    right.set_xscale("log")
    right.set_xlabel("concurrency (ab -n 1000, no keep-alive)")
    right.set_ylabel("requests per second (median)")
    right.set_title("Seed sweep")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI

def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad list {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"bad list {text!r}")
    return values


def _only(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    for name in names:
        if name not in bench.BALANCERS:
            raise argparse.ArgumentTypeError(
                f"{name!r} is not one of {', '.join(bench.BALANCERS)}")
    if not names:
        raise argparse.ArgumentTypeError("empty list")
    return [b for b in bench.BALANCERS if b in names]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"""\
Compare the gservers load balancer with haproxy and nginx on this machine.

scripts/benchmark installs haproxy, nginx-light and wrk when missing (as root,
one apt-get update then apt-get install; see scripts/env.sh); whatever is still
missing has its rows skipped with a note. Starts on {HOST}: four async gservers
backends, one thread-model backend, the gservers lb (round_robin, --admin off)
over the four, haproxy (nbthread 1, http-reuse always, balance roundrobin) and
nginx (worker_processes 1, upstream keepalive 64) over the same four, and an
nginx `return 200` server with a body the size of /page.html as a reference
backend. Configs go to a temp dir; every process is stopped by PID on exit,
also on Ctrl-C or an error.

Each round (--rounds), interleaved across the balancers (order rotated each
round):
  ab -n N -c 100 and ab -k -n N -c 100        (N = --requests)
  wrk -t1 -c100 -dDs keep-alive               (D = --wrk-duration; if wrk is there)
  seed sweep: ab -n 1000 at c=1,10,100,500,1000 (--levels), also against the
              thread-model backend
  direct: wrk (or ab -k) on one async backend vs the nginx return-200 server
Every ab run is judged with loadtests.ab.judge (0 failed, 0 non-2xx, total =
n x one full response) and every wrk run with bench.judge_wrk (no socket error,
no non-2xx, bytes = requests x size); invalid runs are marked loudly, left out
of the medians and make the exit code 1. CPU per request is utime+stime
(psutil; before/after) of the target's own processes, and separately of the
four backends; peak RSS is VmHWM (from /proc/PID/status: psutil has no peak).
Finally the lb holds --idle-connections idle TCP connections and its VmRSS is
read.

Prints medians per (target, workload), the ratios gservers/haproxy and
gservers/nginx and the issue's targets (lb >= 0.85x haproxy without keep-alive,
>= 0.70x with -k; lb CPU <= 60 µs/req without keep-alive, <= 30 µs with it;
async backend >= 0.70x nginx return-200 under wrk -k; seed sweep through the lb
>= 6000 req/s at every c >= 10 and p99 at c=1000 <= haproxy's; thread model
>= 3000 req/s at every level; lb RSS <= 100 MB holding 10,000 idle connections),
and writes DIR/benchmark.md, DIR/benchmark.json (every raw run) and
DIR/benchmark.png. A default run takes about 5-7 minutes.""")
    p.add_argument("--rounds", type=_positive, default=None,
                   help="repetitions of every workload; figures are medians (default: 3, "
                        "1 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: --requests 2000, --wrk-duration 2, 1 round")
    p.add_argument("--only", type=_only, default=list(bench.BALANCERS),
                   metavar="gservers,haproxy,nginx",
                   help="balancers to run (default: all three); the nginx return-200 "
                        "reference runs with nginx")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "latest"), metavar="DIR",
                   help="where benchmark.md/.json/.png go (default: results/latest/, not "
                        "tracked by git; the committed reference runs are results/reference/)")
    p.add_argument("--requests", type=_positive, default=None,
                   help="requests per big ab run (default: 20000, 2000 with --quick)")
    p.add_argument("--wrk-duration", type=_positive, default=None, metavar="SECONDS",
                   help="seconds per wrk run (default: 5, 2 with --quick)")
    p.add_argument("--levels", type=_ints, default=[1, 10, 100, 500, 1000],
                   help="seed sweep concurrency levels (default: 1,10,100,500,1000)")
    p.add_argument("--seed-requests", type=_positive, default=1000,
                   help="requests per seed-sweep level (default: 1000; at least the "
                        "highest level, as ab requires)")
    p.add_argument("--idle-connections", type=_non_negative, default=10000, metavar="N",
                   help="idle connections the lb holds while its RSS is read; 0 skips "
                        "(default: 10000; the lb's --max-connections is 10000)")
    p.add_argument("--lb-workers", type=_positive, default=1, metavar="N",
                   help="gservers lb worker processes (--workers; default: 1); CPU and RSS "
                        "are summed over its processes")
    p.add_argument("--no-install", action="store_true",
                   help="(read by scripts/benchmark) never run apt-get; skip what is missing")
    p.add_argument("--pause", type=float, default=0.3, metavar="SECONDS",
                   help="pause after each run (default: 0.3)")
    p.add_argument("--backend-ports", type=_ints, default=[62002, 62003, 62004, 62005],
                   metavar="P,P,P,P", help="the four async backends (default: 62002-62005)")
    p.add_argument("--thread-port", type=_positive, default=62006,
                   help="the thread-model backend (default: 62006)")
    p.add_argument("--lb-port", type=_positive, default=62100,
                   help="the gservers lb (default: 62100)")
    p.add_argument("--haproxy-port", type=_positive, default=62101,
                   help="haproxy (default: 62101)")
    p.add_argument("--nginx-port", type=_positive, default=62102,
                   help="the nginx balancer (default: 62102)")
    p.add_argument("--nginx-ref-port", type=_positive, default=62103,
                   help="the nginx return-200 reference backend (default: 62103)")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on --quick; check cross-option rules."""
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.requests is None:
        args.requests = 2000 if args.quick else 20000
    if args.wrk_duration is None:
        args.wrk_duration = 2 if args.quick else 5
    if args.requests < bench.CONCURRENCY:
        parser().error(f"--requests must be at least {bench.CONCURRENCY}")
    if args.seed_requests < max(args.levels):
        parser().error(f"--seed-requests {args.seed_requests} is below the highest level "
                       f"{max(args.levels)} (ab needs n >= c)")
    if len(args.backend_ports) != 4:
        parser().error("--backend-ports takes four ports")
    return args


def environment(args: argparse.Namespace, paths: dict[str, str | None],
                started: float) -> dict[str, Any]:
    """What the run was done on and with."""
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    def sysctl(name: str) -> str:
        try:
            return _read("/proc/sys/" + name.replace(".", "/")).strip()
        except OSError:
            return "-"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}"
                   " (load generator and servers share them)",
        "python / gevent / greenlet": f"{platform.python_version()} / {version('gevent')} / "
                                      f"{version('greenlet')}",
        "ab": _version(["ab", "-V"]),
        "wrk version": (_version([paths["wrk"], "--version"]) if paths.get("wrk")
                        else "not available"),
        "haproxy": _version([paths["haproxy"], "-v"]) if paths.get("haproxy") else "not run",
        "nginx": _version([paths["nginx"], "-v"]) if paths.get("nginx") else "not run",
        "balancers": ", ".join(args.only),
        "gservers lb workers": args.lb_workers,
        "rounds": args.rounds,
        "big ab runs": f"-n {args.requests} -c {bench.CONCURRENCY}",
        "wrk runs": f"-t1 -c{bench.CONCURRENCY} -d{args.wrk_duration}s",
        "seed sweep": f"ab -n {args.seed_requests} at c={','.join(map(str, args.levels))}",
        "path": f"{PATH} ({os.path.getsize(PAGE)}-byte body)",
        "ports": f"backends {','.join(map(str, args.backend_ports))}, thread "
                 f"{args.thread_port}, lb {args.lb_port}, haproxy {args.haproxy_port}, "
                 f"nginx {args.nginx_port}, nginx return-200 {args.nginx_ref_port}",
        "somaxconn / tcp_tw_reuse": f"{sysctl('net.core.somaxconn')} / "
                                    f"{sysctl('net.ipv4.tcp_tw_reuse')}",
        "wall time": f"{time.monotonic() - started:.0f} s",
    }


def start_servers(fleet: Fleet, args: argparse.Namespace, paths: dict[str, str | None],
                  tmp: str) -> dict[str, Target]:
    """Start everything the run needs; target name -> Target."""
    py = sys.executable
    backends = [fleet.start(f"async-{port}", port, [py, "-m", "gservers.backend", "--log-level",
                                                    "warning", str(port)])
                for port in args.backend_ports]
    targets: dict[str, Target] = {
        "async backend": Target("async backend", backends[0], []),
        "thread backend": Target("thread backend", fleet.start(
            f"thread-{args.thread_port}", args.thread_port,
            [py, "-m", "gservers.backend", "--model", "thread", "--log-level", "warning",
             str(args.thread_port)]), [])}
    if "gservers" in args.only:
        argv = [py, "-m", "lb", "--listen", f"{HOST}:{args.lb_port}", "--policy", "round_robin",
                "--admin", "off", "--log-level", "warning", "--workers", str(args.lb_workers)]
        for port in args.backend_ports:
            argv += ["--backend", f"{HOST}:{port}"]
        targets["gservers"] = Target("gservers", fleet.start("gservers-lb", args.lb_port, argv),
                                     backends)
    if "haproxy" in args.only and paths.get("haproxy"):
        cfg = os.path.join(tmp, "haproxy.cfg")
        with open(cfg, "w") as fh:
            fh.write(bench.haproxy_config(args.haproxy_port, args.backend_ports, host=HOST))
        targets["haproxy"] = Target("haproxy", fleet.start(
            "haproxy", args.haproxy_port, [paths["haproxy"], "-db", "-f", cfg]), backends)
    if "nginx" in args.only and paths.get("nginx"):
        body = bench.filler_body(os.path.getsize(PAGE))
        for name, lb_port, ref_port in (("nginx", args.nginx_port, None),
                                        ("nginx return-200", None, args.nginx_ref_port)):
            folder = os.path.join(tmp, name.replace(" ", "-"))
            os.makedirs(folder, mode=0o755)
            cfg = os.path.join(folder, "nginx.conf")
            with open(cfg, "w") as fh:
                fh.write(bench.nginx_config(folder, lb_port, ref_port, args.backend_ports,
                                            body, host=HOST))
            port = lb_port or ref_port
            assert port is not None
            server = fleet.start(name.replace(" ", "-"), port,
                                 [paths["nginx"], "-p", folder, "-c", cfg, "-e",
                                  os.path.join(folder, "nginx-error.log")])
            targets[name] = Target(name, server, backends if lb_port else [])
    return targets


def plan(bench_: Bench, targets: dict[str, Target], args: argparse.Namespace) -> list[Callable]:
    """Every run of every round, interleaved across the balancers."""
    steps: list[Callable[[], Any]] = []
    balancers = [b for b in bench.BALANCERS if b in targets]
    direct_tool = "wrk" if bench_.wrk else "ab"
    direct = bench.direct_workload(direct_tool)
    c = bench.CONCURRENCY
    for r in range(1, args.rounds + 1):
        shift = (r - 1) % max(1, len(balancers))
        order = balancers[shift:] + balancers[:shift]
        for keepalive in (False, True):
            for b in order:
                steps.append(lambda b=b, r=r, k=keepalive: bench_.ab(
                    targets[b], bench.ab_workload(c, k), r, args.requests, c, k))
        if bench_.wrk:
            for b in order:
                steps.append(lambda b=b, r=r: bench_.wrk_run(targets[b], bench.wrk_workload(c),
                                                             r, c))
        for level in args.levels:
            for t in order + ["thread backend"]:
                steps.append(lambda t=t, r=r, level=level: bench_.ab(
                    targets[t], bench.seed_workload(level), r, args.seed_requests, level, False))
        refs = [t for t in ("async backend", "nginx return-200") if t in targets]
        if r % 2 == 0:
            refs.reverse()
        for t in refs:
            if bench_.wrk:
                steps.append(lambda t=t, r=r: bench_.wrk_run(targets[t], direct, r, c))
            else:
                steps.append(lambda t=t, r=r: bench_.ab(targets[t], direct, r, args.requests,
                                                        c, True))
    return steps


def _machine_busy() -> float:
    return procstats.machine_busy_seconds()


def _our_cpu() -> float:
    """CPU seconds of this process and every child it has waited for (ab, wrk,
    and the servers once stopped, with what they waited for in turn)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    return [f"{load:.2f}" for load in psutil.getloadavg()]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every run was valid, 1 if any was not, 2 on a
    setup error, 130 when interrupted."""
    args = resolve(parser().parse_args(argv))
    started = time.monotonic()
    busy0, ours0, load0 = _machine_busy(), _our_cpu(), _loadavg()
    try:
        ab.ab_path()
    except ab.AbError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    raise_nofile_limit()
    signal.signal(signal.SIGTERM, _interrupt)
    wanted = [t for t in ("haproxy", "nginx") if t in args.only] + ["wrk"]
    paths, notes = ensure_tools(wanted)
    for note in notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    if "gservers" not in args.only:
        notes.append("gservers lb not run (--only): the lb targets are n/a")
    notes.append(f"CPU times are counted in 1/{TICKS} s ticks: a 1000-request run's "
                 f"CPU per request is good to about ±{1e6 / TICKS / 1000:.0f} µs")
    tmp = tempfile.mkdtemp(prefix="gservers-bench-")
    os.chmod(tmp, 0o755)  # nginx's workers may run as another user
    fleet = Fleet(tmp)
    runner = Bench(args, paths.get("wrk"))
    idle: bench.IdleResult | None = None
    try:
        targets = start_servers(fleet, args, paths, tmp)
        steps = plan(runner, targets, args)
        runner.steps_total = len(steps)
        print(f"{PROG}: {len(steps)} runs over {args.rounds} round(s): "
              f"{', '.join(t for t in targets)}", file=sys.stderr, flush=True)
        for step in steps:
            step()
        if "gservers" in targets and args.idle_connections:
            print(f"{PROG}: the lb holds {args.idle_connections} idle connections...",
                  file=sys.stderr, flush=True)
            idle = idle_connections(targets["gservers"].server, args.lb_port,
                                    args.idle_connections)
            if idle.note:
                notes.append(f"idle connections: {idle.note}")
    except SetupError as exc:
        print(f"\n{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; every server started was stopped", file=sys.stderr)
        return 130
    finally:
        fleet.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    busy, ours = _machine_busy() - busy0, _our_cpu() - ours0
    notes.append(f"other processes on this machine used {max(0.0, busy - ours):.0f} CPU s of "
                 f"the {busy:.0f} CPU s busy during the run (load average "
                 f"{' '.join(load0)} at the start, "
                 f"{' '.join(_loadavg())} at the end)")
    runs = runner.runs
    summary = bench.summarize(runs)
    direct = bench.direct_workload("wrk" if runner.wrk else "ab")
    if not runner.wrk:
        notes.append("wrk missing: the backend-vs-nginx reference used ab -k instead of wrk")
    targets_met = bench.check_targets(summary, args.levels, direct, idle)
    env = environment(args, paths, started)
    os.makedirs(args.out, exist_ok=True)
    md_path = os.path.join(args.out, "benchmark.md")
    json_path = os.path.join(args.out, "benchmark.json")
    png_path = os.path.join(args.out, "benchmark.png")
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(bench.markdown(runs, summary, targets_met, env, notes, idle))
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump(bench.to_json(runs, summary, targets_met, env, notes, idle), fh, indent=2)
        fh.write("\n")
    plot(summary, args.levels, png_path)

    print("\n## Medians\n")
    print(bench.medians_table(summary))
    print("\n## Ratios\n")
    print(bench.ratios_table(summary))
    print(f"\n## Targets (gservers lb with {args.lb_workers} worker(s))\n")
    print(bench.targets_table(targets_met))
    if idle is not None:
        print(f"\nidle: {idle.accepted}/{idle.asked} accepted, {idle.still_open} still open, "
              f"lb VmRSS {idle.rss_before_kb / 1024:.1f} -> {idle.rss_kb / 1024:.1f} MB")
    for note in notes:
        print(f"note: {note}")
    print(f"\nwrote {md_path}, {json_path}, {png_path}")
    bad = bench.invalid_lines(runs)
    if bad:
        print(f"\n{PROG}: {len(bad)} INVALID run(s) -- left out of the medians:",
              file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
