# loadtests/__main__.py -- the sweep: ``python -m loadtests`` (scripts/sweep).
#
# Strategy: the entry module only parses arguments and sequences the work:
# start the topology (four async backends, a thread backend, the balancer)
# with loadtests.supervisor, run each (tool, model, level) cell, judge it,
# write results/latest/ and print the table.  The figures come from
# loadtests.tools.ab and the locustfile; the files and plots from
# loadtests.report.  Every server is stopped on the way out, on success,
# error or Ctrl-C alike; any invalid cell makes the exit code 1.
from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import Any

from gservers.net.listen import raise_nofile_limit
from gservers.settings import ArgumentParser
from loadtests import report, supervisor
from loadtests.cell import MODELS, Cell, from_ab
from loadtests.supervisor import Process, StartError, Supervisor
from loadtests.tools import ab

PROG = "scripts/sweep"
BACKEND_PORTS = [9002, 9003, 9004, 9005]
THREAD_PORT = 9006
LB_PORT = 44444
ADMIN_PORT = 44445


def _csv(kind: type, allowed: tuple | None = None, upper: int = 20000, what: str = "concurrency"):
    def parse(text: str) -> list:
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


def parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Reproduce the seed experiment: N requests at each concurrency level "
                    "against the Asynchronous (one async backend), Thread (thread-per-"
                    "connection backend) and Asynchronous+LB (balancer over four async "
                    "backends) models, with ApacheBench and/or Locust. Every cell is checked: "
                    "0 failed, 0 non-2xx, total transferred = N x one full response.")
    p.add_argument("--models", type=_csv(str, tuple(MODELS)), default=list(MODELS),
                   help="models to measure (default: async,thread,lb)")
    p.add_argument("--levels", type=_csv(int), default=[1, 10, 100, 500, 1000],
                   help="concurrency levels (default: 1,10,100,500,1000)")
    p.add_argument("--requests", type=_positive, default=1000,
                   help="requests per cell, like ab -n (default: 1000)")
    p.add_argument("--keepalive", action="store_true",
                   help="ab with -k (HTTP keep-alive); Locust always keeps alive")
    p.add_argument("--tool", choices=("ab", "locust", "both"), default="ab",
                   help="load generator (default: ab)")
    p.add_argument("--path", default="/page.html", help="path requested (default: /page.html)")
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
    p.add_argument("--lb-workers", type=_positive, default=1,
                   help="balancer worker processes (default: 1, as in the original experiment)")
    p.add_argument("--out", default=os.path.join("results", "latest"),
                   help="directory for results.md/.csv/.json, the plots and the servers' logs "
                        "(default: results/latest, not tracked by git; the committed reference "
                        "run is results/reference)")
    return p


def _progress(done: int, total: int, label: str) -> None:
    if not sys.stderr.isatty():  # a log file gets one plain line per step
        sys.stderr.write(f"[{done}/{total}] {label}\n")
        return
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _targets(sup: Supervisor, args: argparse.Namespace) -> dict[str, tuple[int, list[Process]]]:
    """Start what the models need; model -> (port, server processes)."""
    models, ports = args.models, args.backend_ports
    quiet = ("--log-level", "warning")
    backends = [sup.backend(port, "async", *quiet) for port in ports] if (
        "async" in models or "lb" in models) else []
    out: dict[str, tuple[int, list[Process]]] = {}
    if "async" in models:
        out["async"] = (ports[0], backends[:1])
    if "thread" in models:
        out["thread"] = (args.thread_port, [sup.backend(args.thread_port, "thread", *quiet)])
    if "lb" in models:
        lb = sup.balancer(*quiet, "--workers", str(args.lb_workers), backends=ports,
                          port=args.lb_port, admin=args.admin_port, timeout=20.0)
        out["lb"] = (args.lb_port, [lb.server] + backends)
    return out


def _ab_cells(args: argparse.Namespace, targets: dict, step: list[int], total: int) -> list[Cell]:
    cells = []
    for model in args.models:
        port, procs = targets[model]
        size = ab.response_size("127.0.0.1", port, args.path, args.keepalive)
        for level in args.levels:
            step[0] += 1
            _progress(step[0] - 1, total, f"ab {MODELS[model]} c={level}")
            cpu0 = sum(p.cpu_seconds() for p in procs)
            client0 = _children_cpu()
            result, _ = ab.run(f"http://127.0.0.1:{port}{args.path}", args.requests, level,
                               args.keepalive)
            result.concurrency = result.concurrency or level
            cell = from_ab(result, model, args.requests, args.keepalive, size)
            cell.server_cpu = sum(p.cpu_seconds() for p in procs) - cpu0
            cell.client_cpu = _children_cpu() - client0
            cells.append(cell)
            time.sleep(0.2)  # let the last connections close before the next cell
    return cells


