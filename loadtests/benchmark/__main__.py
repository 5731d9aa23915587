# loadtests/benchmark/__main__.py -- ``python -m loadtests.benchmark`` (scripts/benchmark):
# the gservers balancer against haproxy and nginx.
#
# Strategy: this module only reads the command line and sequences the work:
# find the programs, start the fleet (fleet.py, on loadtests.supervisor),
# run the plan (workloads.py) one step at a time (runner.py), let the lb hold
# idle connections (idle.py), reduce the runs to medians and targets
# (stats.py, targets.py), write and print the report (report.py).  Every
# server started is stopped by PID on the way out -- on success, error or
# Ctrl-C alike; any invalid run makes the exit code 1, a set-up error 2.
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import psutil

from gservers.net.listen import raise_nofile_limit
from loadtests import procstats, supervisor
from loadtests.benchmark import fleet, report, stats
from loadtests.benchmark import workloads as wl
from loadtests.benchmark.idle import IdleResult, idle_connections
from loadtests.benchmark.runner import Runner, say
from loadtests.benchmark.targets import check_targets
from loadtests.supervisor import HOST, StartError, Supervisor
from loadtests.tools import ab

PROG = "scripts/benchmark"
TICKS = os.sysconf("SC_CLK_TCK")
DESCRIPTION = f"""\
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
  large file: ab -n L -c 10 of a 10 MiB file (L = --large-requests), one more
              async backend (sendfile) vs a static nginx (sendfile on) on it
  https: ab -n H -c 100 without and with -k (H = --https-requests) on each
              balancer again, terminating TLS with one self-signed certificate
Every ab run is judged with loadtests.tools.ab.judge (0 failed, 0 non-2xx,
total = n x one full response) and every wrk run with loadtests.tools.wrk.judge
(no socket error, no non-2xx, bytes = requests x size); invalid runs are marked
loudly, left out of the medians and make the exit code 1. CPU per request is utime+stime
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
DIR/benchmark.png. A default run takes about 5-7 minutes."""


