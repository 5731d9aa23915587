# tests/integration/test_backend_cli.py -- the backend's command line, as a user meets it.
#
# Strategy: everything runs ``python -m gservers.backend`` as a real process.
# Refusals (bad flag values, unknown flags, a busy port, a port held only by
# a TIME_WAIT socket -- made here by a client end that closes first -- a bad
# --config file) must end with exit code 2 and exactly one line on stderr
# that names what was wrong -- never a traceback.  Accepted settings are
# observed from the outside: the "listening" log line names the model and
# the connection limit (pool N / max N threads), which shows which source
# won when a TOML file and flags disagree.  Signals are sent to an idle
# server of each model, which must exit 0 and free its port; the wait is
# hang protection only.  Whether a signal right after the "listening" line
# is handled is tested without timing luck: the server's output is a full
# pipe, so it blocks writing that line, and the test signals it once /proc
# shows that write pending.
from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gservers.net.listen import only_time_wait
from tests.support import (
    ROOT,
    Server,
    exchange,
    run_cli,
    start,
    start_backend,
    time_wait_port,
    wait_port_closed,
)

MODULE = "gservers.backend"
MODELS = ("async", "thread")
FLAGS = ("--host", "--model", "--root", "--backlog", "--max-connections", "--keepalive-timeout",
         "--header-timeout", "--max-body", "--grace", "--log-level", "--config")


def one_line(stderr: str) -> str:
    """The single line a refusal prints; fails on anything else."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), stderr
    assert lines[0].strip()
    return lines[0]


def log_after_exit(server: Server, text: str) -> str:
    """The server's log once ``text`` shows up (its pipe may lag the exit)."""
    deadline = time.monotonic() + 5
    while text not in server.log and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.log


def settle(server: Server) -> None:
    """Wait until the server answers a request: fully started, then idle."""
    raw = exchange(server.port, b"GET /health HTTP/1.1\r\nHost: cli\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "backend.toml"
    path.write_text(text)
    return str(path)


def test_help_lists_every_flag() -> None:
    result = run_cli(MODULE, "--help")
    assert result.returncode == 0
    assert result.stderr == ""
    for flag in FLAGS:
        assert flag in result.stdout, flag
    assert "PORT" in result.stdout


@pytest.mark.parametrize("args, named", [
    (("--model", "foo"), ("--model", "foo")),
    (("99999",), ("PORT", "99999")),
    (("0", "--backlog", "x"), ("--backlog", "'x'")),
    (("0", "--backlog", "0"), ("--backlog", "'0'")),
    (("0", "--root", "/nonexistent"), ("--root", "/nonexistent")),
    (("0", "--header-timeout", "-1"), ("--header-timeout", "-1")),
    (("0", "--keepalive-timeout", "0"), ("--keepalive-timeout", "'0'")),
    (("0", "--max-connections", "many"), ("--max-connections", "many")),
    (("0", "--log-level", "loud"), ("--log-level", "loud")),
    (("0", "--no-such-flag"), ("--no-such-flag",)),
], ids=["model", "port", "backlog-x", "backlog-0", "root", "header-timeout", "keepalive-0",
        "max-connections", "log-level", "unknown-flag"])
def test_bad_value_exit_2_one_line(args: tuple[str, ...], named: tuple[str, ...]) -> None:
    result = run_cli(MODULE, *args)
    assert result.returncode == 2, result
    line = one_line(result.stderr)
    for word in named:
        assert word in line, line
    assert result.stdout == ""


@pytest.mark.parametrize("model", MODELS)
def test_busy_port_exit_2_one_line(model: str) -> None:
    first = start_backend(model)
    try:
        result = run_cli(MODULE, "--model", model, str(first.port))
        assert result.returncode == 2, result
        line = one_line(result.stderr)
        assert "in use" in line and str(first.port) in line, line
        # The first server is unharmed.
        assert first.proc.poll() is None
    finally:
        assert first.stop() == 0




def test_only_time_wait_tells_closing_connections_from_a_listener() -> None:
    port = time_wait_port()
    assert only_time_wait(port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        assert not only_time_wait(listener.getsockname()[1])
        free = listener.getsockname()[1]
    assert not only_time_wait(free)  # nothing at all on it


@pytest.mark.parametrize("model", MODELS)
def test_port_held_by_time_wait_exit_2_one_line(model: str) -> None:
    port = time_wait_port()
    result = run_cli(MODULE, "--model", model, str(port))
    assert result.returncode == 2, result
    line = one_line(result.stderr)
    assert f"port {port} on 127.0.0.1 is held only by closing connections" in line, line
    assert "(TIME_WAIT); wait up to a minute, or choose another port" in line, line
    assert result.stdout == ""


def test_config_file_sets_values(tmp_path: Path) -> None:
    path = write(tmp_path, 'model = "thread"\nmax-connections = 7\nport = 0\n')
    server = start(MODULE, "--config", path)
    try:
        assert "thread backend listening" in server.log
        assert "max 7 threads" in server.log
        settle(server)
    finally:
        assert server.stop() == 0


def test_flags_override_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'model = "thread"\nmax-connections = 7\nport = 1\n')
    server = start(MODULE, "--config", path, "--model", "async", "--max-connections", "9", "0")
    try:
        assert "async backend listening" in server.log
        assert "pool 9" in server.log
        assert server.port != 1
        settle(server)
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("text, named", [
    ('modle = "thread"\n', ("unknown key", "modle")),
    ("model = thread\n", ("not valid TOML",)),
    ("[server\nport = 1\n", ("not valid TOML",)),
    ("backlog = 0\n", ("--backlog", "0")),
    ('keepalive-timeout = "soon"\n', ("--keepalive-timeout", "soon")),
], ids=["unknown-key", "invalid-value-syntax", "invalid-table", "bad-value", "bad-type"])
def test_bad_config_file_exit_2_one_line(tmp_path: Path, text: str,
                                         named: tuple[str, ...]) -> None:
    path = write(tmp_path, text)
    result = run_cli(MODULE, "--config", path, "0")
    assert result.returncode == 2, result
    line = one_line(result.stderr)
    for word in named:
        assert word in line, line


def test_missing_config_file_exit_2_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    result = run_cli(MODULE, "--config", missing, "0")
    assert result.returncode == 2
    assert missing in one_line(result.stderr)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("model", MODELS)
def test_signal_on_idle_server_exits_0(model: str, signum: int) -> None:
    server: Server = start_backend(model)
    settle(server)
    server.signal(signum)
    assert server.proc.wait(15) == 0  # hang protection only
    assert wait_port_closed(server.port)
    log = log_after_exit(server, "stopped")
    assert "Traceback" not in log
    assert "stopped" in log


def full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is already full: a process writing to it blocks."""
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(write_fd, False)
    try:
        while True:
            os.write(write_fd, b"." * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_fd, True)
    return read_fd, write_fd


def pending_write(pid: int) -> bytes | None:
    """The bytes process ``pid`` is blocked writing, if it is in write(2).

    /proc/PID/syscall gives the syscall's arguments (fd, buffer, count for a
    write), /proc/PID/mem the buffer; a parent may read its child's."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
        if len(fields) < 4 or not fields[0].isdigit():
            return None  # running, or not in a syscall
        address, count = int(fields[2], 16), int(fields[3], 16)
        if not 0 < count < 4096:
            return None
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(address)
            return mem.read(count)
    except (OSError, ValueError):
        return None


