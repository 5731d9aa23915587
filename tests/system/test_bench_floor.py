# tests/system/test_bench_floor.py -- scripts/bench_floor (loadtests.floor_bench) and its relay,
# for real.
#
# Strategy: one tiny run of the program on free ports (real backends, the real
# lb, the relay, real ab) must judge every run valid, print the table with
# both workloads and stop every server it started; the relay alone must pass
# ab -k and plain ab with every response complete, and a bad --ports gives a
# one-line error.  No figure is asserted: this machine is shared and noisy.
from __future__ import annotations

import re
import subprocess
import sys

from loadtests.supervisor import Supervisor, python
from loadtests.tools import ab
from tests.support import ROOT, free_ports, wait_port_closed

PROGRAM = [sys.executable, "-m", "loadtests.floor_bench"]


def test_tiny_run_is_valid_and_stops_its_servers() -> None:
    ports = free_ports(6)
    proc = subprocess.run([*PROGRAM, "--rounds", "1", "--requests", "2000",
                           "--ports", ",".join(map(str, ports))],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "INVALID" not in proc.stdout
    assert re.search(r"\| ab -k c=100 \| \d+ \| \d+ \| \d+ \| \d+ \| [\d.]+x \|", proc.stdout)
    assert re.search(r"\| ab c=100 \| \d+ \| \d+ \| \d+ \| \d+ \| [\d.]+x \|", proc.stdout)
    for port in ports:
        assert wait_port_closed(port), f"port {port} still listening"


def test_relay_serves_whole_responses(tmp_path) -> None:
    backend_ports = free_ports(2)
    relay_port = free_ports(1)[0]
    with Supervisor(str(tmp_path)) as sup:
        for port in backend_ports:
            sup.backend(port)
        sup.start("floor", python("loadtests.floor", str(relay_port), *map(str, backend_ports)),
                  relay_port)
        for keepalive in (True, False):
            size = ab.response_size("127.0.0.1", relay_port, "/page.html", keepalive)
            result, output = ab.run(f"http://127.0.0.1:{relay_port}/page.html", 500, 20,
                                    keepalive)
            assert ab.judge(result, 500, size) == [], output


def test_bad_ports_is_one_line_error() -> None:
    proc = subprocess.run([*PROGRAM, "--ports", "1,2,x"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "--ports" in proc.stderr and "Traceback" not in proc.stderr
