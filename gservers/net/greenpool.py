# gservers/net/greenpool.py -- a bounded pool of reusable greenlets for servers.
#
# Strategy: gevent's Pool makes a new Greenlet for every connection, which
# costs more than parsing a request.  This pool keeps the greenlets: one
# whose handler returned waits in the hub for the next connection, and
# handing it one is a callback and a switch.  gevent has no such pool, so it
# is written here.  The bound is a gevent semaphore of ``size`` slots, the
# same shape as gevent's Pool, so a StreamServer stops accepting when it is
# full and starts again when a slot frees (gevent links to ``_semaphore``),
# and a caller may hold a slot without a greenlet (``hold``/``release``: the
# balancer's parked connections do).
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from gevent import get_hub
from gevent.event import Event
from gevent.lock import BoundedSemaphore
from greenlet import GreenletExit, getcurrent, greenlet

#: Idle greenlets kept for reuse; beyond this a finished one exits.
KEEP_IDLE = 512


class GreenletPool:
    """Runs at most ``size`` calls at once, each in a pooled greenlet."""

    def __init__(self, size: int, keep_idle: int = KEEP_IDLE) -> None:
        self.size = size
        self.keep_idle = keep_idle
        #: One slot per running call (or per caller-held slot).
        self._semaphore = BoundedSemaphore(size)
        self._hub = get_hub()
        self._idle: list[Any] = []     #: greenlets waiting for work
        self._busy: set[Any] = set()   #: greenlets running a call
        self._doomed: set[Any] = set()  #: greenlets being killed
        self._empty = Event()
        self._empty.set()

    def __len__(self) -> int:
        """Calls running now."""
        return len(self._busy)

    def full(self) -> bool:
        """Whether every slot is taken."""
        return self._semaphore.locked()

    def free_count(self) -> int:
        """Slots free now."""
        return self._semaphore.counter

    def hold(self) -> bool:
        """Take a slot without running anything, if one is free now; the
        caller gives it back with ``release``."""
        return self._semaphore.acquire(blocking=False)

    def release(self) -> None:
        """Give back a slot taken with ``hold``."""
        self._semaphore.release()

    def spawn(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` in a pooled greenlet soon; waits for a slot
        when the pool is full."""
        self._semaphore.acquire()
        idle = self._idle
        worker = idle.pop() if idle else greenlet(self._work, parent=self._hub)
        self._busy.add(worker)
        self._empty.clear()
        # In a box the greenlet empties: greenlet keeps the arguments of a
        # greenlet's first switch referenced for as long as it lives.
        self._hub.loop.run_callback(worker.switch, [func, args])

    def _work(self, box: list) -> None:
        me = getcurrent()
        hub = self._hub
        while True:
            func, args = box
            box.clear()
            try:
                func(*args)
            except GreenletExit:
                pass
            except BaseException:
                hub.handle_error(me, *sys.exc_info())
            finally:
                self._busy.discard(me)
                if not self._busy:
                    self._empty.set()
                self._semaphore.release()
            func = args = None  # type: ignore[assignment]  # hold nothing while idle
            box = None  # type: ignore[assignment]
            if me in self._doomed or len(self._idle) >= self.keep_idle:
                self._doomed.discard(me)
                return
            self._idle.append(me)
            try:
                box = hub.switch()  # the next call, from spawn
            except GreenletExit:  # killed while idle
                self._doomed.discard(me)
                if me in self._idle:
                    self._idle.remove(me)
                return

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no call runs; False on timeout."""
        return bool(self._empty.wait(timeout))

    def kill(self, block: bool = True, timeout: float | None = None) -> None:
        """Raise GreenletExit in every running call and end every idle
        greenlet; none of them takes another call (later spawns get new
        greenlets)."""
        doomed = list(self._busy) + self._idle
        self._idle = []
        self._doomed.update(doomed)
        for worker in doomed:
            self._hub.loop.run_callback(self._end, worker)
        if block:
            self.join(timeout)

    def _end(self, worker: Any) -> None:
        if worker.dead:  # it finished its call and left before this ran
            self._doomed.discard(worker)
        else:
            worker.throw(GreenletExit)
