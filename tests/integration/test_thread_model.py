# tests/integration/test_thread_model.py -- the thread model at its connection limit.
#
# Strategy: a real ``python -m gservers.backend --model thread`` with a
# tiny --max-connections, filled with idle connections of our own while
# more wait in its backlog.  A full server must sleep, not poll its
# backlog: its main thread (the accepting one, whose thread id is the PID)
# must hardly be scheduled at all, which /proc counts as voluntary context
# switches -- a poll every millisecond would make about a thousand a
# second -- and must use next to no CPU (a spin would use all of it).
# When a slot frees, the next connection in the backlog must be served;
# the accept loop has no timeout, so a lost wakeup would hang it (the
# socket timeout here only stops that hang).
from __future__ import annotations

import os
import socket
import time

from tests.support import connect, read_all, start_backend, wait_until

LIMIT = 2
GET = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def wakeups(pid: int) -> int:
    """Voluntary context switches of ``pid``'s main thread so far."""
    with open(f"/proc/{pid}/task/{pid}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def cpu_ticks(pid: int) -> int:
    """CPU time of ``pid``'s main thread so far, in clock ticks."""
    with open(f"/proc/{pid}/task/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_a_full_thread_server_sleeps_and_takes_the_next_when_a_slot_frees() -> None:
    server = start_backend("thread", "--max-connections", str(LIMIT))
    held: list[socket.socket] = []
    try:
        held = [connect(server.port) for _ in range(LIMIT)]  # idle: each holds a slot
        assert wait_until(lambda: threads(server.pid) >= 1 + LIMIT, timeout=10)
        waiting = [connect(server.port) for _ in range(3)]  # in the backlog
        held += waiting
        time.sleep(0.2)
        before, ticks = wakeups(server.pid), cpu_ticks(server.pid)
        time.sleep(1.0)
        woke, used = wakeups(server.pid) - before, cpu_ticks(server.pid) - ticks
        assert woke < 20, f"the full server's accept loop woke {woke} times in a second"
        assert used < os.sysconf("SC_CLK_TCK") // 10, f"it spun: {used} ticks in a second"
        held[0].close()  # a slot frees: the first in the backlog is taken and served
        waiting[0].sendall(GET)
        reply = read_all(waiting[0], timeout=10)
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    finally:
        for sock in held:
            sock.close()
        assert server.stop() == 0
