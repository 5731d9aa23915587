# scripts/bench_floor.py (behind scripts/bench_floor) -- what the balancer costs above
# the floor of any gevent relay on this machine.
#
# Strategy: the same four async backends behind, in turn, the gservers lb
# and loadtests/floor.py (a relay doing no HTTP work), interleaved over
# several rounds of `ab -k -n N -c 100` and `ab -n N -c 100`; every run is
# judged (0 failed, 0 non-2xx, total = n x one full response) and the
# medians of requests/s and of each server's CPU per request (psutil)
# are printed with the ratio lb/floor.  The floor is the cost of gevent's
# waits, switches and system calls alone, so it bounds from below what any
# Python balancer on gevent can reach here.
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

from loadtests import ab
from loadtests.topology import Topology, TopologyError

PROG = "scripts/bench_floor"


def main(argv: list[str] | None = None) -> int:
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
    if args.rounds < 1 or args.requests < 100:
        p.error("--rounds must be >= 1 and --requests >= 100")
    try:
        ports = [int(x) for x in args.ports.split(",")]
    except ValueError:
        p.error(f"--ports: {args.ports!r} is not six port numbers")
    if len(ports) != 6:
        p.error(f"--ports: {args.ports!r} is not six port numbers")
    backends, lb_port, floor_port = ports[:4], ports[4], ports[5]
    runs: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    invalid = 0
    with tempfile.TemporaryDirectory() as logs, Topology(logs) as top:
        try:
            for port in backends:
                top.backend(port)
            argv_lb = ["lb", "--listen", f"127.0.0.1:{lb_port}", "--admin", "off",
                       "--log-level", "warning"]
            for port in backends:
                argv_lb += ["--backend", f"127.0.0.1:{port}"]
            servers = {"gservers lb": (top.start("lb", lb_port, argv_lb), lb_port),
                       "floor relay": (top.start("floor", floor_port,
                                                 ["loadtests.floor", str(floor_port),
                                                  *map(str, backends)]), floor_port)}
        except (TopologyError, ab.AbError) as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 2
        # One full response's size per server and mode, for judging each run.
        sizes = {(name, keepalive): ab.response_size("127.0.0.1", port, "/page.html", keepalive)
                 for name, (_, port) in servers.items() for keepalive in (True, False)}
        for rnd in range(args.rounds):
            names = list(servers) if rnd % 2 == 0 else list(reversed(servers))
            for keepalive in (True, False):
                for name in names:
                    proc, port = servers[name]
                    before = proc.cpu_seconds()
                    result, _ = ab.run(f"http://127.0.0.1:{port}/page.html", args.requests,
                                       100, keepalive)
                    cpu_us = (proc.cpu_seconds() - before) / args.requests * 1e6
                    problems = ab.judge(result, args.requests, sizes[name, keepalive])
                    label = f"{name:12} ab{' -k' if keepalive else '   '} round {rnd + 1}"
                    if problems:
                        invalid += 1
                        print(f"INVALID {label}: {'; '.join(problems)}")
                        continue
                    print(f"{label}: {result.rps:8.0f} req/s  {cpu_us:6.1f} µs CPU/request")
                    runs.setdefault((name, keepalive), []).append((result.rps, cpu_us))
    print()
    print("| workload | lb req/s | floor req/s | lb CPU µs/req | floor CPU µs/req | lb/floor CPU |")
    print("|---|---|---|---|---|---|")
    for keepalive in (True, False):
        lb = runs.get(("gservers lb", keepalive), [])
        fl = runs.get(("floor relay", keepalive), [])
        if not lb or not fl:
            continue
        lb_rps, lb_cpu = (statistics.median(x) for x in zip(*lb, strict=True))
        fl_rps, fl_cpu = (statistics.median(x) for x in zip(*fl, strict=True))
        print(f"| ab{' -k' if keepalive else ''} c=100 | {lb_rps:.0f} | {fl_rps:.0f} | "
              f"{lb_cpu:.0f} | {fl_cpu:.0f} | "
              f"{f'{lb_cpu / fl_cpu:.2f}x' if fl_cpu else '- (too few requests to time)'} |")
    if invalid:
        print(f"\n{PROG}: {invalid} run(s) NOT VALID, left out of the medians", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
