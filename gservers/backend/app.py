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
# second per path.  Each file version becomes a files.FileEntry (validators
# and the 200/304 answers prebuilt), re-validated with one stat() per
# request; small files are held in memory, large ones sent from disk (with
# sendfile, by gservers.net.stream).  The entries are bounded: at most
# CACHE_ENTRIES of them and ``cache_bytes`` of content held; past either the
# oldest made is dropped (first in, first out -- a hit costs no bookkeeping,
# and a hot file dropped comes back on its next request).  Conditional and Range requests are
# answered by files.answer; a plain GET gets the prebuilt 200.  A folder
# without its trailing slash is redirected (301) to it, a folder serves its
# index.html or 404 (no listings).
from __future__ import annotations

import mimetypes
import os
import stat
import threading
import time
from urllib.parse import unquote_to_bytes

from gservers.backend.files import FileEntry, answer, folder_redirect, has_conditions, make_entry
from gservers.backend.work import WORK_PREFIX, Sleep, Work
from gservers.http import Head, HttpError
from gservers.http.responses import ALLOW, Response, error_response

POST_BODY = b"OK\n"
HEALTH_PATH = b"/health"
#: Files up to this size are kept in memory; larger ones are streamed.
CACHE_LIMIT = 1024 * 1024
#: File entries kept at most (each a few hundred bytes besides its content).
CACHE_ENTRIES = 10_000
#: Bytes of file content kept in memory at most, by default.
CACHE_BYTES = 64 * 1024 * 1024
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
    ``gevent.sleep``); ``cache_max_age`` adds ``Cache-Control: max-age=N``
    to file answers; ``cache_bytes`` bounds the file content held in memory."""

    def __init__(self, root: str, sleep: Sleep = time.sleep,
                 cache_max_age: int | None = None, cache_bytes: int = CACHE_BYTES) -> None:
        self.root = os.path.realpath(root)
        self.work = Work(sleep)
        self.cache_control = None if cache_max_age is None else b"max-age=%d" % cache_max_age
        self.cache_bytes = cache_bytes
        self.held = 0  #: bytes of file content in the cache now
        self._cache: dict[str, FileEntry] = {}
        self._loading = threading.Lock()  # the thread model loads from many threads
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
        return self._static(head, path)

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

    def _static(self, head: Head, path: bytes) -> Response:
        try:
            real = self._resolve(path)
            if real is None:
                return NOT_FOUND
            st = os.stat(real)
            if stat.S_ISDIR(st.st_mode):
                if not path.endswith(b"/"):
                    return folder_redirect(head.target)
                real = self._resolve(path + b"index.html")
                if real is None:
                    return NOT_FOUND
                st = os.stat(real)
            elif path.endswith(b"/"):
                return NOT_FOUND  # a file is not a folder
            if not stat.S_ISREG(st.st_mode):
                return NOT_FOUND
        except (OSError, ValueError):
            return NOT_FOUND
        entry = self._cache.get(real)
        if entry is None or not entry.matches(st):
            entry = self._load(real, st)
            if entry is None:
                return NOT_FOUND
        if has_conditions(head):
            return answer(entry, head)
        return entry.full

    def _load(self, real: str, st: os.stat_result) -> FileEntry | None:
        """A new entry for ``real``, its content read when small enough."""
        content = None
        if st.st_size <= min(CACHE_LIMIT, self.cache_bytes):
            try:
                with open(real, "rb") as fh:
                    content = fh.read(CACHE_LIMIT + 1)
            except OSError:
                return None
            if len(content) > min(CACHE_LIMIT, self.cache_bytes):  # it grew: from disk
                content = None
        entry = make_entry(real, st, _content_type(real), content, self.cache_control)
        with self._loading:
            self._forget(real)
            size = len(content) if content is not None else 0
            while self._cache and (len(self._cache) >= CACHE_ENTRIES
                                   or self.held + size > self.cache_bytes):
                self._forget(next(iter(self._cache)))  # the oldest made
            self._cache[real] = entry
            self.held += size
        return entry

    def _forget(self, real: str) -> None:
        old = self._cache.pop(real, None)
        if old is not None and old.body is not None:
            self.held -= len(old.body)

    @property
    def cached(self) -> list[str]:
        """The real paths of the files in the cache now, oldest first."""
        return list(self._cache)
