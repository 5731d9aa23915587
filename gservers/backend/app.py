# gservers/backend/app.py -- what a backend answers: request head + body -> Response.
#
# Strategy: no sockets and no clocks here, so both server models give the same
# bytes.  GET/HEAD serve files under the document root, POST is read and
# answered with a small fixed body, /health answers for the balancer's checks,
# GET/HEAD under /work/ go to the synthetic work endpoints (work.py, which
# holds their clocks and waits with the sleep each model injects), and every
# refusal is a Response with a short reason.  A request-target is
# decoded once, dot-segments are refused outright and the resolved path must
# stay under the real root (which also stops symlinks that leave it).  That
# resolution (realpath: an lstat per path component) is remembered for a
# second per path; small files are cached in memory and re-validated with one
# stat() per request; large ones are streamed from disk.
from __future__ import annotations

import mimetypes
import os
import stat
import time
from urllib.parse import unquote_to_bytes

from gservers.backend.work import WORK_PREFIX, Sleep, Work
from gservers.http import Head, Headers, HttpError
from gservers.http.responses import ALLOW, Response, error_response

POST_BODY = b"OK\n"
HEALTH_PATH = b"/health"
#: Files up to this size are kept in memory; larger ones are streamed.
CACHE_LIMIT = 1024 * 1024
#: Seconds a path's resolution under the root is reused, and how many are kept.
RESOLVE_TTL = 1.0
RESOLVE_ENTRIES = 4096

# Methods llhttp knows that we do not serve: 405 with Allow (RFC 9110 15.5.6).
_KNOWN_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"OPTIONS"})


NOT_FOUND = error_response(HttpError(404, "not found"), close=False)


def _content_type(path: str) -> bytes:
    ctype, encoding = mimetypes.guess_type(path)
    if not ctype or encoding:
        return b"application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        ctype += "; charset=utf-8"
    return ctype.encode("ascii")


def request_path(target: bytes) -> bytes:
    """The decoded path of a request-target (origin- or absolute-form).

    Raises HttpError(400) for a target that is neither, for NUL bytes and for
    dot-segments, which no well-behaved client sends."""
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    lowered = path[:8].lower()
    if lowered.startswith(b"http://") or lowered.startswith(b"https://"):
        slash = path.find(b"/", path.find(b"//") + 2)
        path = path[slash:] if slash >= 0 else b"/"
    if not path.startswith(b"/"):
        raise HttpError(400, "request-target must be an absolute path")
    decoded = unquote_to_bytes(path)
    if b"\x00" in decoded:
        raise HttpError(400, "NUL in path")
    if any(seg in (b"..", b".") for seg in decoded.split(b"/")) or b"\\" in decoded:
        raise HttpError(400, "dot-segments are not allowed in the path")
    return decoded


class App:
    """Serves one document root, and the /work/ endpoints waiting with
    ``sleep`` (blocking ``time.sleep`` by default; the async model passes
    ``gevent.sleep``)."""

    def __init__(self, root: str, sleep: Sleep = time.sleep) -> None:
        self.root = os.path.realpath(root)
        self.work = Work(sleep)
        self._cache: dict[str, tuple[int, int, Response]] = {}
        self._resolved: dict[bytes, tuple[float, str | None]] = {}

    def handle(self, head: Head, body: bytes) -> Response:
        """Answer one complete request."""
        method = head.method
        if method not in _KNOWN_METHODS:
            return error_response(HttpError(405, "method not allowed"), close=False)
        if method == b"OPTIONS":
            return Response(200, ((b"Allow", ALLOW), (b"Content-Length", b"0")))
        if method == b"POST":
            return Response(200, ((b"Content-Type", b"text/plain; charset=utf-8"),
                                  (b"Content-Length", b"%d" % len(POST_BODY))), POST_BODY)
        try:
            path = request_path(head.target)
        except HttpError as exc:
            return error_response(exc, close=False)
        if path == HEALTH_PATH:
            return Response(200, ((b"Content-Type", b"text/plain; charset=utf-8"),
                                  (b"Content-Length", b"3")), b"ok\n")
        if path.startswith(WORK_PREFIX):
            return self.work.handle(path, head.target)
        return self._static(path)

    def _resolve(self, path: bytes) -> str | None:
        """The real file path for a decoded request path, or None when it
        leaves the root; remembered for RESOLVE_TTL seconds."""
        now = time.monotonic()
        hit = self._resolved.get(path)
        if hit is not None and hit[0] > now:
            return hit[1]
        real: str | None = os.path.realpath(
            os.path.join(self.root, os.fsdecode(path.lstrip(b"/"))))
        if real != self.root and not real.startswith(self.root + os.sep):
            real = None
        if len(self._resolved) >= RESOLVE_ENTRIES:
            self._resolved.clear()
        self._resolved[path] = (now + RESOLVE_TTL, real)
        return real

    def _static(self, path: bytes) -> Response:
        try:
            real = self._resolve(path)
            if real is None:
                return NOT_FOUND
            st = os.stat(real)
            if stat.S_ISDIR(st.st_mode):
                real = os.path.join(real, "index.html")
                st = os.stat(real)
            if not stat.S_ISREG(st.st_mode):
                return NOT_FOUND
        except (OSError, ValueError):
            return NOT_FOUND
        cached = self._cache.get(real)
        if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2]
        headers: Headers = ((b"Content-Type", _content_type(real)),
                            (b"Content-Length", b"%d" % st.st_size))
        if st.st_size > CACHE_LIMIT:
            return Response(200, headers, path=real)
        try:
            with open(real, "rb") as fh:
                content = fh.read()
        except OSError:
            return NOT_FOUND
        if len(content) != st.st_size:  # changed under us: serve what we read
            headers = (headers[0], (b"Content-Length", b"%d" % len(content)))
        response = Response(200, headers, content)
        self._cache[real] = (st.st_mtime_ns, st.st_size, response)
        return response
