# loadtests/bench.py -- the pure half of scripts/benchmark.
#
# Strategy: everything the comparison benchmark (gservers lb vs haproxy vs
# nginx) computes, without touching a process or a socket, so it can be
# unit-tested on saved text: wrk's output parsed and judged, the haproxy and
# nginx configuration files rendered, runs reduced to medians per (target,
# workload), ratios between balancers, the targets checked, and the
# Markdown tables and report rendered.  (Process figures are read with
# psutil, by loadtests/procstats.py.)
# scripts/benchmark owns the processes, the load generators and the files.
from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: The balancers compared, in report order.
BALANCERS = ("gservers", "haproxy", "nginx")
#: Reference rows (no balancer): one async backend, nginx's ``return 200``
#: and one thread-model backend.
REFERENCES = ("async backend", "nginx return-200", "thread backend")
#: Concurrency of the main balancer workloads (ab and wrk).
CONCURRENCY = 100

# The targets.
TARGET_RPS_VS_HAPROXY = 0.85
TARGET_RPS_VS_HAPROXY_K = 0.70
TARGET_CPU_US = 60.0
TARGET_CPU_US_K = 30.0
TARGET_BACKEND_VS_NGINX = 0.70
TARGET_SEED_RPS = 6000.0
TARGET_THREAD_RPS = 3000.0
TARGET_IDLE_RSS_MB = 100.0


# --------------------------------------------------------------------------- workloads

def ab_workload(concurrency: int = CONCURRENCY, keepalive: bool = False) -> str:
    """Name of the big ab workload (``ab c=100`` / ``ab -k c=100``)."""
    return f"ab{' -k' if keepalive else ''} c={concurrency}"


def wrk_workload(concurrency: int = CONCURRENCY) -> str:
    """Name of the wrk keep-alive workload."""
    return f"wrk -k c={concurrency}"


def seed_workload(concurrency: int) -> str:
    """Name of one level of the seed sweep (ab -n 1000, no keep-alive)."""
    return f"seed ab c={concurrency}"


def direct_workload(tool: str, concurrency: int = CONCURRENCY) -> str:
    """Name of the backend-vs-nginx reference workload (wrk, or ab -k without wrk)."""
    return f"direct {tool} -k c={concurrency}"


def seed_level(workload: str) -> int | None:
    """The concurrency of a seed-sweep workload name, else None."""
    match = re.fullmatch(r"seed ab c=(\d+)", workload)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- wrk

@dataclass
class WrkResult:
    """wrk's figures for one run (latencies in ms, bytes as wrk rounds them)."""

    threads: int = 0
    connections: int = 0
    requests: int = 0
    duration: float = 0.0          #: s
    bytes_read: float = 0.0        #: bytes (wrk prints 2 decimals of KB/MB/GB)
    rps: float = 0.0
    latency: dict[int, float] = field(default_factory=dict)  #: percent -> ms
    non_2xx: int = 0               #: wrk's "Non-2xx or 3xx responses"
    socket_errors: dict[str, int] = field(default_factory=dict)  #: connect/read/write/timeout


_UNITS_TIME = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_UNITS_SIZE = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def _duration_ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_TIME[unit]


def parse_wrk(text: str) -> WrkResult:
    """Every figure ``wrk --latency`` printed."""
    result = WrkResult()
    match = re.search(r"(\d+) threads and (\d+) connections", text)
    if match:
        result.threads, result.connections = int(match.group(1)), int(match.group(2))
    match = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s|m|h), ([0-9.]+)(B|KB|MB|GB|TB) read",
                      text)
    if match:
        result.requests = int(match.group(1))
        result.duration = _duration_ms(match.group(2), match.group(3)) / 1000.0
        result.bytes_read = float(match.group(4)) * _UNITS_SIZE[match.group(5)]
    match = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if match:
        result.rps = float(match.group(1))
    for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([0-9.]+)(us|ms|s|m|h)\s*$", text, re.M):
        result.latency[int(pct)] = _duration_ms(value, unit)
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if match:
        result.non_2xx = int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      text)
    if match:
        result.socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                        map(int, match.groups()), strict=True))
    return result


