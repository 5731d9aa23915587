# tests/integration/test_lb_cli.py -- ``python -m lb``: help, bad configuration, TOML files.
#
# Strategy: everything goes through the real command line in a subprocess.
# --help must exit 0 and name every flag generated from LBConfig.  Each bad
# configuration (a flag, a TOML file, a port in use or held only by TIME_WAIT
# sockets of earlier connections) must end the process with exit code 2 and
# exactly one line on stderr that names the problem -- never a traceback,
# never a half-started balancer.  A TOML file's backends and policy are
# checked as the running balancer reports them on /stats and as traffic
# actually flows (real gservers backends), and flags given next to the file
# must win.
from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lb.config import LBConfig
from tests.support import (
    Balancer,
    Server,
    exchange,
    parse_responses,
    run_cli,
    start,
    start_backend,
    start_lb,
    time_wait_port,
    wait_until,
)


def flags() -> list[str]:
    return ["--config"] + ["--" + f.name.replace("_", "-") for f in dataclasses.fields(LBConfig)]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed start (asserting there is exactly one)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip("\n").splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    assert lines[0].startswith("python -m lb: error: "), lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A listen and admin address that are valid but never reached when the
# configuration is refused; port 0 keeps two test runs from colliding.
SAFE = ["--listen", "127.0.0.1:0", "--admin", "off"]


# -- help -------------------------------------------------------------------------

