# gservers/net/tls.py -- TLS on a GreenSocket: the stdlib's ssl, our waits.
#
# Strategy: the cryptography and the protocol are the standard library's
# (an ssl.SSLSocket in non-blocking mode, contexts from
# ssl.create_default_context); only the waiting is ours.  TLSSocket is a
# GreenSocket whose underlying socket is that SSLSocket: each call that
# would block raises SSLWantRead/WriteError, and is turned into a wait on
# the GreenSocket's persistent watchers under its deadline, exactly as a
# plain socket's EAGAIN is.  Written here rather than taken from
# gevent.ssl because that socket pays gevent's Waiter and Timeout per wait
# (the cost GreenSocket exists to avoid) and lacks the interface the
# balancer's code runs on -- recv_later, readable, the deadline timer --
# while ClientStream, parking and the upstream pool need the same object
# for plain and TLS connections.  Two points differ from a plain socket:
# decrypted bytes may wait inside the SSL object where no watcher sees them
# (``pending``), so readable() and recv_later() look there first; and a
# close sends TLS's close_notify first, so a close-delimited body does not
# read as truncated.  The plain path (GreenSocket itself) is untouched.
from __future__ import annotations

import logging
import select
import socket
import ssl
import time
from typing import Any

from gservers.http import HttpError
from gservers.http.responses import SERVER, error_response, frame
from gservers.net.greensock import GreenSocket

log = logging.getLogger("gservers.tls")

#: The only application protocol offered (ALPN): HTTP/1.1.
ALPN = ["http/1.1"]
#: How long a plain-HTTP client sent to a TLS port is read from after its 400.
PLAIN_LINGER = 0.5


class TLSSocket(GreenSocket):
    """A GreenSocket speaking TLS, with the same interface (recv, sendall,
    recv_later, readable, settimeout, shutdown, close); not thread-safe."""

    __slots__ = ()

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_side: bool,
                 hostname: str | None = None) -> None:
        """Wrap ``sock`` (a connected stdlib socket, owned from now on) with
        ``context``; ``hostname`` is checked and sent as SNI on the client
        side.  The handshake is ``handshake``'s."""
        super().__init__(context.wrap_socket(sock, server_side=server_side,
                                             do_handshake_on_connect=False,
                                             server_hostname=hostname))
        # readable() may not peek (an SSLSocket refuses recv flags): poll.
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)

    def handshake(self, timeout: float) -> None:
        """Complete the handshake within ``timeout`` seconds in all; raises
        TimeoutError, ssl.SSLError or OSError.  The socket's own timeout
        is left as it was."""
        deadline = time.monotonic() + timeout
        before = self._timeout
        try:
            while True:
                try:
                    self._sock.do_handshake()
                    return
                except ssl.SSLWantReadError:
                    watcher = self._read
                except ssl.SSLWantWriteError:
                    watcher = self._write
                self._timeout = max(0.0, deadline - time.monotonic())  # 0: TimeoutError
                self._wait(watcher)
        finally:
            self._timeout = before

    def recv(self, size: int, flags: int = 0) -> bytes:
        """Up to ``size`` decrypted bytes; b"" at EOF (with or without the
        peer's close_notify).  Raises TimeoutError or OSError (ssl.SSLError)."""
        sock = self._sock
        while True:
            try:
                return sock.recv(size, flags)
            except ssl.SSLWantReadError:
                self._wait(self._read)
            except ssl.SSLWantWriteError:
                self._wait(self._write)

    def recv_later(self, size: int) -> bytes:
        """``recv`` after a wait, unless decrypted bytes already wait."""
        if not self._sock.pending():
            self._wait(self._read)
        return self.recv(size)

    def send(self, data: bytes) -> int:
        sock = self._sock
        while True:
            try:
                return sock.send(data)
            except ssl.SSLWantWriteError:
                self._wait(self._write)
            except ssl.SSLWantReadError:
                self._wait(self._read)

    def sendall(self, data: bytes) -> None:
        """Send all of ``data``; the timeout applies to each wait.  After a
        want-write the same bytes are offered again, as OpenSSL requires."""
        sock = self._sock
        view = memoryview(data)
        sent = 0
        while sent < len(view):
            try:
                sent += sock.send(view[sent:])
            except ssl.SSLWantWriteError:
                self._wait(self._write)
            except ssl.SSLWantReadError:
                self._wait(self._read)

    def readable(self) -> bool:
        """Whether decrypted bytes, encrypted bytes or EOF wait unread."""
        return self._sock.pending() > 0 or bool(self._poll.poll(0))

    def shutdown(self, how: int) -> None:
        """Say close_notify (unless only reading stops), then shut the TCP
        connection down; the TLS state stays, so reads still decrypt."""
        if how != socket.SHUT_RD:
            self._close_notify()
        socket.socket.shutdown(self._sock, how)

    def close(self) -> None:
        """Say close_notify (without waiting for the peer's) and close."""
        if not self.closed:
            self._close_notify()
        super().close()

    def _close_notify(self) -> None:
        # One try, never a wait: a peer that is gone or not reading loses it.
        try:
            self._sock.unwrap()
        except (OSError, ValueError):
            pass

    def send_plain(self, data: bytes) -> None:
        """Write ``data`` unencrypted (an answer to a plain-HTTP client),
        then stop writing and read what the client still sends, briefly, so
        the close does not reset the answer away."""
        raw = socket.socket
        try:
            raw.send(self._sock, data)
            raw.shutdown(self._sock, socket.SHUT_WR)
            deadline = time.monotonic() + PLAIN_LINGER
            while (left := deadline - time.monotonic()) > 0:
                self._timeout = left
                self._wait(self._read)
                if not raw.recv(self._sock, 65536):
                    break
        except OSError:  # TimeoutError included
            pass