def judge_wrk(result: WrkResult, expected_size: int, tolerance: float = 0.02) -> list[str]:
    """Why a wrk run is not valid (an empty list when it is).

    Valid: some requests, no non-2xx/3xx, no socket error, and the bytes read
    within ``tolerance`` of requests x one full response (wrk rounds its byte
    count, and responses still in flight at the end are read in part)."""
    reasons = []
    if result.requests <= 0:
        reasons.append("wrk completed no request (or its output could not be read)")
    if result.non_2xx:
        reasons.append(f"non-2xx/3xx {result.non_2xx}")
    errors = {k: v for k, v in result.socket_errors.items() if v}
    if errors:
        reasons.append("socket errors " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    if result.requests > 0 and expected_size > 0:
        expected = result.requests * expected_size
        if abs(result.bytes_read - expected) > tolerance * expected:
            reasons.append(f"read {result.bytes_read:.0f} bytes, expected about {expected} "
                           f"({result.requests} x {expected_size})")
    return reasons


# --------------------------------------------------------------------------- configs

def filler_body(size: int) -> str:
    """An HTML body of exactly ``size`` bytes with no character nginx would
    interpret inside a quoted string ($, quotes, backslashes, braces)."""
    head, tail = "<!DOCTYPE html><html><body><p>", "</p></body></html>\n"
    if size < len(head) + len(tail):
        return "x" * size
    return head + "x" * (size - len(head) - len(tail)) + tail


def haproxy_config(listen_port: int, backends: Sequence[int], maxconn: int = 4096,
                   host: str = "127.0.0.1") -> str:
    """haproxy.cfg: one thread, HTTP mode, round robin over ``backends``,
    ``http-reuse always``, no logging, ``maxconn`` for c=1000 and more."""
    servers = "\n".join(f"    server b{i} {host}:{port}" for i, port in enumerate(backends, 1))
    return f"""# generated by scripts/benchmark
global
    nbthread 1
    maxconn {maxconn}

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 15s

frontend bench
    bind {host}:{listen_port}
    maxconn {maxconn}
    default_backend gservers

backend gservers
    balance roundrobin
{servers}
"""


def nginx_config(tmp_dir: str, lb_port: int | None, ref_port: int | None,
                 backends: Sequence[int], body: str, worker_connections: int = 8192,
                 host: str = "127.0.0.1") -> str:
    """nginx.conf: one worker in the foreground; when ``lb_port`` is given, a
    balancer there over ``backends`` (upstream keepalive 64, HTTP/1.1, no
    Connection header passed on); when ``ref_port`` is given, a
    ``return 200`` server with ``body``; every path under ``tmp_dir``."""
    if any(ch in body for ch in "$'\"\\{};"):
        raise ValueError("body must not contain $ ' \" \\ { } ;")
    if lb_port is None and ref_port is None:
        raise ValueError("nothing to serve: give lb_port and/or ref_port")
    servers = "\n".join(f"        server {host}:{port};" for port in backends)
    balancer = "" if lb_port is None else f"""
    upstream gservers {{
{servers}
        keepalive 64;
        keepalive_requests 1000000;
    }}

    server {{
        listen {host}:{lb_port} backlog=4096;
        location / {{
            proxy_pass http://gservers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""
    reference = "" if ref_port is None else f"""
    server {{
        listen {host}:{ref_port} backlog=4096;
        location / {{
            return 200 '{body}';
        }}
    }}
"""
    return f"""# generated by scripts/benchmark
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {worker_connections * 2};
pid {tmp_dir}/nginx.pid;
error_log {tmp_dir}/nginx-error.log warn;

events {{
    worker_connections {worker_connections};
}}

http {{
    access_log off;
    default_type text/html;
    keepalive_timeout 15s;
    keepalive_requests 1000000;
    client_body_temp_path {tmp_dir}/client_body;
    proxy_temp_path {tmp_dir}/proxy;
    fastcgi_temp_path {tmp_dir}/fastcgi;
    uwsgi_temp_path {tmp_dir}/uwsgi;
    scgi_temp_path {tmp_dir}/scgi;
{balancer}{reference}}}
"""


# --------------------------------------------------------------------------- runs and medians

@dataclass
class Run:
    """One measured run: one load-generator invocation against one target."""

    target: str                    #: a balancer or a reference
    workload: str                  #: e.g. "ab c=100", "wrk -k c=100", "seed ab c=10"
    round: int
    tool: str                      #: "ab" or "wrk"
    keepalive: bool
    concurrency: int
    requests: int                  #: asked for (ab); completed (wrk)
    complete: int
    rps: float
    p50: float | None              #: ms
    p99: float | None              #: ms
    expected_size: int             #: bytes of one full response
    reasons: list[str] = field(default_factory=list)  #: why invalid
    server_cpu: float = 0.0        #: s, the target's own process tree
    backend_cpu: float | None = None  #: s, the four backends (balancer rows only)
    peak_rss_kb: int = 0           #: VmHWM of the target's processes after the run
    elapsed: float = 0.0           #: s, wall time of the load generator
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.reasons

    @property
    def cpu_us(self) -> float | None:
        """Target CPU per completed request, in microseconds."""
        return self.server_cpu / self.complete * 1e6 if self.complete else None

    @property
    def backend_cpu_us(self) -> float | None:
        """Backends' CPU per completed request, in microseconds."""
        if self.backend_cpu is None or not self.complete:
            return None
        return self.backend_cpu / self.complete * 1e6

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(valid=self.valid, cpu_us_per_request=self.cpu_us,
                    backend_cpu_us_per_request=self.backend_cpu_us)
        return data


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None (None when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


@dataclass
class Summary:
    """Medians over the valid runs of one (target, workload)."""

    target: str
    workload: str
    runs: int
    invalid: int
    rps: float | None
    p50: float | None
    p99: float | None
    cpu_us: float | None
    backend_cpu_us: float | None
    peak_rss_mb: float | None


def summarize(runs: Sequence[Run]) -> dict[tuple[str, str], Summary]:
    """Medians per (target, workload), in first-seen order; invalid runs are
    counted but left out of the medians."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.target, run.workload), []).append(run)
    out = {}
    for key, group in groups.items():
        good = [r for r in group if r.valid]
        rss = median(r.peak_rss_kb for r in good if r.peak_rss_kb)
        out[key] = Summary(key[0], key[1], len(group), len(group) - len(good),
                           median(r.rps for r in good), median(r.p50 for r in good),
                           median(r.p99 for r in good), median(r.cpu_us for r in good),
                           median(r.backend_cpu_us for r in good),
                           None if rss is None else rss / 1024)
    return out


def _get(summary: dict[tuple[str, str], Summary], target: str, workload: str,
         attr: str) -> float | None:
    item = summary.get((target, workload))
    return None if item is None else getattr(item, attr)


# --------------------------------------------------------------------------- targets

@dataclass
class Target:
    """One of the issue's targets, as measured."""

    name: str
    goal: str
    measured: str
    met: bool | None               #: None: could not be measured here


@dataclass
class IdleResult:
    """The balancer holding idle client connections."""

    asked: int
    opened: int                    #: connections our side opened
    accepted: int                  #: descriptors the balancer gained
    still_open: int                #: of ours, not closed by the balancer at the reading
    rss_before_kb: int
    rss_kb: int                    #: VmRSS while holding them
    hwm_kb: int
    seconds: float
    note: str = ""


def _fmt(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def check_targets(summary: dict[tuple[str, str], Summary], levels: Sequence[int],
                  direct: str | None, idle: IdleResult | None,
                  concurrency: int = CONCURRENCY) -> list[Target]:
    """The issue's targets against the medians; ``direct`` names the
    backend-vs-nginx workload run (None when it was not)."""
    out: list[Target] = []

    def vs_haproxy(workload: str, goal: float, label: str) -> None:
        g = _get(summary, "gservers", workload, "rps")
        h = _get(summary, "haproxy", workload, "rps")
        r = ratio(g, h)
        measured = ("haproxy not run" if h is None and ("haproxy", workload) not in summary
                    else f"{_fmt(r, '.2f', 'x')} ({_fmt(g)} vs {_fmt(h)} req/s)")
        out.append(Target(f"lb throughput vs haproxy, {label}", f">= {goal:.2f}x", measured,
                          None if r is None else r >= goal))

    def cpu(workload: str, goal: float, label: str) -> None:
        value = _get(summary, "gservers", workload, "cpu_us")
        out.append(Target(f"lb CPU per request, {label}", f"<= {goal:.0f} µs",
                          _fmt(value, ".1f", " µs"), None if value is None else value <= goal))

    plain, keep = ab_workload(concurrency), ab_workload(concurrency, True)
    vs_haproxy(plain, TARGET_RPS_VS_HAPROXY, f"{plain} (no keep-alive)")
    vs_haproxy(keep, TARGET_RPS_VS_HAPROXY_K, keep)
    cpu(plain, TARGET_CPU_US, plain)
    cpu(keep, TARGET_CPU_US_K, keep)

    b = _get(summary, "async backend", direct, "rps") if direct else None
    n = _get(summary, "nginx return-200", direct, "rps") if direct else None
    r = ratio(b, n)
    out.append(Target(f"async backend vs nginx return-200, {direct or 'wrk -k'}",
                      f">= {TARGET_BACKEND_VS_NGINX:.2f}x",
                      "nginx not run" if n is None and b is not None else
                      f"{_fmt(r, '.2f', 'x')} ({_fmt(b)} vs {_fmt(n)} req/s)",
                      None if r is None else r >= TARGET_BACKEND_VS_NGINX))

    def sweep(target: str, lowest: int, goal: float, name: str) -> None:
        figures = [(c, _get(summary, target, seed_workload(c), "rps"))
                   for c in levels if c >= lowest]
        figures = [(c, v) for c, v in figures if (target, seed_workload(c)) in summary]
        if not figures:
            out.append(Target(name, f">= {goal:.0f} req/s", "not run", None))
            return
        missing = [c for c, v in figures if v is None]
        if missing:
            out.append(Target(name, f">= {goal:.0f} req/s",
                              "no valid run at c=" + ",".join(map(str, missing)), False))
            return
        c_min, v_min = min(figures, key=lambda cv: cv[1])
        out.append(Target(name, f">= {goal:.0f} req/s", f"min {v_min:.0f} req/s (c={c_min})",
                          v_min >= goal))

    sweep("gservers", 10, TARGET_SEED_RPS, "seed sweep through lb, every c >= 10")
    top = max(levels) if levels else 1000
    g99 = _get(summary, "gservers", seed_workload(top), "p99")
    h99 = _get(summary, "haproxy", seed_workload(top), "p99")
    out.append(Target(f"seed sweep p99 at c={top}, lb vs haproxy", "<= haproxy's",
                      f"{_fmt(g99, '.1f', ' ms')} vs {_fmt(h99, '.1f', ' ms')}",
                      None if g99 is None or h99 is None else g99 <= h99))
    sweep("thread backend", 1, TARGET_THREAD_RPS, "thread model seed sweep, every level")

    if idle is None:
        out.append(Target("lb RSS holding idle connections", f"<= {TARGET_IDLE_RSS_MB:.0f} MB",
                          "not run", None))
    else:
        mb = idle.rss_kb / 1024
        held = idle.accepted >= idle.asked and idle.still_open >= idle.asked
        measured = (f"{mb:.1f} MB with {idle.accepted} accepted / {idle.still_open} open"
                    + ("" if held else f" (asked {idle.asked}: NOT all held)"))
        out.append(Target(f"lb RSS holding {idle.asked} idle connections",
                          f"<= {TARGET_IDLE_RSS_MB:.0f} MB", measured,
                          mb <= TARGET_IDLE_RSS_MB and held))
    return out


# --------------------------------------------------------------------------- rendering

def _md(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def medians_table(summary: dict[tuple[str, str], Summary]) -> str:
    """Medians per (target, workload) as Markdown, grouped by workload."""
    order = {name: i for i, name in enumerate(BALANCERS + REFERENCES)}
    workloads = list(dict.fromkeys(s.workload for s in summary.values()))
    items = sorted(summary.values(), key=lambda s: (workloads.index(s.workload),
                                                    order.get(s.target, 99)))
    rows = []
    for s in items:
        valid = f"{s.runs - s.invalid}/{s.runs}" + ("" if not s.invalid else " **INVALID**")
        rows.append([s.workload, s.target, _fmt(s.rps), _fmt(s.p50, ".2f"), _fmt(s.p99, ".2f"),
                     _fmt(s.cpu_us, ".1f"), _fmt(s.backend_cpu_us, ".1f"),
                     _fmt(s.peak_rss_mb, ".1f"), valid])
    return _md(["workload", "target", "req/s", "p50 ms", "p99 ms", "CPU µs/req",
                "backends µs/req", "peak RSS MB", "valid runs"], rows)


def ratios_table(summary: dict[tuple[str, str], Summary]) -> str:
    """Per balancer workload: req/s and CPU per request of each balancer and
    the ratios gservers/haproxy and gservers/nginx."""
    workloads = list(dict.fromkeys(s.workload for s in summary.values()
                                   if s.target in BALANCERS))
    rows = []
    for w in workloads:
        rps = {b: _get(summary, b, w, "rps") for b in BALANCERS}
        cpu = {b: _get(summary, b, w, "cpu_us") for b in BALANCERS}
        p99 = {b: _get(summary, b, w, "p99") for b in BALANCERS}
        rows.append([w] + [_fmt(rps[b]) for b in BALANCERS]
                    + [_fmt(ratio(rps["gservers"], rps[b]), ".2f", "x") for b in BALANCERS[1:]]
                    + [_fmt(ratio(p99["gservers"], p99[b]), ".2f", "x") for b in BALANCERS[1:]]
                    + ["/".join(_fmt(cpu[b], ".0f") for b in BALANCERS)])
    return _md(["workload", "gservers req/s", "haproxy req/s", "nginx req/s",
                "gservers/haproxy", "gservers/nginx", "p99 g/h", "p99 g/n",
                "CPU µs/req g/h/n"], rows)


def targets_table(targets: Sequence[Target]) -> str:
    """The issue's targets: goal, measured, met."""
    verdict = {True: "yes", False: "**NO**", None: "n/a"}
    return _md(["target", "goal", "measured (medians)", "met"],
               [[t.name, t.goal, t.measured, verdict[t.met]] for t in targets])


def invalid_lines(runs: Sequence[Run]) -> list[str]:
    """One line per invalid run."""
    return [f"INVALID: round {r.round} {r.target} {r.workload}: {'; '.join(r.reasons)}"
            for r in runs if not r.valid]


def markdown(runs: Sequence[Run], summary: dict[tuple[str, str], Summary],
             targets: Sequence[Target], env: dict[str, Any], notes: Sequence[str],
             idle: IdleResult | None) -> str:
    """The whole results/benchmark.md."""
    parts = ["# Benchmark: gservers lb vs haproxy vs nginx", "",
             "Medians over the rounds (valid runs only). CPU is utime+stime of the target's "
             "own processes (psutil) per completed request; `backends µs/req` is the four "
             "async backends' CPU behind a balancer; peak RSS is VmHWM (summed over the "
             "target's processes) read after the run, so it is the peak so far.", "",
             "## Targets", "", targets_table(targets), "",
             "## Ratios", "", ratios_table(summary), "",
             "## Medians", "", medians_table(summary), ""]
    bad = invalid_lines(runs)
    parts += ["## Validity", ""]
    parts += [f"- **{line}**" for line in bad] if bad else [
        f"- all {len(runs)} runs valid (ab: 0 failed, 0 non-2xx, total = n x size; "
        f"wrk: no socket error, no non-2xx, bytes read = requests x size within 2%)."]
    if idle is not None:
        parts += ["", "## Idle connections", "",
                  f"- asked {idle.asked}, opened {idle.opened}, accepted by the lb "
                  f"{idle.accepted}, still open at the reading {idle.still_open}",
                  f"- lb VmRSS {idle.rss_before_kb / 1024:.1f} MB before, "
                  f"{idle.rss_kb / 1024:.1f} MB holding them (VmHWM {idle.hwm_kb / 1024:.1f} "
                  f"MB), {idle.seconds:.1f} s to open"]
        if idle.note:
            parts.append(f"- {idle.note}")
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    parts += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()]
    parts += ["", "Plot: `benchmark.png`. Raw runs: `benchmark.json`.", ""]
    return "\n".join(parts)


def to_json(runs: Sequence[Run], summary: dict[tuple[str, str], Summary],
            targets: Sequence[Target], env: dict[str, Any], notes: Sequence[str],
            idle: IdleResult | None) -> dict[str, Any]:
    """Everything, as a JSON-ready dict (all raw runs included)."""
    return {"environment": env, "notes": list(notes),
            "targets": [asdict(t) for t in targets],
            "summary": [asdict(s) for s in summary.values()],
            "idle": None if idle is None else asdict(idle),
            "runs": [r.to_dict() for r in runs]}