def _locust_cells(args: argparse.Namespace, targets: dict, step: list[int],
                  total: int) -> list[Cell]:
    cells = []
    here = os.path.dirname(os.path.abspath(__file__))
    for model in args.models:
        port, procs = targets[model]
        step[0] += len(args.levels)
        _progress(step[0] - len(args.levels), total, f"locust {MODELS[model]}")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "cells.json")
            cpu0 = sum(p.cpu_seconds() for p in procs)
            argv = ["locust", "-f", os.path.join(here, "sweep.py"), "--headless",
                    "-H", f"http://127.0.0.1:{port}", "--sweep-levels",
                    ",".join(map(str, args.levels)), "--sweep-requests", str(args.requests),
                    "--sweep-model", model, "--sweep-path", args.path, "--sweep-out", out,
                    "--loglevel", "WARNING", "--only-summary"]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
            if not os.path.exists(out):
                raise RuntimeError(f"locust wrote no results (exit {proc.returncode}):\n"
                                   + proc.stderr[-2000:])
            got, _ = report.read_json(out)
            spent = sum(p.cpu_seconds() for p in procs) - cpu0
            done = sum(c.complete for c in got) or 1
            for cell in got:  # the run's server CPU, shared out by requests served
                cell.server_cpu = spent * cell.complete / done
            cells.extend(got)
    return cells


def environment(args: argparse.Namespace) -> dict[str, Any]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"
    try:
        ab_version = subprocess.run(["ab", "-V"], capture_output=True, text=True).stdout.split(
            "\n")[0]
    except OSError:
        ab_version = "-"
    somaxconn = open("/proc/sys/net/core/somaxconn").read().strip() if os.path.exists(
        "/proc/sys/net/core/somaxconn") else "-"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "python": platform.python_version(),
        "gservers / gevent / greenlet / httptools / locust": " / ".join(
            version(n) for n in ("gservers", "gevent", "greenlet", "httptools", "locust")),
        "ab": ab_version,
        "tool": args.tool, "requests per cell": args.requests, "keep-alive (ab)": args.keepalive,
        "path": args.path, "backend backlog": 2048, "balancer backlog": 4096,
        "somaxconn": somaxconn,
        "open files limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "topology": f"async backends 127.0.0.1:{','.join(map(str, args.backend_ports))}, "
                    f"thread backend :{args.thread_port}, balancer :{args.lb_port} (round_robin, "
                    f"{args.lb_workers} worker{'s' if args.lb_workers > 1 else ''})",
        "note": "load generator and servers share the same CPUs",
    }


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.tool in ("ab", "both"):
        try:
            ab.ab_path()
        except ab.AbError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
    raise_nofile_limit()
    supervisor.interrupt_on(signal.SIGTERM)
    tools = ["ab", "locust"] if args.tool == "both" else [args.tool]
    total = len(tools) * len(args.models) * len(args.levels)
    cells: list[Cell] = []
    log_dir = os.path.join(args.out, "logs")
    try:
        with Supervisor(log_dir) as sup:
            targets = _targets(sup, args)
            step = [0]
            if "ab" in tools:
                cells += _ab_cells(args, targets, step, total)
            if "locust" in tools:
                cells += _locust_cells(args, targets, step, total)
            _progress(total, total, "done")
    except StartError as exc:
        print(f"\n{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; every server started was stopped", file=sys.stderr)
        return 130
    files = report.write_all(cells, environment(args), args.out)
    print(report.table(cells))
    print()
    for line in report.summary(cells):
        print(line)
    print("\nwrote " + ", ".join(files))
    invalid = [c for c in cells if not c.valid]
    if invalid:
        print(f"\n{PROG}: {len(invalid)} INVALID cell(s) — these figures do not count:",
              file=sys.stderr)
        for c in invalid:
            print(f"  {c.tool} {c.model_name} c={c.concurrency}: {'; '.join(c.reasons)}",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
