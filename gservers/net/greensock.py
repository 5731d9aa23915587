# gservers/net/greensock.py -- a cooperative socket with cheap waits and deadlines.
#
# Strategy: gevent's own socket allocates a Waiter for every wait that would
# block and, when the socket has a timeout, a Timeout object with a fresh
# libev timer; at a balancer's request rates those two are a large share of
# the per-request CPU.  No library offers a cheaper blocking-style socket for gevent, so this one is
# written here.  It wraps the raw non-blocking socket and keeps, for its
# whole life, one read watcher, one write watcher and one deadline timer.  A
# wait starts a watcher with the waiting greenlet's own ``switch`` and
# switches to the hub.  A timeout only records a deadline: the timer is
# armed once and, when it fires early (the deadline has moved on since), it
# re-arms itself for the rest, so a busy keep-alive connection touches the
# timer once per timeout period instead of once per wait.  The timer throws
# ``TimeoutError`` into the greenlet only while it waits on this socket.
# Method names and semantics are the standard socket's (recv, sendall,
# settimeout, sendfile ...), so the blocking connection code runs on it
# unchanged; sendfile is os.sendfile waiting on the write watcher at EAGAIN.
from __future__ import annotations

import _socket
import errno
import os
import select
import socket
from typing import Any

from gevent import get_hub
from greenlet import getcurrent

_EAGAIN = (BlockingIOError, InterruptedError)
#: Bytes per os.sendfile call at most (each returns once the socket buffer is full).
_SENDFILE_BLOCK = 1 << 30
#: The sockets os.sendfile may write to directly (an ssl.SSLSocket may not).
_PLAIN = (_socket.socket, socket.socket)
#: What os.sendfile fails with when it cannot copy this file to this socket.
_NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK})