def _whole(text: str, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(
            f"{value} is not {low}..{high}" if high is not None else
            "must be 0 or more" if low == 0 else f"must be at least {low}")
    return value


def _positive(text: str) -> int:
    return _whole(text, 1)


def _non_negative(text: str) -> int:
    return _whole(text, 0)


def _port(text: str) -> int:
    return _whole(text, 1, 65535)


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad list {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"bad list {text!r}")
    return values


def _ports(text: str) -> list[int]:
    values = _ints(text)
    if any(v > 65535 for v in values):
        raise argparse.ArgumentTypeError(f"bad port list {text!r}")
    return values


def _only(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    for name in names:
        if name not in wl.BALANCERS:
            raise argparse.ArgumentTypeError(
                f"{name!r} is not one of {', '.join(wl.BALANCERS)}")
    if not names:
        raise argparse.ArgumentTypeError("empty list")
    return [b for b in wl.BALANCERS if b in names]


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=_positive, default=None,
                   help="repetitions of every workload; figures are medians (default: 3, "
                        "1 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: --requests 2000, --wrk-duration 2, 1 round")
    p.add_argument("--only", type=_only, default=list(wl.BALANCERS),
                   metavar="gservers,haproxy,nginx",
                   help="balancers to run (default: all three); the nginx return-200 "
                        "reference runs with nginx")
    p.add_argument("--out", default=os.path.join(fleet.ROOT, "results", "latest"),
                   metavar="DIR",
                   help="where benchmark.md/.json/.png go (default: results/latest/, not "
                        "tracked by git; the committed reference runs are results/reference/)")
    p.add_argument("--requests", type=_positive, default=None,
                   help="requests per big ab run (default: 20000, 2000 with --quick)")
    p.add_argument("--wrk-duration", type=_positive, default=None, metavar="SECONDS",
                   help="seconds per wrk run (default: 5, 2 with --quick)")
    p.add_argument("--levels", type=_ints, default=[1, 10, 100, 500, 1000],
                   help="seed sweep concurrency levels (default: 1,10,100,500,1000)")
    p.add_argument("--large-requests", type=_non_negative, default=None, metavar="N",
                   help="requests per large-file run, ab -c 10 of a 10 MiB file; 0 skips "
                        "the row (default: 200, 20 with --quick)")
    p.add_argument("--https-requests", type=_non_negative, default=None, metavar="N",
                   help="requests per HTTPS-row run (each balancer terminating TLS, ab -c 100 "
                        "with and without -k); 0 skips the row (default: 5000, 500 with "
                        "--quick)")
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


def _port_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend-ports", type=_ports, default=[62002, 62003, 62004, 62005],
                   metavar="P,P,P,P", help="the four async backends (default: 62002-62005)")
    p.add_argument("--thread-port", type=_port, default=62006,
                   help="the thread-model backend (default: 62006)")
    p.add_argument("--lb-port", type=_port, default=62100,
                   help="the gservers lb (default: 62100)")
    p.add_argument("--haproxy-port", type=_port, default=62101,
                   help="haproxy (default: 62101)")
    p.add_argument("--nginx-port", type=_port, default=62102,
                   help="the nginx balancer (default: 62102)")
    p.add_argument("--nginx-ref-port", type=_port, default=62103,
                   help="the nginx return-200 reference backend (default: 62103)")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _run_options(p)
    _port_options(p)
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on --quick; check cross-option rules."""
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.requests is None:
        args.requests = 2000 if args.quick else 20000
    if args.wrk_duration is None:
        args.wrk_duration = 2 if args.quick else 5
    if args.large_requests is None:
        args.large_requests = 20 if args.quick else 200
    if args.https_requests is None:
        args.https_requests = 500 if args.quick else 5000
    if 0 < args.https_requests < wl.CONCURRENCY:
        parser().error(f"--https-requests must be 0 or at least {wl.CONCURRENCY}")
    if 0 < args.large_requests < wl.LARGE_CONCURRENCY:
        parser().error(f"--large-requests must be 0 or at least {wl.LARGE_CONCURRENCY}")
    if args.requests < wl.CONCURRENCY:
        parser().error(f"--requests must be at least {wl.CONCURRENCY}")
    if args.seed_requests < max(args.levels):
        parser().error(f"--seed-requests {args.seed_requests} is below the highest level "
                       f"{max(args.levels)} (ab needs n >= c)")
    if len(args.backend_ports) != 4:
        parser().error("--backend-ports takes four ports")
    if args.pause < 0:
        parser().error("--pause must be 0 or more")
    return args


def _our_cpu() -> float:
    """CPU seconds of this process and every child it has waited for (ab, wrk,
    and the servers once stopped, with what they waited for in turn)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    return [f"{load:.2f}" for load in psutil.getloadavg()]


def _machine_note(busy0: float, ours0: float, load0: list[str]) -> str:
    """What other processes used of the machine during the run."""
    busy, ours = procstats.machine_busy_seconds() - busy0, _our_cpu() - ours0
    return (f"other processes on this machine used {max(0.0, busy - ours):.0f} CPU s of "
            f"the {busy:.0f} CPU s busy during the run (load average "
            f"{' '.join(load0)} at the start, {' '.join(_loadavg())} at the end)")


def _tools(args: argparse.Namespace) -> tuple[dict[str, str | None], list[str]]:
    """The programs' paths, and the notes the report starts with."""
    wanted = [t for t in ("haproxy", "nginx") if t in args.only] + ["wrk"] + (
        ["openssl"] if args.https_requests else [])
    paths, notes = fleet.ensure_tools(wanted)
    for note in notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    if "gservers" not in args.only:
        notes.append("gservers lb not run (--only): the lb targets are n/a")
    notes.append(f"CPU times are counted in 1/{TICKS} s ticks: a 1000-request run's "
                 f"CPU per request is good to about ±{1e6 / TICKS / 1000:.0f} µs")
    return paths, notes


