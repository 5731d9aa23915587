# loadtests/supervisor.py -- the one way the tooling and the tests run servers.
#
# Strategy: every server a sweep, a benchmark, a fault scenario or a test
# measures is a real process started through its real command line and
# remembered as a psutil.Process (which knows its start time, so a PID the
# kernel has since reused is never signalled).  A process is ready when it
# says "listening on http://HOST:PORT" (servers started on port 0 say which
# port they got) or, for programs that say nothing (haproxy, nginx), when
# GET /health on its port answers 200.  Its output is kept in memory (the
# last lines) or written to a log file.  A Supervisor remembers what it
# started and ends all of it, newest first, by PID only: SIGCONT (a stopped
# process must see the SIGTERM), SIGTERM, then SIGKILL after a grace period,
# and SIGKILL for any process of its tree seen earlier that outlived it --
# also when the run fails or is interrupted.
from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import psutil

from gservers.net.listen import only_time_wait
from loadtests import procstats

HOST = "127.0.0.1"
LISTEN_RE = re.compile(r"listening on https?://([^:\s]+):(\d+)")
ADMIN_RE = re.compile(r"admin http://[^:\s]+:(\d+)")
MAX_LINES = 5000  #: output lines kept per process (one out of descriptors may log a lot)


class StartError(RuntimeError):
    """A process could not be started or never became ready; says which and why."""


