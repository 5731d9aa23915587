# tests/abuse_clients.py -- misbehaving clients for tests/test_abuse.py.
#
# Strategy: every abusive client here is driven by one thread over
# non-blocking sockets (a selectors loop), never one thread per connection.
# The slowloris driver is meant to run in its own process
# (``python -m tests.abuse_clients slowloris ...``) so that its busy loop
# never holds the GIL of the test process that is timing normal requests;
# it prints one line ``ready`` once every connection is open and has sent a
# byte, then one JSON line with what each connection saw.  The flood keeps
# many idle connections open in the calling process (no CPU used while it
# holds them).  The server's RSS, CPU time and descriptors are read with
# loadtests/procstats.py (psutil).
from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

#: A request head that never ends: this prefix, then one more "a" per tick.
SLOW_PREFIX = b"GET /page.html HTTP/1.1\r\nHost: localhost\r\nX-Slow: "


# -- limits -----------------------------------------------------------------------------

def raise_own_nofile(wanted: int) -> None:
    """Let this process hold ``wanted`` descriptors (soft limit up to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(wanted, soft)), hard))


# -- a flood of idle connections ---------------------------------------------------------

class Flood:
    """``n`` connections opened at once (non-blocking connects), held idle."""

    def __init__(self, port: int, n: int, host: str = "127.0.0.1") -> None:
        raise_own_nofile(n + 256)
        self.socks: list[socket.socket] = []
        self.failed = 0
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
                self.failed += 1
                sock.close()
                continue
            self.socks.append(sock)

    def established(self, timeout: float = 10.0) -> int:
        """Wait for the connects to finish; return how many succeeded."""
        sel = selectors.DefaultSelector()
        pending = set()
        for sock in self.socks:
            sel.register(sock, selectors.EVENT_WRITE)
            pending.add(sock)
        ok = 0
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                sock = key.fileobj
                sel.unregister(sock)
                pending.discard(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    ok += 1
        sel.close()
        return ok

    def closed_by_server(self) -> int:
        """How many of the held connections the server has closed (EOF or reset)."""
        n = 0
        for sock in self.socks:
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    n += 1
            except BlockingIOError:
                pass
            except OSError:
                n += 1
        return n

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks = []


# -- slowloris ---------------------------------------------------------------------------

@dataclass
class SlowConn:
    """One slow connection's story (times in seconds from the attack's start)."""

    generation: int               #: 0 for the first batch, 1+ for reconnections
    opened: float
    first_byte: float = -1.0
    closed: float = -1.0          #: when the server closed it (EOF/reset), -1 if never
    sent: int = 0
    response: str = ""            #: what the server sent (latin-1), first 200 bytes
    error: str = ""


@dataclass
class _Live:
    sock: socket.socket
    record: SlowConn
    buf: bytes = b""
    connected: bool = False
    stop_sending: bool = False


def slowloris(port: int, connections: int, duration: float, interval: float,
              host: str = "127.0.0.1", ready: Callable[[], None] | None = None,
              reconnect: bool = True) -> list[SlowConn]:
    """Keep ``connections`` connections each sending one byte of a never-ending
    request head every ``interval`` seconds, for ``duration`` seconds; a
    connection the server closes is replaced (when ``reconnect``).  Returns
    every connection's record."""
    raise_own_nofile(connections + 256)
    sel = selectors.DefaultSelector()
    start = time.monotonic()
    records: list[SlowConn] = []
    live: dict[int, _Live] = {}

    def now() -> float:
        return time.monotonic() - start

    def open_one(generation: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rec = SlowConn(generation, now())
        records.append(rec)
        err = sock.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            rec.error = f"connect: {errno.errorcode.get(err, err)}"
            sock.close()
            return
        item = _Live(sock, rec)
        live[sock.fileno()] = item
        sel.register(sock, selectors.EVENT_READ, item)

    def finish(item: _Live, error: str = "") -> None:
        rec = item.record
        rec.closed = now()
        rec.response = item.buf[:200].decode("latin-1")
        rec.error = rec.error or error
        try:
            sel.unregister(item.sock)
        except (KeyError, ValueError):
            pass
        live.pop(item.sock.fileno(), None)
        item.sock.close()

    for _ in range(connections):
        open_one(0)
    announced = False
    next_tick = time.monotonic()
    while now() < duration:
        timeout = max(0.0, next_tick - time.monotonic())
        for key, _ in sel.select(timeout=min(timeout, 0.05)):
            item: _Live = key.data
            try:
                data = item.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                finish(item, f"recv: {exc.strerror}")
                if reconnect and now() < duration:
                    open_one(item.record.generation + 1)
                continue
            if data:
                item.buf += data
                item.stop_sending = True  # the server answered: stop, wait for its close
                continue
            finish(item)
            if reconnect and now() < duration:
                open_one(item.record.generation + 1)
        if time.monotonic() >= next_tick:
            next_tick += interval
            for item in list(live.values()):
                if item.stop_sending:
                    continue
                rec = item.record
                byte = SLOW_PREFIX[rec.sent:rec.sent + 1] or b"a"
                try:
                    if item.sock.send(byte) == 1:
                        if rec.sent == 0:
                            rec.first_byte = now()
                        rec.sent += 1
                except BlockingIOError:
                    pass  # not connected yet (or buffer full): next tick
                except OSError as exc:
                    item.stop_sending = True
                    rec.error = f"send: {exc.strerror}"
            if not announced and all(i.record.sent for i in live.values()):
                announced = True
                if ready is not None:
                    ready()
    for item in list(live.values()):
        rec = item.record
        rec.response = item.buf[:200].decode("latin-1")
        sel.unregister(item.sock)
        item.sock.close()
    live.clear()
    sel.close()
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.abuse_clients")
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("slowloris")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--connections", type=int, default=300)
    s.add_argument("--duration", type=float, default=4.0)
    s.add_argument("--interval", type=float, default=0.2)
    args = p.parse_args(argv)

    def ready() -> None:
        print("ready", flush=True)

    records = slowloris(args.port, args.connections, args.duration, args.interval, ready=ready)
    print(json.dumps([asdict(r) for r in records]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