def syscall_readable(pid: int) -> bool:
    """Whether /proc/PID/syscall can be read at all (some kernels hide it)."""
    try:
        Path(f"/proc/{pid}/syscall").read_text()
    except OSError:
        return False
    return True


def drained(read_fd: int) -> str:
    """What an exited child wrote to the full pipe, minus the filler."""
    chunks = []
    os.set_blocking(read_fd, False)
    try:
        while block := os.read(read_fd, 65536):
            chunks.append(block)
    except BlockingIOError:
        pass
    return b"".join(chunks).lstrip(b".").decode(errors="replace")[-3000:]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("model", [
    "async",
    "thread",
])
def test_signal_right_after_listening_line_exits_0(model: str, signum: int) -> None:
    # To stop the server at a fixed point instead of by timing luck, its output
    # goes to a pipe that is already full, so its first log line blocks in
    # write(2).  Once that pending write is the listening line (read from
    # /proc) and the port it names accepts a connection, the server has told
    # the world it is up, and a signal must lead to a graceful stop.  Then the
    # pipe is drained and the server carries on.
    read_fd, write_fd = full_pipe()
    proc = subprocess.Popen([sys.executable, "-m", MODULE, "--model", model, "0"],
                            cwd=ROOT, stdout=write_fd, stderr=write_fd)
    os.close(write_fd)
    output: list[bytes] = []
    try:
        deadline = time.monotonic() + 20  # hang protection only
        while b" listening on http://" not in (line := pending_write(proc.pid) or b""):
            # A server that exits (or never gets to its listening line) is a
            # failure showing its log, never a skip; only a kernel that hides
            # /proc/PID/syscall from us is a reason not to run the test.
            if proc.poll() is not None:
                pytest.fail(f"the server exited {proc.returncode} before its listening line:\n"
                            f"{drained(read_fd)}")
            if time.monotonic() > deadline:
                if not syscall_readable(proc.pid):
                    pytest.skip("/proc/PID/syscall is not readable here")
                pytest.fail("no listening line within 20 s; the server's last pending write: "
                            f"{pending_write(proc.pid)!r}")
            time.sleep(0.01)
        port = int(re.search(rb"listening on http://[^:]+:(\d+)", line).group(1))
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        os.kill(proc.pid, signum)
        drain = threading.Thread(target=lambda: output.extend(iter(
            lambda: os.read(read_fd, 65536), b"")), daemon=True)
        drain.start()
        code = proc.wait(15)
        drain.join(5)
        log = b"".join(output).lstrip(b".").decode(errors="replace")  # minus the filler
        assert code == 0, log[-600:]
        assert "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(read_fd)