def _measure(args: argparse.Namespace, paths: dict[str, str | None],
             notes: list[str]) -> tuple[Runner, IdleResult | None]:
    """Start the fleet, run the plan and the idle-connection probe, stop the
    fleet (also on an error or Ctrl-C)."""
    tmp = tempfile.mkdtemp(prefix="gservers-bench-")
    os.chmod(tmp, 0o755)  # nginx's workers may run as another user
    idle = None
    try:
        with Supervisor(tmp) as sup:
            targets = fleet.start_servers(sup, args, paths, tmp)
            if args.large_requests:
                targets.update(fleet.start_large_file(sup, args, paths, tmp))
            if args.https_requests:
                targets.update(fleet.start_https(sup, args, paths, tmp))
            runner = Runner(targets, paths.get("wrk"), args.wrk_duration, args.pause)
            steps = wl.plan(targets, args.rounds, args.levels, args.requests,
                            args.seed_requests, runner.wrk_path is not None,
                            args.large_requests, args.https_requests)
            say(f"{PROG}: {len(steps)} runs over {args.rounds} round(s): {', '.join(targets)}")
            runner.run_all(steps)
            if "gservers" in targets and args.idle_connections:
                say(f"{PROG}: the lb holds {args.idle_connections} idle connections...")
                idle = idle_connections(targets["gservers"].server, args.lb_port,
                                        args.idle_connections)
                if idle.note:
                    notes.append(f"idle connections: {idle.note}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return runner, idle


def _report(args: argparse.Namespace, env: dict[str, Any], runner: Runner, notes: list[str],
            idle: IdleResult | None) -> int:
    """Write the files, print the tables; 1 when a run was invalid."""
    runs = runner.runs
    summary = stats.summarize(runs)
    if not runner.wrk_path:
        notes.append("wrk missing: the backend-vs-nginx reference used ab -k instead of wrk")
    met = check_targets(summary, args.levels, wl.direct("wrk" if runner.wrk_path else "ab"),
                        idle)
    files = report.write_all(args.out, runs, summary, met, env, notes, idle, args.levels)
    print("\n## Medians\n")
    print(report.medians_table(summary))
    print("\n## Ratios\n")
    print(report.ratios_table(summary))
    print(f"\n## Targets (gservers lb with {args.lb_workers} worker(s))\n")
    print(report.targets_table(met))
    if idle is not None:
        print(f"\nidle: {idle.accepted}/{idle.asked} accepted, {idle.still_open} still open, "
              f"lb VmRSS {idle.rss_before_kb / 1024:.1f} -> {idle.rss_kb / 1024:.1f} MB")
    for note in notes:
        print(f"note: {note}")
    print(f"\nwrote {', '.join(files)}")
    bad = stats.invalid_lines(runs)
    if bad:
        print(f"\n{PROG}: {len(bad)} INVALID run(s) -- left out of the medians:",
              file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every run was valid, 1 if any was not, 2 on a
    set-up error, 130 when interrupted."""
    args = resolve(parser().parse_args(argv))
    started = time.monotonic()
    machine0 = (procstats.machine_busy_seconds(), _our_cpu(), _loadavg())
    try:
        ab.ab_path()
    except ab.AbError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    raise_nofile_limit()
    supervisor.interrupt_on(signal.SIGTERM)
    paths, notes = _tools(args)
    try:
        runner, idle = _measure(args, paths, notes)
    except StartError as exc:
        print(f"\n{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; every server started was stopped", file=sys.stderr)
        return 130
    notes.append(_machine_note(*machine0))
    try:
        return _report(args, fleet.environment(args, paths, started), runner, notes, idle)
    except OSError as exc:
        print(f"{PROG}: error: cannot write to {args.out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
