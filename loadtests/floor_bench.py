# loadtests/floor_bench.py -- ``python -m loadtests.floor_bench`` (scripts/bench_floor):
# what the balancer costs above the floor of any gevent relay on this machine.
#
# Strategy: the same four async backends behind, in turn, the gservers lb
# and loadtests/floor.py (a relay doing no HTTP work), all started by
# loadtests.supervisor, interleaved over several rounds of `ab -k -n N -c 100`
# and `ab -n N -c 100`; every run is judged (0 failed, 0 non-2xx, total = n x
# one full response) and the medians of requests/s and of each server's CPU
# per request (psutil) are printed with the ratio lb/floor.  The floor is the
# cost of gevent's waits, switches and system calls alone, so it bounds from
# below what any Python balancer on gevent can reach here.
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

from loadtests.supervisor import HOST, Process, StartError, Supervisor, python
from loadtests.tools import ab

PROG = "scripts/bench_floor"
PATH = "/page.html"
CONCURRENCY = 100
LB, FLOOR = "gservers lb", "floor relay"

#: (server name, keep-alive) -> [(req/s, CPU µs per request)] of the valid runs
Figures = dict[tuple[str, bool], list[tuple[float, float]]]


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[int]]:
    """The options, and the six ports: four backends, the lb, the relay."""
    p = argparse.ArgumentParser(
        prog=PROG, description="The lb's CPU per request against a gevent relay that does no "
        "HTTP work (loadtests/floor.py), interleaved over the same four async backends, with "
        "ab -n N -c 100 with and without keep-alive; prints medians and the lb/floor ratio.")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default: 3)")
    p.add_argument("--requests", type=int, default=20000, help="requests per ab run "
                   "(default: 20000)")
    p.add_argument("--ports", default="62202,62203,62204,62205,62300,62301",
                   help="four backends, the lb and the relay (default: %(default)s)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.requests < CONCURRENCY:
        p.error(f"--rounds must be >= 1 and --requests >= {CONCURRENCY}")
    try:
        ports = [int(x) for x in args.ports.split(",")]
    except ValueError:
        ports = []
    if len(ports) != 6 or not all(1 <= port <= 65535 for port in ports):
        p.error(f"--ports: {args.ports!r} is not six port numbers")
    return args, ports


def start(sup: Supervisor, ports: list[int]) -> dict[str, Process]:
    """The four backends, then the lb and the relay over them; name -> server."""
    backends, lb_port, floor_port = ports[:4], ports[4], ports[5]
    for port in backends:
        sup.backend(port, "async", "--log-level", "warning")
    lb = sup.balancer("--log-level", "warning", backends=backends, port=lb_port, admin=False)
    floor = sup.start("floor", python("loadtests.floor", str(floor_port),
                                      *map(str, backends)), floor_port)
    return {LB: lb.server, FLOOR: floor}


def measure(servers: dict[str, Process], rounds: int, requests: int) -> tuple[Figures, int]:
    """Every round's runs, interleaved; the valid runs' figures and how many were not."""
    sizes = {(name, keepalive): ab.response_size(HOST, proc.port, PATH, keepalive)
             for name, proc in servers.items() for keepalive in (True, False)}
    figures: Figures = {}
    invalid = 0
    for rnd in range(rounds):
        names = list(servers) if rnd % 2 == 0 else list(reversed(servers))
        for keepalive in (True, False):
            for name in names:
                proc = servers[name]
                before = proc.cpu_seconds()
                result, _ = ab.run(f"http://{HOST}:{proc.port}{PATH}", requests, CONCURRENCY,
                                   keepalive)
                cpu_us = (proc.cpu_seconds() - before) / requests * 1e6
                problems = ab.judge(result, requests, sizes[name, keepalive])
                label = f"{name:12} ab{' -k' if keepalive else '   '} round {rnd + 1}"
                if problems:
                    invalid += 1
                    print(f"INVALID {label}: {'; '.join(problems)}")
                    continue
                print(f"{label}: {result.rps:8.0f} req/s  {cpu_us:6.1f} µs CPU/request")
                figures.setdefault((name, keepalive), []).append((result.rps, cpu_us))
    return figures, invalid


def table(figures: Figures) -> list[str]:
    """The Markdown table of medians, one row per workload both servers passed."""
    lines = ["| workload | lb req/s | floor req/s | lb CPU µs/req | floor CPU µs/req "
             "| lb/floor CPU |", "|---|---|---|---|---|---|"]
    for keepalive in (True, False):
        lb, fl = figures.get((LB, keepalive), []), figures.get((FLOOR, keepalive), [])
        if not lb or not fl:
            continue
        lb_rps, lb_cpu = (statistics.median(x) for x in zip(*lb, strict=True))
        fl_rps, fl_cpu = (statistics.median(x) for x in zip(*fl, strict=True))
        ratio = f"{lb_cpu / fl_cpu:.2f}x" if fl_cpu else "- (too few requests to time)"
        lines.append(f"| ab{' -k' if keepalive else ''} c={CONCURRENCY} | {lb_rps:.0f} | "
                     f"{fl_rps:.0f} | {lb_cpu:.0f} | {fl_cpu:.0f} | {ratio} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """0 when every run was valid, 1 if any was not, 2 on a set-up error."""
    args, ports = parse_args(argv)
    try:
        ab.ab_path()
        with tempfile.TemporaryDirectory() as logs, Supervisor(logs) as sup:
            figures, invalid = measure(start(sup, ports), args.rounds, args.requests)
    except (StartError, ab.AbError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; every server started was stopped", file=sys.stderr)
        return 130
    print()
    for line in table(figures):
        print(line)
    if invalid:
        print(f"\n{PROG}: {invalid} run(s) NOT VALID, left out of the medians", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