class Process:
    """A program we started; signalled and stopped by its own PID only."""

    def __init__(self, name: str, popen: subprocess.Popen, log_path: str | None = None) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self.host = HOST
        self.port = 0
        self.lines: list[str] = []
        self._ps = procstats.process(popen.pid)
        self._seen: dict[int, psutil.Process] = {}  # descendants seen, by PID and start time
        self._said = threading.Event()  # set once a listening line (or the end) was read
        if popen.stdout is not None:
            threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if len(self.lines) < MAX_LINES:
                self.lines.append(line)
            match = LISTEN_RE.search(line)
            if match and not self._said.is_set():
                self.host, self.port = match.group(1), int(match.group(2))
                self._said.set()
        self._said.set()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def proc(self) -> subprocess.Popen:
        """The Popen object (its returncode, poll, wait)."""
        return self.popen

    @property
    def log(self) -> str:
        """What the process printed (kept lines, or its log file)."""
        if self.log_path is not None:
            try:
                return Path(self.log_path).read_text(errors="replace")
            except OSError:
                return ""
        return "".join(self.lines)

    def last_line(self) -> str:
        lines = self.log.strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` if the process still runs (and is still ours)."""
        if self.alive() and self._ps is not None and self._ps.is_running():
            os.kill(self.pid, signum)

    def cpu_seconds(self, recursive: bool = False) -> float:
        """User + system CPU seconds of the process and its live children
        (all descendants when ``recursive``)."""
        return procstats.tree_cpu_seconds(self.pid, recursive=recursive)

    def tree(self) -> list[psutil.Process]:
        """The process and all its live descendants (each remembered, so that
        stop() can end one its parent left behind)."""
        if not self.alive():
            return []
        members = procstats.tree(self._ps if self._ps is not None else self.pid)
        for member in members[1:]:
            self._seen.setdefault(member.pid, member)
        return members

    def rss_kb(self) -> int:
        """VmRSS of the process and its descendants, in KiB."""
        return sum(procstats.rss_kb(member) for member in self.tree())

    def peak_rss_kb(self) -> int:
        """VmHWM (peak RSS) summed over the process and its descendants, in KiB."""
        return sum(procstats.peak_rss_kb(member) for member in self.tree())

    def reset_peak_rss(self) -> bool:
        """Start the peak RSS of the process and its descendants afresh; False
        when any could not be reset (see procstats.reset_peak_rss)."""
        return all([procstats.reset_peak_rss(member) for member in self.tree()])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGCONT, SIGTERM, wait up to ``timeout``; SIGKILL if it will not
        go; then SIGKILL any descendant seen by tree() that outlived it (the
        same PID and start time only).  Returns the exit code."""
        if self.alive():
            self.tree()
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for member in self._seen.values():
            procstats.kill(member)
        return self.popen.returncode


def spawn(name: str, argv: Sequence[str], *, log_path: str | None = None,
          env: dict[str, str] | None = None, cwd: str | None = None,
          preexec_fn: Callable[[], None] | None = None) -> Process:
    """Start ``argv`` in a session of its own; its output goes to ``log_path``
    or, without one, is kept in memory."""
    log: IO[str] | int = subprocess.PIPE
    if log_path is not None:
        log = open(log_path, "w")
    try:
        popen = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, text=True,
                                 stdin=subprocess.DEVNULL, cwd=cwd, preexec_fn=preexec_fn,
                                 env={**os.environ, **(env or {})}, start_new_session=True)
    except OSError as exc:
        raise StartError(f"{name}: cannot run {argv[0]}: {exc.strerror}") from None
    finally:
        if log_path is not None:
            log.close()  # type: ignore[union-attr]
    return Process(name, popen, log_path)


def python(module: str, *args: str) -> list[str]:
    """The command line of ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def wait_listening(proc: Process, timeout: float = 20.0) -> Process:
    """Wait for the "listening on http://HOST:PORT" line (captured output only)."""
    if not proc._said.wait(timeout) or not proc.port:
        proc.stop(timeout=1)
        raise StartError(f"{proc.name} did not start:\n{proc.log}")
    return proc


def healthy(port: int, host: str = HOST) -> bool:
    """Whether GET /health on ``host:port`` answers 200 right now."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_healthy(proc: Process, port: int, timeout: float = 20.0) -> Process:
    """Wait until GET /health on ``port`` answers 200, or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.alive():
        if healthy(port):
            proc.port = port
            return proc
        time.sleep(0.05)
    proc.stop(timeout=1)
    raise StartError(f"{proc.name} on port {port} did not come up: {proc.last_line()}")


def port_free(port: int, host: str = HOST) -> bool:
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


def wait_port(port: int, host: str = HOST, timeout: float = 65.0) -> bool:
    """Wait for ``port`` to be free while only TIME_WAIT sockets hold it
    (connections of an earlier run, at most a minute); False if something
    else holds it, or it stays held past ``timeout``."""
    deadline = time.monotonic() + timeout
    said = False
    while not port_free(port, host):
        if not only_time_wait(port) or time.monotonic() > deadline:
            return False
        if not said:
            print(f"waiting for port {port}: held by closing connections of an earlier "
                  f"run (TIME_WAIT, at most a minute)", file=sys.stderr)
            said = True
        time.sleep(1)
    return True


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0,
               interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` passes (hang protection
    only); an OSError from the predicate counts as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(interval)
    return False


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind((HOST, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt()


def interrupt_on(*signums: int) -> None:
    """Make each of ``signums`` end the run as Ctrl-C does (KeyboardInterrupt),
    so every program's one clean-up path -- stopping what it started -- runs."""
    for signum in signums:
        signal.signal(signum, _interrupt)


class Balancer:
    """A running balancer and its admin listener."""

    def __init__(self, process: Process, admin_port: int | None,
                 token: str | None = None) -> None:
        self.server = process
        self.admin_port = admin_port
        self.token = token  #: sent as a Bearer token on admin requests when set

    @property
    def port(self) -> int:
        return self.server.port

    def admin(self, method: str, path: str, body: Any = None,
              token: str | None = None) -> tuple[int, Any]:
        """One admin request: (status, its JSON, or its text when not JSON).
        ``body``: a value sent as JSON, or bytes as they are."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        try:
            with urllib.request.urlopen(self._request(method, path, data, token),
                                        timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def set_backend(self, name: str, **change: Any) -> dict[str, Any]:
        """POST /backends/NAME; the backend's new JSON (raises on a non-200)."""
        status, answer = self.admin("POST", f"/backends/{name}", change)
        if status != 200:
            raise RuntimeError(f"POST /backends/{name} {change}: {status} {answer}")
        return answer

    def _request(self, method: str, path: str, data: bytes | None = None,
                 token: str | None = None) -> urllib.request.Request:
        request = urllib.request.Request(f"http://{HOST}:{self.admin_port}{path}", data,
                                         method=method)
        if token or self.token:
            request.add_header("Authorization", f"Bearer {token or self.token}")
        return request

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self._request("GET", path), timeout=10) as response:
            return response.read()

    def stats(self) -> dict[str, Any]:
        """GET /stats from the admin listener."""
        return json.loads(self._get("/stats"))

    def metrics(self) -> str:
        """GET /metrics from the admin listener."""
        return self._get("/metrics").decode()


class Supervisor:
    """The processes of one run: each started through its real command line,
    all stopped by PID on the way out, newest first (a balancer before its
    backends)."""

    def __init__(self, log_dir: str | None = None) -> None:
        self.log_dir = log_dir
        self.processes: list[Process] = []

    def _log_path(self, name: str) -> str | None:
        if self.log_dir is None:
            return None
        os.makedirs(self.log_dir, exist_ok=True)
        return os.path.join(self.log_dir, f"{name}.log")

    def start(self, name: str, argv: Sequence[str], port: int | None = None,
              timeout: float = 20.0, **options: Any) -> Process:
        """Start ``argv``; ready once it answers GET /health on ``port``, or,
        without a port, once it prints its listening line.  Raise StartError."""
        if port and not wait_port(port):
            raise StartError(f"{name}: port {port} is already in use; stop what holds it "
                             f"(e.g. scripts/stopserver.sh) or pick other ports")
        proc = spawn(name, argv, log_path=self._log_path(name) if port else None, **options)
        self.processes.append(proc)
        if port:
            return wait_healthy(proc, port, timeout)
        return wait_listening(proc, timeout)

    def backend(self, port: int = 0, model: str = "async", *args: str,
                **options: Any) -> Process:
        """A gservers backend (``python -m gservers.backend``); ``options`` as
        for :meth:`start` (``timeout``) and :func:`spawn`."""
        return self.start(f"{model}-{port}", python("gservers.backend", "--model", model,
                                                    *args, str(port)), port or None, **options)

    def balancer(self, *args: str, backends: Sequence[int] = (), port: int = 0,
                 admin: int | bool = True, timeout: float = 30.0, **options: Any) -> Balancer:
        """``python -m lb`` over ``backends`` (ports on 127.0.0.1); ``admin``
        True picks a free admin port, False turns it off, a number uses it;
        ``options`` as for :func:`spawn`."""
        admin_arg = "off" if admin is False else f"{HOST}:{0 if admin is True else admin}"
        argv = ["--listen", f"{HOST}:{port}", "--admin", admin_arg]
        for backend in backends:
            argv += ["--backend", f"{HOST}:{backend}"]
        proc = self.start(f"lb-{port}", python("lb", *argv, *args), port or None, timeout,
                          **options)
        admin_port = None if admin is False else (admin if admin is not True else None)
        deadline = time.monotonic() + 10
        while admin_port is None and time.monotonic() < deadline:
            match = ADMIN_RE.search(proc.log)
            if match:
                admin_port = int(match.group(1))
            else:
                time.sleep(0.05)
        return Balancer(proc, admin_port)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every process started here, newest first."""
        for proc in reversed(self.processes):
            proc.stop(timeout)
        self.processes.clear()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
