# loadtests/__main__.py -- the sweep: ``python -m loadtests`` (scripts/sweep).
#
# Strategy: the entry module only parses arguments and sequences the work:
# pick the rows (the seed's models, the reference balancers that are
# installed, the user's targets; loadtests.rows), start their servers with
# loadtests.supervisor, learn each row's full response size, measure every
# cell --repeat times in interleaved rounds (loadtests.runs), fold the runs
# into cells with their spread and ratios per round (loadtests.aggregate),
# write results/latest/ (loadtests.results) and print the table.  Every
# server is stopped on the way out, on success, error or Ctrl-C alike; any
# invalid cell makes the exit code 1.
from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import sys
import tempfile
import time
from typing import Any

from gservers.net.listen import raise_nofile_limit
from gservers.settings import ArgumentParser
from loadtests import aggregate, report, results, rows, runs, supervisor, workload
from loadtests.benchmark.fleet import package_version, tool_version
from loadtests.cell import MODELS, REFERENCES, Cell
from loadtests.supervisor import StartError, Supervisor
from loadtests.tools import ab

PROG = "scripts/sweep"
BACKEND_PORTS = [9002, 9003, 9004, 9005]
THREAD_PORT = 9006
LB_PORT = 44444
ADMIN_PORT = 44445
HAPROXY_PORT = 44446
NGINX_PORT = 44447


def _csv(kind: type, allowed: tuple | None = None, upper: int = 20000, what: str = "concurrency",
         none: bool = False):
    def parse(text: str) -> list:
        if none and text.strip() == "none":
            return []
        try:
            items = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad list {text!r}") from None
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        for item in items:
            if allowed and item not in allowed:
                raise argparse.ArgumentTypeError(
                    f"{item!r} is not one of {', '.join(allowed)}")
            if kind is int and not 1 <= item <= upper:
                raise argparse.ArgumentTypeError(f"{what} {item} is not 1..{upper}")
        return items
    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not 1..65535")
    return value


def _target(text: str) -> rows.Target:
    try:
        return rows.parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workload(text: str) -> workload.Workload:
    try:
        return workload.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _repeat(text: str) -> int:
    value = _positive(text)
    if value > 50:
        raise argparse.ArgumentTypeError(f"{value} rounds is more than 50")
    return value


def parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Reproduce the seed experiment: N requests at each concurrency level "
                    "against the Asynchronous (one async backend), Thread (thread-per-"
                    "connection backend) and Asynchronous+LB (balancer over four async "
                    "backends) models, beside haproxy and nginx over the same backends and "
                    "any server given with --target, with ApacheBench and/or Locust. Every "
                    "cell is measured --repeat times in interleaved rounds and shown as its "
                    "median run with the range; it is valid only when every run had 0 failed, "
                    "0 non-2xx and total transferred = N x one full response.")
    p.add_argument("--models", type=_csv(str, tuple(MODELS), none=True), default=list(MODELS),
                   help="models to measure, or none (default: async,thread,lb)")
    p.add_argument("--references", type=_csv(str, tuple(REFERENCES), none=True), default=None,
                   help="reference balancers over the same four async backends: haproxy, "
                        "nginx, or none (default: those installed, when the lb model is "
                        "measured; one asked for by name must be installed)")
    p.add_argument("--target", type=_target, action="append", default=[], metavar="NAME=URL",
                   help="also measure a server you run yourself, e.g. "
                        "mine=http://127.0.0.1:8080/page.html (repeatable; the URL's path, "
                        "or --path; its response size is learned from one GET first)")
    p.add_argument("--repeat", type=_repeat, default=3,
                   help="runs per cell, in interleaved rounds with the rows' order rotated "
                        "each round (default: 3)")
    p.add_argument("--levels", type=_csv(int), default=[1, 10, 100, 500, 1000],
                   help="concurrency levels (default: 1,10,100,500,1000)")
    p.add_argument("--requests", type=_positive, default=1000,
                   help="requests per cell, like ab -n (default: 1000)")
    p.add_argument("--keepalive", action="store_true",
                   help="ab with -k (HTTP keep-alive); Locust always keeps alive")
    p.add_argument("--tool", choices=("ab", "locust", "both"), default="ab",
                   help="load generator (default: ab)")
    p.add_argument("--workload", type=_workload, default=workload.Workload("static"),
                   metavar="static|cpu:MS|wait:MS",
                   help="what every request asks: static (the --path page), cpu:MS (the "
                        "backends' /work/cpu: burn about MS ms of CPU) or wait:MS (/work/wait: "
                        "wait MS ms without CPU) (default: static)")
    p.add_argument("--path", default=None,
                   help="path requested by the static workload (default: /page.html)")
    p.add_argument("--backend-ports", type=_csv(int, upper=65535, what="port"),
                   default=BACKEND_PORTS, metavar="P,P,P,P",
                   help="ports of the async backends; the first is the Asynchronous model "
                        "(default: 9002,9003,9004,9005)")
    p.add_argument("--thread-port", type=_port, default=THREAD_PORT,
                   help=f"port of the thread backend (default: {THREAD_PORT})")
    p.add_argument("--lb-port", type=_port, default=LB_PORT,
                   help=f"port of the balancer (default: {LB_PORT})")
    p.add_argument("--admin-port", type=_port, default=ADMIN_PORT,
                   help=f"port of the balancer's admin listener (default: {ADMIN_PORT})")
    p.add_argument("--haproxy-port", type=_port, default=HAPROXY_PORT,
                   help=f"port of the haproxy reference (default: {HAPROXY_PORT})")
    p.add_argument("--nginx-port", type=_port, default=NGINX_PORT,
                   help=f"port of the nginx reference (default: {NGINX_PORT})")
    p.add_argument("--lb-workers", type=_positive, default=1,
                   help="balancer worker processes (default: 1, as in the original experiment)")
    p.add_argument("--out", default=os.path.join("results", "latest"),
                   help="directory for results.md/.csv/.json, the plots and the servers' logs "
                        "(default: results/latest, not tracked by git; the committed reference "
                        "run is results/reference)")
    return p


def environment(args: argparse.Namespace, refs: list[str], wall: float) -> dict[str, Any]:
    """What the sweep ran on and with."""
    somaxconn = open("/proc/sys/net/core/somaxconn").read().strip() if os.path.exists(
        "/proc/sys/net/core/somaxconn") else "-"
    env = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "python": platform.python_version(),
        "gservers / gevent / greenlet / httptools / locust": " / ".join(
            package_version(n) for n in ("gservers", "gevent", "greenlet", "httptools", "locust")),
        "ab": tool_version(["ab", "-V"]),
        "tool": args.tool, "requests per run": args.requests, "runs per cell": args.repeat,
        "keep-alive (ab)": args.keepalive, "workload": args.workload.name, "path": args.path,
        "backend backlog": 2048, "balancer backlog": 4096, "somaxconn": somaxconn,
        "open files limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "topology": f"async backends 127.0.0.1:{','.join(map(str, args.backend_ports))}, "
                    f"thread backend :{args.thread_port}, balancer :{args.lb_port} (round_robin, "
                    f"{args.lb_workers} worker{'s' if args.lb_workers > 1 else ''})",
    }
    if "haproxy" in refs:
        env["haproxy"] = (f"{tool_version([rows.find_tool('haproxy') or 'haproxy', '-v'])} on "
                          f":{args.haproxy_port} (nbthread 1, roundrobin, http-reuse always)")
    if "nginx" in refs:
        env["nginx"] = (f"{tool_version([rows.find_tool('nginx') or 'nginx', '-v'])} on "
                        f":{args.nginx_port} (1 worker, upstream keepalive 64)")
    for t in args.target:
        env[f"target {t.name}"] = f"http://{t.host}:{t.port}{t.path or args.path}"
    env["wall time"] = f"{wall:.0f} s"
    env["note"] = "load generator and servers share the same CPUs"
    return env


