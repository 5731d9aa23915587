# gservers/net/listen.py -- process and listener set-up shared by every program.
#
# Strategy: the few OS-facing steps each server does once at start, with the
# errors a user can act on turned into one clear line: a port in use (or
# held only by TIME_WAIT sockets of an earlier run's connections, found with
# psutil), an address that does not exist, a too-low open-files limit.  The
# socket class is a parameter, so the async model binds a gevent socket and
# the thread model a standard one through the same code.
from __future__ import annotations

import errno
import logging
import resource
import socket
from typing import Any

import psutil

log = logging.getLogger(__name__)


class ListenError(Exception):
    """The listener could not be set up; the message says why."""


def bind(host: str, port: int, backlog: int, sock_cls: Any = socket.socket,
         reuse_port: bool = False) -> Any:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6 literal/name)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = sock_cls(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            if only_time_wait(port):
                raise ListenError(f"port {port} on {host} is held only by closing connections "
                                  f"of an earlier run (TIME_WAIT); wait up to a minute, or "
                                  f"choose another port") from None
            raise ListenError(f"port {port} on {host} is already in use") from None
        if exc.errno == errno.EACCES:
            raise ListenError(f"not allowed to listen on {host}:{port}") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenError(f"address {host} is not on this machine") from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def only_time_wait(port: int) -> bool:
    """Whether TCP sockets hold local ``port`` and all of them are in
    TIME_WAIT: connections of an earlier run whose local end had this port
    (an ephemeral port picked by connect(), or bound explicitly).  Such a
    socket made without SO_REUSEADDR blocks a listener's bind on Linux
    although nothing listens, for up to a minute.  False when the sockets
    cannot be read."""
    try:
        states = [conn.status for conn in psutil.net_connections(kind="tcp")
                  if conn.laddr and conn.laddr.port == port]
    except (psutil.Error, OSError):
        return False
    return bool(states) and all(state == psutil.CONN_TIME_WAIT for state in states)


def raise_nofile_limit() -> int:
    """Raise the open-files soft limit to the hard limit; return the new one.

    A proxy at c=1000 holds two descriptors per client, past the common
    default of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - container limits
            log.warning("could not raise the open-files limit above %d", soft)
    return soft


def bound_port(sock: Any) -> int:
    """The port a listener is bound to (useful after binding port 0)."""
    return int(sock.getsockname()[1])