class GreenSocket:
    """A connected stream socket for use from greenlets (not thread-safe)."""

    __slots__ = ("_sock", "_loop", "_hub", "_read", "_write", "_timer", "_timeout",
                 "_deadline", "_armed_for", "_waiter", "family", "_poll", "_reading")

    def __init__(self, sock: Any) -> None:
        """Wrap ``sock``: a raw ``_socket.socket`` (or a stdlib one), which
        is switched to non-blocking mode; the wrapper owns it from now on."""
        sock.setblocking(False)
        self._sock = sock
        self.family = sock.family
        hub = get_hub()
        self._hub = hub
        self._loop = loop = hub.loop
        fd = sock.fileno()
        self._read = loop.io(fd, 1)
        self._write = loop.io(fd, 2)
        self._timer: Any = None
        self._timeout: float | None = None
        self._deadline = 0.0
        self._armed_for = 0.0          #: when the timer fires, if armed
        self._waiter: Any = None       #: the greenlet waiting on this socket
        self._reading = False          #: whether it waits on the read watcher
        self._poll: Any = None  #: a poll object, for sockets checked often (see connect)

    @classmethod
    def connect(cls, family: int, sockaddr: tuple, timeout: float | None,
                reuse_addr: bool = False) -> GreenSocket:
        """A new connection to ``sockaddr``; raises OSError or TimeoutError."""
        raw = _socket.socket(family, _socket.SOCK_STREAM)
        if reuse_addr:
            raw.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        self = cls(raw)
        try:
            self._timeout = timeout
            err = raw.connect_ex(sockaddr)
            if err in (errno.EINPROGRESS, errno.EAGAIN):
                self._wait(self._write)
                err = raw.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
        except BaseException:
            self.close()
            raise
        # A client's connection is checked before each reuse: a poll object
        # answers without raising, cheaper than a failed peek.
        self._poll = select.poll()
        self._poll.register(raw.fileno(), select.POLLIN)
        return self

    # -- the socket API used by the servers ----------------------------------
    def fileno(self) -> int:
        return self._sock.fileno()

    def settimeout(self, timeout: float | None) -> None:
        """Deadline for each following wait (None: wait for ever)."""
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def recv(self, size: int, flags: int = 0) -> bytes:
        """Up to ``size`` bytes; b"" at EOF.  Raises TimeoutError or OSError."""
        while True:
            try:
                return self._sock.recv(size, flags)
            except _EAGAIN:
                self._wait(self._read)

    def recv_later(self, size: int) -> bytes:
        """``recv`` for when the bytes cannot be here yet (the answer to what
        was just sent): wait first, which saves a failed read -- a system
        call and an exception -- per message."""
        self._wait(self._read)
        return self.recv(size)

    def send(self, data: bytes) -> int:
        while True:
            try:
                return self._sock.send(data)
            except _EAGAIN:
                self._wait(self._write)

    def sendall(self, data: bytes) -> None:
        """Send all of ``data``; the timeout applies to each wait."""
        try:
            sent = self._sock.send(data)
        except _EAGAIN:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)
        while sent < len(view):
            self._wait(self._write)
            try:
                sent += self._sock.send(view[sent:])
            except _EAGAIN:
                pass

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """Send ``count`` bytes of ``file`` from ``offset`` (None: to its end)
        with os.sendfile, waiting for writability cooperatively (the timeout
        applies to each wait); returns the bytes sent, fewer when the file
        ends first.  Where sendfile cannot be used (no descriptor, a file or
        system that refuses it, a socket that is not plain TCP -- TLS encrypts
        in its sendall) the bytes are read and sent instead."""
        try:
            in_fd, copy = file.fileno(), os.sendfile
        except (AttributeError, OSError):  # io.UnsupportedOperation is an OSError
            return self._send_by_reads(file, offset, count)
        if type(self._sock) not in _PLAIN:
            return self._send_by_reads(file, offset, count)
        out_fd = self._sock.fileno()
        total = 0
        while count is None or total < count:
            size = _SENDFILE_BLOCK if count is None else min(count - total, _SENDFILE_BLOCK)
            try:
                sent = copy(out_fd, in_fd, offset + total, size)
            except _EAGAIN:
                self._wait(self._write)
                continue
            except OSError as exc:
                if total or exc.errno not in _NO_SENDFILE:
                    raise
                return self._send_by_reads(file, offset, count)
            if not sent:
                break  # the end of the file
            total += sent
        return total

    def _send_by_reads(self, file: Any, offset: int, count: int | None) -> int:
        file.seek(offset)
        total = 0
        while count is None or total < count:
            block = file.read(65536 if count is None else min(65536, count - total))
            if not block:
                break
            self.sendall(block)
            total += len(block)
        return total

    def readable(self) -> bool:
        """Whether bytes or EOF wait unread (never blocks)."""
        if self._poll is not None:
            return bool(self._poll.poll(0))
        try:
            self._sock.recv(1, _socket.MSG_PEEK)
        except _EAGAIN:
            return False
        except OSError:
            pass  # a pending error (a reset) is news too
        return True

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self._sock.getsockopt(*args)

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        """Close (again: nothing); a greenlet waiting on this socket gets EBADF."""
        if self._sock.fileno() < 0:
            return
        self._poll = None  # registered by descriptor number, which is about to be reused
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None
        self._read.stop()
        self._write.stop()
        waiter = self._waiter
        if waiter is not None and waiter is not getcurrent():
            self._loop.run_callback(self._cancel, waiter)
        self._sock.close()

    def _cancel(self, waiter: Any) -> None:
        """In the hub: the socket was closed under ``waiter``; wake it with
        EBADF if it is still waiting on this socket."""
        if self._waiter is waiter:
            self._waiter = None
            waiter.throw(OSError(errno.EBADF, "socket closed"))

    @property
    def closed(self) -> bool:
        return self._sock.fileno() < 0

    def detach(self) -> socket.socket:
        """Hand the connection over (gservers.net.tls wraps it for TLS): the
        watchers and the timer are closed and this wrapper is left closed;
        the descriptor comes back as a stdlib socket, still non-blocking.
        Only between waits."""
        self._poll = None
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None
        for watcher in (self._read, self._write):
            watcher.stop()
            watcher.close()
        sock = socket.socket(self.family, socket.SOCK_STREAM, 0, self._sock.detach())
        sock.setblocking(False)
        return sock

    # -- waiting -------------------------------------------------------------
    def _wait(self, watcher: Any) -> None:
        """Block this greenlet until ``watcher`` fires or the deadline passes."""
        timeout = self._timeout
        if timeout is not None:
            if timeout <= 0:
                raise TimeoutError("timed out")
            loop = self._loop
            loop.update_now()  # the loop's clock is as old as its iteration
            deadline = loop.now() + timeout
            self._deadline = deadline
            timer = self._timer
            if timer is None or not timer.active or self._armed_for > deadline:
                self._arm(deadline, timeout)
        current = getcurrent()
        self._waiter = current
        if watcher is self._read:
            # The read watcher stays started between waits: stopping and
            # starting it cost an epoll_ctl per wait (libev re-adds the
            # descriptor, EEXIST), two per proxied request.
            self._reading = True
            if not watcher.active:
                watcher.start(self._readable)
            try:
                self._hub.switch()
            finally:
                self._reading = False
                self._waiter = None
            return
        watcher.start(current.switch)
        try:
            self._hub.switch()
        finally:
            watcher.stop()
            self._waiter = None

    def _readable(self) -> None:
        """In the hub: the descriptor is readable (or at EOF)."""
        if self._reading:
            self._waiter.switch()
        else:  # nobody reads now: stop, or it would fire on every loop pass
            self._read.stop()

    def _arm(self, deadline: float, delay: float) -> None:
        # A libev timer's delay is fixed when it is made; re-arming is rare
        # (at most once per timeout period), so a new one is cheap enough.
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
        timer = self._timer = self._loop.timer(delay)
        timer.ref = False  # a pending deadline alone keeps no loop alive
        self._armed_for = deadline
        timer.start(self._expired)

    def _expired(self) -> None:
        """In the hub: the timer fired; throw if the deadline has passed."""
        waiter = self._waiter
        if waiter is None or self._timeout is None:
            return  # not waiting now: the next wait re-arms
        now = self._loop.now()
        if now < self._deadline:  # the deadline moved on since this was armed
            self._arm(self._deadline, self._deadline - now)
            return
        self._waiter = None
        waiter.throw(TimeoutError("timed out"))


def wrap_accepted(fd: int, family: int = socket.AF_INET) -> GreenSocket:
    """A GreenSocket for a descriptor returned by accept."""
    return GreenSocket(_socket.socket(family, _socket.SOCK_STREAM, 0, fd))
