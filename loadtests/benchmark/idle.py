# loadtests/benchmark/idle.py -- the balancer holding many idle client connections.
#
# Strategy: open the connections from this process with non-blocking
# connects, in batches the balancer can accept, and after each batch wait
# until its process tree holds them as ESTABLISHED sockets (psutil) -- so the
# ones still in the listener's accept queue are not counted, and the count
# is not thrown off by its upstream pool closing idle connections meanwhile.
# While they are held, read the tree's VmRSS and VmHWM, then see how many of
# ours the balancer has not closed, and close them all.
from __future__ import annotations

import errno
import os
import select
import socket
import time
from dataclasses import dataclass

from loadtests import procstats
from loadtests.supervisor import HOST, Process


@dataclass
class IdleResult:
    """The balancer holding idle client connections."""

    asked: int
    opened: int                    #: connections our side opened
    accepted: int                  #: connections the balancer accepted
    still_open: int                #: of ours, not closed by the balancer at the reading
    rss_before_kb: int
    rss_kb: int                    #: VmRSS while holding them
    hwm_kb: int
    seconds: float
    note: str = ""


def established(server: Process, port: int) -> int:
    """Connections ``server``'s process tree has accepted on local ``port``."""
    return procstats.established(server.tree(), port)


def _wait_accepted(server: Process, port: int, base: int, count: int,
                   timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while established(server, port) - base < count and time.monotonic() < deadline:
        time.sleep(interval)


def _open(server: Process, port: int, count: int, base: int, batch: int,
          socks: list[socket.socket]) -> str:
    """Open up to ``count`` connections into ``socks``; a note when one fails."""
    for first in range(0, count, batch):
        for _ in range(min(batch, count - first)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((HOST, port))
            if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
                sock.close()
                return f"connect failed after {len(socks)}: {os.strerror(code)}"
            socks.append(sock)
        _wait_accepted(server, port, base, len(socks))
    return ""


def idle_connections(server: Process, port: int, count: int, batch: int = 500) -> IdleResult:
    """Open ``count`` idle TCP connections to the balancer on ``port``, read
    its VmRSS while they are held, close them."""
    rss0 = server.rss_kb()
    base = established(server, port)
    socks: list[socket.socket] = []
    start = time.monotonic()
    try:
        note = _open(server, port, count, base, batch, socks)
        _wait_accepted(server, port, base, len(socks), interval=0.05)
        seconds = time.monotonic() - start
        time.sleep(0.5)  # let the accepted connections settle into their read
        rss, hwm = server.rss_kb(), server.peak_rss_kb()
        accepted = established(server, port) - base
        still_open = count_open(socks)
    finally:
        for sock in socks:
            sock.close()
    return IdleResult(count, len(socks), accepted, still_open, rss0, rss, hwm, seconds, note)


def count_open(socks: list[socket.socket]) -> int:
    """Connected sockets the peer has not closed (writable, not readable, no error)."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock.fileno(), select.POLLIN | select.POLLOUT | select.POLLERR
                        | select.POLLHUP)
    ready = dict(poller.poll(1000))
    good = 0
    for sock in socks:
        flags = ready.get(sock.fileno(), 0)
        if flags & select.POLLOUT and not flags & (select.POLLIN | select.POLLERR
                                                   | select.POLLHUP):
            good += 1
    return good
