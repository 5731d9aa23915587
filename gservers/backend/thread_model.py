# gservers/backend/thread_model.py -- the thread model: one OS thread per connection.
#
# Strategy: the model the seed compared against, done properly.  The main
# thread accepts; each connection gets a real OS thread of its own for its
# whole life, running the same blocking handler as the async model (no gevent
# in this process at all).  A thread whose connection has closed waits a while
# to be handed the next one instead of exiting: creating a thread costs
# system calls and GIL hand-offs that a short connection would pay each time.
# At ``max_connections`` live connections it stops accepting, the same
# backpressure as the async pool: the listener leaves the wait until a
# handler that frees a slot says so with a byte on a socket pair, so a full
# server sleeps rather than polling its backlog.  Signals are turned into a byte on a wakeup
# pipe, so the accept loop waits on ``select`` and never loses an accepted
# connection to a signal; a graceful stop then closes the listener, wakes
# idle keep-alive connections and waits for the live connections to finish.
from __future__ import annotations

import _thread
import logging
import os
import queue
import selectors
import signal
import socket
import threading
import time

from gservers.backend.app import App
from gservers.backend.config import BackendConfig
from gservers.backend.connection import serve
from gservers.net.idle import IDLE_LINGER, IdleConnections
from gservers.net.listen import bind, bound_port

log = logging.getLogger("gservers.thread")

#: Thread stacks: small, since a handler's recursion depth is tiny.
STACK_SIZE = 512 * 1024
#: Seconds a thread with no connection waits for one before it exits.
IDLE_THREAD_SECONDS = 60.0
#: Threads kept waiting for a connection; more exit at once, so a burst of
#: connections does not leave its threads behind for a minute.
MAX_IDLE_THREADS = 256


class ThreadServer:
    """Accept loop plus the bookkeeping of live handler threads."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.listener = bind(config.host, config.port, config.backlog, socket.socket)
        self.listener.setblocking(False)
        self.app = App(config.root, time.sleep,  # /work/wait blocks its thread
                       config.cache_max_age, config.file_cache_bytes)
        self.idle = IdleConnections()
        self._live = 0
        self._live_lock = threading.Lock()
        self._handoff: queue.SimpleQueue = queue.SimpleQueue()
        self._idle_threads = 0  # threads waiting on _handoff, not yet promised a connection
        self._warned = 0.0
        #: A byte arrives on room_r when a full server gets a free slot.
        self.room_r, self._room_w = socket.socketpair()
        self.room_r.setblocking(False)
        self._room_w.setblocking(False)

    @property
    def live(self) -> int:
        """Connections being served."""
        return self._live

    def _thread(self, conn: socket.socket, address: object) -> None:
        """A handler thread: serve this connection, then any handed over."""
        while True:
            try:
                serve(conn, address, self.app, self.config, self.idle)
            finally:
                with self._live_lock:
                    freed = self._live == self.config.max_connections
                    self._live -= 1
                    retire = self._idle_threads >= MAX_IDLE_THREADS
                    if not retire:
                        self._idle_threads += 1
                if freed:
                    try:
                        self._room_w.send(b"\0")
                    except OSError:  # full (a wakeup is pending anyway) or closed
                        pass
            if retire:
                return
            while True:
                try:
                    conn, address = self._handoff.get(timeout=IDLE_THREAD_SECONDS)
                    break
                except queue.Empty:
                    with self._live_lock:
                        if self._idle_threads > 0:  # nothing is promised to us: retire
                            self._idle_threads -= 1
                            return

    def _dispatch(self, conn: socket.socket, address: object) -> None:
        """Give a new connection to an idle thread, or to a new one."""
        with self._live_lock:
            self._live += 1
            reuse = self._idle_threads > 0
            if reuse:
                self._idle_threads -= 1
        if reuse:
            self._handoff.put((conn, address))
        else:
            # _thread directly: threading.Thread.start() waits until the new
            # thread has run, a context switch per connection.
            _thread.start_new_thread(self._thread, (conn, address))

    def _accept_all(self) -> bool:
        """Accept every connection waiting (up to ``max_connections`` live);
        True when it stopped because every slot is taken."""
        limit = self.config.max_connections
        while True:
            if self._live >= limit:
                return True  # the rest wait in the backlog
            try:
                conn, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                now = time.monotonic()
                if now - self._warned > 5:
                    self._warned = now
                    log.warning("cannot accept: %s; pausing accepts", exc.strerror)
                time.sleep(0.05)
                return False
            conn.setblocking(True)
            self._dispatch(conn, address)

    def serve_until_signalled(self, stopping: threading.Event, wake_r: socket.socket) -> None:
        """Accept until ``stopping`` is set (by a signal, which also writes to
        ``wake_r``'s pair so that the wait below returns at once)."""
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        selector.register(self.room_r, selectors.EVENT_READ)
        full = False
        try:
            while not stopping.is_set():
                # No timeout: a signal writes to wake_r, a freed slot to room_r.
                for key, _ in selector.select():
                    if key.fileobj is self.listener and not stopping.is_set():
                        full = self._accept_all()
                        if full:  # not readable-and-ignored: out of the wait
                            selector.unregister(self.listener)
                    elif key.fileobj in (wake_r, self.room_r):
                        _empty(key.fileobj)  # type: ignore[arg-type]
                if full and self._live < self.config.max_connections:
                    full = False
                    selector.register(self.listener, selectors.EVENT_READ)
        finally:
            selector.close()

    def drain(self) -> None:
        """Stop accepting; let live connections finish within the grace period."""
        self.listener.close()
        deadline = time.monotonic() + self.config.grace
        self.idle.drain(time.sleep, min(IDLE_LINGER, self.config.grace / 2))
        while self.live and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.live:
            log.warning("grace period over; abandoning %d connection(s)", self.live)
        self.room_r.close()
        self._room_w.close()


def _empty(sock: socket.socket) -> None:
    """Read whatever wakeup bytes are waiting on ``sock``."""
    try:
        while sock.recv(512):
            pass
    except BlockingIOError:
        pass


def _catch_signals() -> tuple[threading.Event, socket.socket, socket.socket]:
    """SIGTERM/SIGINT set the returned event and write to a wakeup socket pair
    (returned too, reading end first).  Installed before the listener exists,
    so no signal can arrive while the default action would still kill us."""
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    return stopping, wake_r, wake_w


def run(config: BackendConfig) -> int:
    """Serve until SIGTERM or SIGINT; return the exit code."""
    threading.stack_size(STACK_SIZE)
    stopping, wake_r, wake_w = _catch_signals()
    server = ThreadServer(config)
    log.info("thread backend listening on http://%s:%d (pid %d, max %d threads)",
             config.host, bound_port(server.listener), os.getpid(), config.max_connections)
    server.serve_until_signalled(stopping, wake_r)
    signal.set_wakeup_fd(-1)
    wake_r.close()
    wake_w.close()
    log.info("stopping: draining %d connection(s), grace %.1fs", server.live, config.grace)
    server.drain()
    log.info("stopped")
    return 0