def describe(exc: BaseException) -> str:
    """A short reason for a failed handshake or TLS connection."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {(exc.reason or exc.strerror or str(exc)).lower().replace('_', ' ')}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def accept(sock: GreenSocket, context: ssl.SSLContext, timeout: float, peer: Any,
           server: bytes = SERVER) -> TLSSocket | None:
    """The TLS connection on accepted ``sock``, handshaken within
    ``timeout``; None (logged once at info, with the peer, and closed) if
    the handshake failed.  A plain-HTTP request gets a 400 first."""
    tls = TLSSocket(sock.detach(), context, True)
    try:
        tls.handshake(timeout)
        return tls
    except (OSError, ValueError) as exc:  # TimeoutError and ssl.SSLError included
        why = describe(exc)
        if isinstance(exc, ssl.SSLError) and exc.reason == "HTTP_REQUEST":
            why = "a plain HTTP request (answered 400)"
            error = HttpError(400, "plain HTTP request sent to the HTTPS port")
            response = error_response(error)
            tls.send_plain(frame(response, None, False, server) + response.body)
    where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else peer
    log.info("TLS handshake with %s failed: %s", where, why)
    tls.close()
    return None


def connect(family: int, sockaddr: tuple, timeout: float | None, context: ssl.SSLContext,
            hostname: str, reuse_addr: bool = False) -> TLSSocket:
    """A new TLS connection to ``sockaddr`` whose certificate ``context``
    checks against ``hostname`` (also sent as SNI unless an IP address);
    ``timeout`` bounds the TCP connect and then the handshake.  Raises
    OSError (ssl.SSLError, TimeoutError) or ValueError."""
    plain = GreenSocket.connect(family, sockaddr, timeout, reuse_addr)
    tls = TLSSocket(plain.detach(), context, False, hostname)
    try:
        tls.handshake(timeout if timeout is not None else 60.0)
    except BaseException:
        tls.close()
        raise
    return tls


def _common(context: ssl.SSLContext) -> None:
    """What both ends set: TLS 1.2 at least, ALPN http/1.1, and a peer's
    close without close_notify read as a plain EOF.  Without the last,
    OpenSSL 3 answers such an EOF -- or our own shutdown(SHUT_RD) in a
    drain -- with a decode_error alert; HTTP's framing detects a truncated
    message itself, as over plain TCP."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN)
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF


def _no_passphrase() -> str:
    raise ValueError("the key is encrypted; give an unencrypted key")


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A context for a TLS listener: the stdlib's secure defaults for
    servers, TLS 1.2 and 1.3, ALPN http/1.1, the certificate chain of
    ``certfile`` and the key of ``keyfile`` (default: in ``certfile``).
    Raises ValueError with one line naming the file at fault."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _common(context)
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_passphrase)
    except ValueError as exc:
        raise ValueError(f"--keyfile: {keyfile or certfile}: {exc}") from None
    except ssl.SSLError as exc:
        raise ValueError(_cert_problem(certfile, keyfile, exc)) from None
    except OSError as exc:
        raise ValueError(f"--certfile/--keyfile: cannot read {exc.filename or certfile}: "
                         f"{exc.strerror}") from None
    return context


def _cert_problem(certfile: str, keyfile: str | None, exc: ssl.SSLError) -> str:
    """Which of the files is wrong, as far as their text tells."""
    def text(path: str) -> str:
        try:
            with open(path, encoding="latin-1") as fh:
                return fh.read()
        except OSError as err:
            return f"cannot read: {err.strerror}"
    if "-----BEGIN CERTIFICATE-----" not in text(certfile):
        return f"--certfile: {certfile} holds no PEM certificate"
    if "PRIVATE KEY-----" not in text(keyfile or certfile):
        if keyfile is None:
            return f"--certfile: {certfile} holds no private key; give --keyfile"
        return f"--keyfile: {keyfile} holds no PEM private key"
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"--keyfile: {keyfile or certfile} does not match the certificate in {certfile}"
    return f"--certfile/--keyfile: cannot use {certfile}" + (
        f" with {keyfile}" if keyfile else "") + f": {describe(exc)}"


def client_context(cafile: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """A context for connecting to TLS servers: the stdlib's secure defaults,
    verifying against ``cafile`` (default: the system's CAs) with the
    hostname checked, unless ``verify`` is False.  Raises ValueError."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except ssl.SSLError as exc:
        raise ValueError(f"--backend-ca: {cafile} holds no PEM CA certificate "
                         f"({describe(exc)})") from None
    except OSError as exc:
        raise ValueError(f"--backend-ca: cannot read {cafile}: {exc.strerror}") from None
    _common(context)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