def test_help_lists_every_flag() -> None:
    result = run_cli("lb", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for flag in flags():
        assert flag in result.stdout, flag
    for policy in ("round_robin", "weighted_round_robin", "least_connections", "random_two",
                   "consistent_hash"):
        assert policy in result.stdout


# -- bad configuration: one line, exit 2 -----------------------------------------

BAD_FLAGS = {
    "bad address": (["--backend", "nohost"], ["--backend", "nohost", "HOST:PORT"]),
    "bad weight": (["--backend", "127.0.0.1:9002=0"], ["--backend", "weight"]),
    "weight not a number": (["--backend", "127.0.0.1:9002=x"], ["--backend", "weight"]),
    "bad port": (["--backend", "127.0.0.1:70000"], ["--backend", "port"]),
    "unknown policy": (["--policy", "nope"], ["--policy", "nope"]),
    "bad listen": (["--listen", "x"], ["--listen", "'x'"]),
    "zero workers": (["--workers", "0"], ["--workers", "at least 1"]),
    "bad timeout": (["--connect-timeout", "-1"], ["--connect-timeout"]),
    "same backend twice": (["--backend", "127.0.0.1:9002", "--backend", "127.0.0.1:9002"],
                           ["--backend", "127.0.0.1:9002", "twice"]),
    "unknown flag": (["--frobnicate"], ["--frobnicate"]),
    "unresolvable backend": (["--backend", "nohost.invalid:9002"], ["nohost.invalid"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flag(case: str) -> None:
    argv, words = BAD_FLAGS[case]
    line = one_error_line(run_cli("lb", *SAFE, *argv))
    for word in words:
        assert word in line, (word, line)


BAD_TOML = {
    "unknown key": ("bogus = 1\n", ["unknown key", "bogus"]),
    "invalid TOML": ("backend = [\n", ["not valid TOML"]),
    "no backends": ("backend = []\n", ["--backend", "at least one backend"]),
    "backend twice": ('backend = ["127.0.0.1:9002", "127.0.0.1:9002"]\n', ["twice"]),
    "bad policy": ('policy = "nope"\n', ["--policy", "nope"]),
    "bad weight": ('backend = ["127.0.0.1:9002=1001"]\n', ["--backend", "weight"]),
    "wrong type": ('workers = "many"\n', ["--workers"]),
}


@pytest.mark.parametrize("case", sorted(BAD_TOML))
def test_bad_toml(case: str, tmp_path: Path) -> None:
    text, words = BAD_TOML[case]
    path = tmp_path / "lb.toml"
    path.write_text(text)
    line = one_error_line(run_cli("lb", *SAFE, "--config", str(path)))
    for word in words:
        assert word in line, (word, line)


def test_missing_config_file(tmp_path: Path) -> None:
    line = one_error_line(run_cli("lb", *SAFE, "--config", str(tmp_path / "absent.toml")))
    assert "--config" in line and "absent.toml" in line


@pytest.mark.parametrize("workers", ["1", "2"])
def test_listen_port_busy(workers: str) -> None:
    backend = start_backend("async")
    try:
        line = one_error_line(run_cli(
            "lb", "--listen", f"127.0.0.1:{backend.port}", "--admin", "off",
            "--backend", "127.0.0.1:9", "--workers", workers))
        assert str(backend.port) in line and "in use" in line, line
    finally:
        backend.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_listen_port_held_by_time_wait(workers: str) -> None:
    port = time_wait_port()
    line = one_error_line(run_cli(
        "lb", "--listen", f"127.0.0.1:{port}", "--admin", "off",
        "--backend", "127.0.0.1:9", "--workers", workers))
    assert f"port {port} on 127.0.0.1 is held only by closing connections" in line, line
    assert "(TIME_WAIT); wait up to a minute, or choose another port" in line, line


def test_admin_port_busy() -> None:
    backend = start_backend("async")
    try:
        line = one_error_line(run_cli(
            "lb", "--listen", "127.0.0.1:0", "--admin", f"127.0.0.1:{backend.port}",
            "--backend", "127.0.0.1:9"))
        assert str(backend.port) in line and "in use" in line, line
    finally:
        backend.stop()


# -- a TOML file configures a running balancer -----------------------------------

@pytest.fixture(scope="module")
def two_backends() -> Iterator[list[Server]]:
    servers = [start_backend("async") for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def requests_through(lb: Balancer, n: int) -> None:
    data = b"".join(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n" for _ in range(n - 1))
    data += b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    replies = parse_responses(exchange(lb.port, data), [b"GET"] * n)
    assert [r.status for r in replies] == [200] * n


def stopped(lb: Balancer) -> None:
    assert lb.server.stop() == 0
    assert "Traceback" not in lb.server.log


def test_toml_sets_backends_and_policy(two_backends: list[Server], tmp_path: Path) -> None:
    a, b = two_backends
    path = tmp_path / "lb.toml"
    path.write_text(f'backend = ["127.0.0.1:{a.port}=3", "127.0.0.1:{b.port}"]\n'
                    f'policy = "weighted_round_robin"\n'
                    f'health-interval = 60\n'
                    f'retries = 0\n')
    lb = start_lb("--config", str(path))
    try:
        stats = lb.stats()
        assert stats["policy"] == "weighted_round_robin"
        assert [(s["name"], s["weight"]) for s in stats["backends"]] == [
            (f"127.0.0.1:{a.port}", 3), (f"127.0.0.1:{b.port}", 1)]
        requests_through(lb, 8)
        counts = [s["requests"] for s in lb.stats()["backends"]]
        assert counts == [6, 2]
        assert "policy weighted_round_robin" in lb.server.log
    finally:
        stopped(lb)


def test_flags_override_the_file(two_backends: list[Server], tmp_path: Path) -> None:
    a, b = two_backends
    path = tmp_path / "lb.toml"
    path.write_text(f'backend = ["127.0.0.1:{a.port}=3", "127.0.0.1:{b.port}"]\n'
                    f'policy = "weighted_round_robin"\n'
                    f'health-interval = 60\n')
    lb = start_lb("--config", str(path), "--policy", "least_connections",
                  backends=[b.port])
    try:
        stats = lb.stats()
        assert stats["policy"] == "least_connections"
        assert [s["name"] for s in stats["backends"]] == [f"127.0.0.1:{b.port}"]
        requests_through(lb, 4)
        assert [s["requests"] for s in lb.stats()["backends"]] == [4]
    finally:
        stopped(lb)


def test_toml_listen_and_underscore_keys(two_backends: list[Server], tmp_path: Path) -> None:
    a, _ = two_backends
    port = free_port()
    path = tmp_path / "lb.toml"
    path.write_text(f'listen = "127.0.0.1:{port}"\n'
                    f'admin = "off"\n'
                    f'backend = ["127.0.0.1:{a.port}"]\n'
                    f'health_interval = 60\n')
    server = start("lb", "--config", str(path))
    try:
        assert server.port == port
        requests_through(Balancer(server, None), 2)
    finally:
        assert server.stop() == 0
        assert "Traceback" not in server.log


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_access_log_writes_one_timestamped_line_per_request(tmp_path: Path,
                                                                 fmt: str) -> None:
    log = tmp_path / "access.log"
    backend = start_backend("async")
    lb = start_lb("--access-log", str(log), "--access-log-format", fmt,
                  backends=[backend.port])
    try:
        reply = exchange(lb.port, b"GET /page.html HTTP/1.1\r\nHost: t\r\n"
                                  b"X-Forwarded-For: 192.0.2.1\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert wait_until(lambda: log.exists() and log.read_text().count("\n") >= 1, 10)
    finally:
        lb.server.stop()
        backend.stop()
    [line] = log.read_text().splitlines()
    if fmt == "json":
        data = json.loads(line)
        assert data["status"] == 200 and data["protocol"] == "HTTP/1.1"
        assert data["x_forwarded_for"] == "192.0.2.1, 127.0.0.1"
        assert data["backend"] == f"127.0.0.1:{backend.port}"
        stamp = data["time"]
    else:
        stamp = line.split(" ", 1)[0]
        assert " GET /page.html HTTP/1.1 200 " in line
        assert line.endswith('xff="192.0.2.1, 127.0.0.1"')
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
