# lb/workers.py -- ``--workers N``: N balancer processes on one port.
#
# Strategy: the master is a plain supervisor (no gevent, no sockets of its
# own but one bound, never-listening SO_REUSEPORT socket that reserves the
# port).  It starts each worker as ``python -m lb`` with the same arguments
# and the chosen port, waits until every worker reports ready on a pipe, and
# then only dispatches signals: SIGTERM/SIGINT are passed on and the workers
# drain; SIGHUP is passed on and each worker reloads; a worker that dies
# unexpectedly is replaced (with a pause if it dies straight away again).
# Over TLS nothing differs here: each worker loads the certificate itself
# and handshakes its own connections.  The master makes the run directory
# where the workers keep their shared counters and the operator's table
# (lb.tally, lb.control), so a replaced worker's counts stay counted and
# its successor takes the table on; it removes the directory at the end.
from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

from gservers.net.listen import ListenError, bind
from lb.config import LBConfig
from lb.tally import run_directory

log = logging.getLogger("lb.master")

WORKER_ENV = "GSERVERS_LB_WORKER"
READY_ENV = "GSERVERS_LB_READY_FD"
PORT_ENV = "GSERVERS_LB_PORT"
ADMIN_PORT_ENV = "GSERVERS_LB_ADMIN_PORT"
RUN_DIR_ENV = "GSERVERS_LB_RUN_DIR"


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, config: LBConfig, argv: list[str]) -> None:
        self.config = config
        self.argv = argv
        # Reserve the ports (port 0 becomes a real one) without listening.
        self.reserved = [self._reserve(config.listen.host, config.listen.port)]
        if config.admin is not None:
            self.reserved.append(self._reserve(config.admin.host, config.admin.port))
        self.port = self.reserved[0].getsockname()[1]
        self.admin_port = self.reserved[1].getsockname()[1] if config.admin else 0
        self.run_dir = run_directory()
        self.workers: dict[int, tuple[int, subprocess.Popen, float]] = {}
        self.signals: list[int] = []

    @staticmethod
    def _reserve(host: str, port: int) -> socket.socket:
        sock = bind(host, port, 1, socket.socket, reuse_port=True)
        # bind() listened; a listening master would take a share of the
        # connections, so swap for a bound-only socket on the same port.
        family, address = sock.family, sock.getsockname()
        sock.close()
        held = socket.socket(family, socket.SOCK_STREAM)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            held.bind(address)
        except OSError as exc:
            raise ListenError(f"cannot reserve {host}:{address[1]}: {exc.strerror}") from None
        return held

    def _spawn(self, index: int) -> subprocess.Popen:
        ready_r, ready_w = os.pipe()
        env = {**os.environ, WORKER_ENV: str(index), READY_ENV: str(ready_w),
               PORT_ENV: str(self.port), ADMIN_PORT_ENV: str(self.admin_port),
               RUN_DIR_ENV: self.run_dir}
        proc = subprocess.Popen([sys.executable, "-m", "lb", *self.argv], env=env,
                                pass_fds=(ready_w,))
        os.close(ready_w)
        self.workers[proc.pid] = (index, proc, time.monotonic())
        # Wait until it listens (one byte), dies, or 30 s pass.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([ready_r], [], [], 0.1)[0]:
                break
        os.close(ready_r)
        return proc

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; return the exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda n, _f: self.signals.append(n))
        for index in range(self.config.workers):
            proc = self._spawn(index)
            if proc.poll() is not None:
                log.error("worker %d could not start (exit %s)", index, proc.returncode)
                self._stop_all()
                return 2
        admin = (f", admin http://{self.config.admin.host}:{self.admin_port}"
                 if self.config.admin else "")
        log.info("lb master listening on %s://%s:%d (pid %d, %d workers: %s%s)",
                 "https" if self.config.certfile else "http", self.config.listen.host,
                 self.port, os.getpid(), len(self.workers),
                 " ".join(map(str, self.workers)), admin)
        while True:
            while self.signals:
                signum = self.signals.pop(0)
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: passing on to the workers")
                    for _, proc, _ in self.workers.values():
                        proc.send_signal(signal.SIGHUP)
                else:
                    return self._stop_all()
            self._reap()
            time.sleep(0.1)

    def _reap(self) -> None:
        for pid, (index, proc, started) in list(self.workers.items()):
            if proc.poll() is None:
                continue
            del self.workers[pid]
            log.warning("worker %d (pid %d) exited with %s; starting a new one",
                        index, pid, proc.returncode)
            if time.monotonic() - started < 1.0:
                time.sleep(1.0)  # crashing at start: do not spin
            self._spawn(index)

    def _stop_all(self) -> int:
        for _, proc, _ in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.grace + 5
        for _, proc, _ in self.workers.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sock in self.reserved:
            sock.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        log.info("stopped")
        return 0
