# loadtests/benchmark/fleet.py -- the servers the benchmark measures, on the supervisor.
#
# Strategy: every server is a real process started through its real command
# line by loadtests.supervisor on 127.0.0.1 (ready when GET /health on its
# port answers 200; its log in the run's temporary directory; stopped by PID,
# newest first, with whatever it started): four async backends, one
# thread-model backend, the gservers lb over the four, haproxy and nginx over
# the same four (configs from loadtests.benchmark.configs), an nginx
# ``return 200`` server as a reference backend, and for the large-file row
# one more async backend and a static nginx over the same 10 MiB file.  Each becomes an Endpoint:
# the process load is sent to, and the backends measured apart behind it.
# The HTTPS row starts each balancer once more, terminating TLS with one
# self-signed certificate (made with the openssl command) over the same four.
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
from loadtests.benchmark.workloads import CONCURRENCY, LARGE_PATH
from loadtests.supervisor import HOST, Process, Supervisor, free_ports

ROOT = str(Path(__file__).resolve().parents[2])
PATH = "/page.html"
PAGE = os.path.join(ROOT, "gservers", "site", "page.html")
#: The large-file row's file: 10 MiB of random bytes.
LARGE_SIZE = 10 * 1024 * 1024
#: What is skipped when a program is missing.
SKIPPED = {"haproxy": "haproxy rows skipped",
           "nginx": "nginx rows and the nginx return-200 reference skipped",
           "wrk": "wrk rows skipped; the direct reference uses ab -k",
           "openssl": "HTTPS row skipped (its certificate is made with the openssl command)"}


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


def start_large_file(sup: Supervisor, args: argparse.Namespace, paths: dict[str, str | None],
                     tmp: str) -> dict[str, Endpoint]:
    """The large-file row's servers, on free ports: an async backend and (with
    nginx) a static nginx, both serving the same LARGE_SIZE file written into
    ``tmp``/large; target name -> Endpoint.  Raises supervisor.StartError."""
    root = os.path.join(tmp, "large")
    os.makedirs(root, mode=0o755)
    with open(os.path.join(root, LARGE_PATH.lstrip("/")), "wb") as fh:
        fh.write(os.urandom(LARGE_SIZE))
    backend_port, nginx_port = free_ports(2)
    out = {"large-file backend": Endpoint("large-file backend", sup.backend(
        backend_port, "async", "--root", root, "--log-level", "warning", timeout=30, cwd=ROOT))}
    if "nginx" in args.only and paths.get("nginx"):
        folder = os.path.join(tmp, "nginx-static")
        os.makedirs(folder, mode=0o755)
        cfg = os.path.join(folder, "nginx.conf")
        with open(cfg, "w") as fh:
            fh.write(configs.nginx_static_config(folder, nginx_port, root, host=HOST))
        out["large-file nginx"] = Endpoint("large-file nginx", sup.start(
            "nginx-static", [paths["nginx"], "-p", folder, "-c", cfg, "-e",
                             os.path.join(folder, "nginx-error.log")], nginx_port, timeout=30,
            cwd=ROOT))
    return out


def make_certificate(openssl: str, folder: str) -> tuple[str, str, str]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 in ``folder``, made
    with the ``openssl`` command: the paths of the certificate, its key, and
    both in one file (haproxy's form).  Raises OSError or CalledProcessError."""
    os.makedirs(folder, mode=0o755)
    cert, key, both = (os.path.join(folder, f"{n}.pem") for n in ("cert", "key", "both"))
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}"],
                   check=True, capture_output=True, timeout=60)
    with open(both, "w") as out, open(cert) as c, open(key) as k:
        out.write(c.read() + k.read())
    return cert, key, both


def start_https(sup: Supervisor, args: argparse.Namespace, paths: dict[str, str | None],
                tmp: str) -> dict[str, Endpoint]:
    """The HTTPS row: each balancer of ``args.only`` started again (its own
    process, so its CPU is its own) over the same four backends, terminating
    TLS with one certificate made in ``tmp``; key in workloads.HTTPS_TARGETS
    -> an Endpoint named as the balancer.  haproxy and nginx also listen on a
    plain port, for the readiness check only.  Raises supervisor.StartError."""
    openssl = paths.get("openssl")
    if not openssl:
        return {}
    cert, key, both = make_certificate(openssl, os.path.join(tmp, "tls"))
    names = {f"async-{port}" for port in args.backend_ports}
    backends = [proc for proc in sup.processes if proc.name in names]
    out: dict[str, Endpoint] = {}
    if "gservers" in args.only:  # ready at its "listening on https://" line (info level)
        lb = sup.balancer("--policy", "round_robin", "--log-level", "info", "--workers",
                          str(args.lb_workers), "--certfile", cert, "--keyfile", key,
                          backends=args.backend_ports, admin=False, cwd=ROOT)
        out["gservers https"] = Endpoint("gservers", lb.server, backends)
    h_tls, h_plain, n_tls, n_plain = free_ports(4)
    if "haproxy" in args.only and paths.get("haproxy"):
        cfg = os.path.join(tmp, "haproxy-https.cfg")
        with open(cfg, "w") as fh:
            fh.write(configs.haproxy_tls_config(h_tls, h_plain, args.backend_ports, both,
                                                host=HOST))
        proc = sup.start("haproxy-https", [paths["haproxy"], "-db", "-f", cfg], h_plain,
                         timeout=30, cwd=ROOT)
        proc.port = h_tls  # load goes to the TLS port
        out["haproxy https"] = Endpoint("haproxy", proc, backends)
    if "nginx" in args.only and paths.get("nginx"):
        folder = os.path.join(tmp, "nginx-https")
        os.makedirs(folder, mode=0o755)
        cfg = os.path.join(folder, "nginx.conf")
        with open(cfg, "w") as fh:
            fh.write(configs.nginx_tls_config(folder, n_tls, n_plain, args.backend_ports, cert,
                                              key, configs.filler_body(64), host=HOST))
        proc = sup.start("nginx-https", [paths["nginx"], "-p", folder, "-c", cfg, "-e",
                                         os.path.join(folder, "nginx-error.log")], n_plain,
                         timeout=30, cwd=ROOT)
        proc.port = n_tls
        out["nginx https"] = Endpoint("nginx", proc, backends)
    return out


def package_version(name: str) -> str:
    """The installed version of a Python package, or "-"."""
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
        "python / gevent / greenlet": " / ".join(
            [platform.python_version(), package_version("gevent"), package_version("greenlet")]),
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
        "large-file row": (f"ab -n {args.large_requests} -c 10 of a {LARGE_SIZE >> 20} MiB "
                           "file, async backend vs nginx (sendfile on)"
                           if args.large_requests else "not run (--large-requests 0)"),
        "HTTPS row": (f"ab -n {args.https_requests} -c {CONCURRENCY} with and without -k, "
                      "each balancer terminating TLS (1.2/1.3, ECDSA P-256 certificate)"
                      if args.https_requests else "not run (--https-requests 0)"),
        "ports": f"backends {','.join(map(str, args.backend_ports))}, thread "
                 f"{args.thread_port}, lb {args.lb_port}, haproxy {args.haproxy_port}, "
                 f"nginx {args.nginx_port}, nginx return-200 {args.nginx_ref_port}",
        "somaxconn / tcp_tw_reuse": f"{_sysctl('net.core.somaxconn')} / "
                                    f"{_sysctl('net.ipv4.tcp_tw_reuse')}",
        "wall time": f"{time.monotonic() - started:.0f} s",
    }
