# loadtests/topology.py -- the servers a sweep measures, started and stopped.
#
# Strategy: real processes started through the real command lines (four
# async backends, a thread backend, the balancer), each waited for until it
# answers GET /health, each remembered by PID and stopped by that PID only --
# also when the sweep fails or is interrupted.  CPU time is read with psutil
# (loadtests/procstats.py), so each cell can report what the servers spent.
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from gservers.net.listen import only_time_wait
from loadtests import procstats


class TopologyError(Exception):
    """A server could not be started; the message says which and why."""


@dataclass
class Proc:
    name: str
    port: int
    popen: subprocess.Popen
    log_path: str

    def cpu_seconds(self) -> float:
        """User + system CPU seconds this process and its live children (the
        balancer's workers) have used so far."""
        return procstats.tree_cpu_seconds(self.popen.pid, recursive=False)


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def wait_port(host: str, port: int, timeout: float = 65.0) -> bool:
    """Wait for ``port`` to be free while only TIME_WAIT sockets hold it."""
    deadline = time.monotonic() + timeout
    said = False
    while not port_free(host, port):
        if not only_time_wait(port) or time.monotonic() > deadline:
            return False
        if not said:
            print(f"waiting for port {port}: held by closing connections of an earlier "
                  f"run (TIME_WAIT, at most a minute)", file=sys.stderr)
            said = True
        time.sleep(1)
    return True


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
    """Poll GET /health until 200, the process dies, or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


@dataclass
class Topology:
    """The processes of one sweep."""

    log_dir: str
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, port: int, argv: list[str]) -> Proc:
        """Start ``python -m argv...`` listening on ``port``; raise TopologyError."""
        if not wait_port("127.0.0.1", port):
            raise TopologyError(f"{name}: port {port} is already in use; stop what holds it "
                                f"(e.g. scripts/stopserver.sh) or pick other ports")
        os.makedirs(self.log_dir, exist_ok=True)
        log_path = os.path.join(self.log_dir, f"{name}.log")
        log = open(log_path, "w")
        popen = subprocess.Popen([sys.executable, "-m", *argv], stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        proc = Proc(name, port, popen, log_path)
        self.procs.append(proc)
        if not wait_healthy(port, popen):
            tail = open(log_path).read().strip().splitlines()[-1:] or ["(no output)"]
            raise TopologyError(f"{name} on port {port} did not come up: {tail[0]}")
        return proc

    def backend(self, port: int, model: str = "async") -> Proc:
        return self.start(f"{model}-{port}", port, ["gservers.backend", "--model", model,
                                                    "--log-level", "warning", str(port)])

    def balancer(self, port: int, backends: list[int], admin_port: int, workers: int = 1) -> Proc:
        argv = ["lb", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin_port}",
                "--log-level", "warning", "--workers", str(workers)]
        for b in backends:
            argv += ["--backend", f"127.0.0.1:{b}"]
        return self.start("lb", port, argv)

    def stop(self) -> None:
        """SIGTERM every process we started (by PID), then SIGKILL stragglers."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)
        self.procs.clear()

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
