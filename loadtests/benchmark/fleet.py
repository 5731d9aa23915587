# loadtests/benchmark/fleet.py -- the servers the benchmark measures, on the supervisor.
#
# Strategy: every server is a real process started through its real command
# line by loadtests.supervisor on 127.0.0.1 (ready when GET /health on its
# port answers 200; its log in the run's temporary directory; stopped by PID,
# newest first, with whatever it started): four async backends, one
# thread-model backend, the gservers lb over the four, haproxy and nginx over
# the same four (configs from loadtests.benchmark.configs), and an nginx
# ``return 200`` server as a reference backend.  Each becomes an Endpoint:
# the process load is sent to, and the backends measured apart behind it.
# The programs come from PATH or the sbin directories a non-root PATH lacks;
# a missing one has its rows skipped with a note.  The run's environment
# (machine, versions, ports) is described here too.
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtests.benchmark import configs
from loadtests.benchmark.workloads import CONCURRENCY
from loadtests.supervisor import HOST, Process, Supervisor

ROOT = str(Path(__file__).resolve().parents[2])
PATH = "/page.html"
PAGE = os.path.join(ROOT, "gservers", "site", "page.html")
#: What is skipped when a program is missing.
SKIPPED = {"haproxy": "haproxy rows skipped",
           "nginx": "nginx rows and the nginx return-200 reference skipped",
           "wrk": "wrk rows skipped; the direct reference uses ab -k"}


@dataclass
class Endpoint:
    """Something load is sent to: a balancer or a reference server."""

    name: str
    server: Process
    backends: list[Process] = field(default_factory=list)  #: measured apart (balancers)

    @property
    def port(self) -> int:
        return self.server.port


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
    see scripts/env.sh); the paths (None when missing) and notes for the
    report saying what is skipped without them."""
    paths = {name: find_tool(name) for name in names}
    notes = [f"{name} is not available: {SKIPPED[name]}" for name in names if not paths[name]]
    return paths, notes


def tool_version(argv: list[str]) -> str:
    """The first line a program prints about its version, or "-"."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "-"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else "-"


def start_haproxy(sup: Supervisor, program: str, port: int, backends: list[int],
                  tmp: str) -> Process:
    """haproxy on ``port`` over ``backends`` (configs.haproxy_config), its config in ``tmp``."""
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as fh:
        fh.write(configs.haproxy_config(port, backends, host=HOST))
    return sup.start("haproxy", [program, "-db", "-f", cfg], port, timeout=30, cwd=ROOT)


def start_nginx(sup: Supervisor, program: str, name: str, lb_port: int | None,
                ref_port: int | None, backends: list[int], tmp: str) -> Process:
    """nginx as a balancer on ``lb_port`` over ``backends`` or as the return-200
    server on ``ref_port``, in its own folder ``name`` under ``tmp``."""
    folder = os.path.join(tmp, name)
    os.makedirs(folder, mode=0o755)
    cfg = os.path.join(folder, "nginx.conf")
    body = configs.filler_body(os.path.getsize(PAGE))
    with open(cfg, "w") as fh:
        fh.write(configs.nginx_config(folder, lb_port, ref_port, backends, body, host=HOST))
    port = lb_port or ref_port
    assert port is not None
    return sup.start(name, [program, "-p", folder, "-c", cfg, "-e",
                            os.path.join(folder, "nginx-error.log")], port, timeout=30, cwd=ROOT)


def start_servers(sup: Supervisor, args: argparse.Namespace, paths: dict[str, str | None],
                  tmp: str) -> dict[str, Endpoint]:
    """Start everything the run needs (``args.only`` names the balancers);
    target name -> Endpoint.  Raises supervisor.StartError."""
    quiet = ("--log-level", "warning")
    backends = [sup.backend(port, "async", *quiet, timeout=30, cwd=ROOT)
                for port in args.backend_ports]
    thread = sup.backend(args.thread_port, "thread", *quiet, timeout=30, cwd=ROOT)
    out = {"async backend": Endpoint("async backend", backends[0]),
           "thread backend": Endpoint("thread backend", thread)}
    if "gservers" in args.only:
        lb = sup.balancer("--policy", "round_robin", *quiet, "--workers", str(args.lb_workers),
                          backends=args.backend_ports, port=args.lb_port, admin=False, cwd=ROOT)
        out["gservers"] = Endpoint("gservers", lb.server, backends)
    if "haproxy" in args.only and paths.get("haproxy"):
        out["haproxy"] = Endpoint("haproxy", start_haproxy(
            sup, paths["haproxy"], args.haproxy_port, args.backend_ports, tmp), backends)
    if "nginx" in args.only and paths.get("nginx"):
        out["nginx"] = Endpoint("nginx", start_nginx(
            sup, paths["nginx"], "nginx", args.nginx_port, None, args.backend_ports, tmp),
            backends)
        out["nginx return-200"] = Endpoint("nginx return-200", start_nginx(
            sup, paths["nginx"], "nginx-return-200", None, args.nginx_ref_port,
            args.backend_ports, tmp))
    return out


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _sysctl(name: str) -> str:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as fh:
            return fh.read().strip()
    except OSError:
        return "-"


def environment(args: argparse.Namespace, paths: dict[str, str | None],
                started: float) -> dict[str, Any]:
    """What the run was done on and with."""
    def version_of(tool: str, flag: str, missing: str) -> str:
        return tool_version([paths[tool], flag]) if paths.get(tool) else missing
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}"
                   " (load generator and servers share them)",
        "python / gevent / greenlet": f"{platform.python_version()} / {_version('gevent')} / "
                                      f"{_version('greenlet')}",
        "ab": tool_version(["ab", "-V"]),
        "wrk version": version_of("wrk", "--version", "not available"),
        "haproxy": version_of("haproxy", "-v", "not run"),
        "nginx": version_of("nginx", "-v", "not run"),
        "balancers": ", ".join(args.only),
        "gservers lb workers": args.lb_workers,
        "rounds": args.rounds,
        "big ab runs": f"-n {args.requests} -c {CONCURRENCY}",
        "wrk runs": f"-t1 -c{CONCURRENCY} -d{args.wrk_duration}s",
        "seed sweep": f"ab -n {args.seed_requests} at c={','.join(map(str, args.levels))}",
        "path": f"{PATH} ({os.path.getsize(PAGE)}-byte body)",
        "ports": f"backends {','.join(map(str, args.backend_ports))}, thread "
                 f"{args.thread_port}, lb {args.lb_port}, haproxy {args.haproxy_port}, "
                 f"nginx {args.nginx_port}, nginx return-200 {args.nginx_ref_port}",
        "somaxconn / tcp_tw_reuse": f"{_sysctl('net.core.somaxconn')} / "
                                    f"{_sysctl('net.ipv4.tcp_tw_reuse')}",
        "wall time": f"{time.monotonic() - started:.0f} s",
    }