def _measure(args: argparse.Namespace, refs: list[str], tools: list[str]) -> list[Cell]:
    """Start the rows' servers, size their responses and run every run."""
    ports = {"thread": args.thread_port, "lb": args.lb_port, "admin": args.admin_port,
             "haproxy": args.haproxy_port, "nginx": args.nginx_port}
    levels = args.levels
    with Supervisor(os.path.join(args.out, "logs")) as sup, \
            tempfile.TemporaryDirectory(prefix="gservers-sweep-") as tmp:
        table_rows = rows.start_rows(sup, args.models, refs, args.target, ports,
                                     args.backend_ports, args.path, tmp, args.lb_workers)
        rows.size_rows(table_rows, args.keepalive)
        progress = runs.Progress({tool: len(table_rows) * len(levels) * args.repeat
                                  for tool in tools})
        cells: list[Cell] = []
        if "ab" in tools:
            cells += runs.ab_runs(table_rows, levels, args.requests, args.keepalive,
                                  args.repeat, progress)
        if "locust" in tools:
            cells += runs.locust_runs(table_rows, levels, args.requests, args.repeat, progress)
    return cells


def _report(args: argparse.Namespace, cells: list[Cell], refs: list[str], notes: list[str],
            wall: float) -> int:
    keys = [*args.models, *refs, *(t.name for t in args.target)]
    pairs = aggregate.RATIO_PAIRS + [(t.name, "async") for t in args.target]
    summaries = aggregate.ordered(aggregate.summarise(cells), keys)
    ratios = aggregate.ratios(cells, pairs)
    files = results.write_all(summaries, ratios, environment(args, refs, wall), args.out, notes,
                              args.workload, args.path)
    print(f"Workload {args.workload.name} ({args.path}): {args.workload.shows}\n")
    print(report.cells_table(summaries))
    print()
    for line in report.summary(summaries, ratios) + [f"Note: {n}" for n in notes]:
        print(line)
    print(f"\nwrote {', '.join(files)} in {wall:.0f} s")
    invalid = [s for s in summaries if not s.valid]
    if not invalid:
        return 0
    print(f"\n{PROG}: {len(invalid)} INVALID cell(s) — these figures do not count:",
          file=sys.stderr)
    for s in invalid:
        for run in s.invalid_runs:
            print(f"  {s.tool} {s.name} c={s.level} round {run.round}: "
                  f"{'; '.join(run.reasons)}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.path is not None and args.workload.kind != "static":
        print(f"{PROG}: error: --path is for the static workload; --workload "
              f"{args.workload.name} asks for {args.workload.path('')}", file=sys.stderr)
        return 2
    args.path = args.workload.path(args.path or "/page.html")
    try:
        refs, notes = rows.references(args.references, args.models)
    except ValueError as exc:
        print(f"{PROG}: error: --references: {exc}", file=sys.stderr)
        return 2
    names = [t.name for t in args.target]
    if len(set(names)) != len(names):
        print(f"{PROG}: error: --target names must differ: {', '.join(names)}", file=sys.stderr)
        return 2
    if not args.models and not refs and not args.target:
        print(f"{PROG}: error: nothing to measure: --models none and no --references or "
              "--target", file=sys.stderr)
        return 2
    if args.tool in ("ab", "both"):
        try:
            ab.ab_path()
        except ab.AbError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
    raise_nofile_limit()
    supervisor.interrupt_on(signal.SIGTERM)
    tools = ["ab", "locust"] if args.tool == "both" else [args.tool]
    started = time.monotonic()
    try:
        cells = _measure(args, refs, tools)
    except StartError as exc:
        print(f"\n{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"\n{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; every server started was stopped", file=sys.stderr)
        return 130
    return _report(args, cells, refs, notes, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
