# gservers/backend/work.py -- synthetic work: /work/cpu?ms=N and /work/wait?ms=N.
#
# Strategy: two endpoints that show when each server model wins.
# ``GET /work/cpu?ms=N`` burns about N ms of CPU in the handling process with
# a fixed computation (chained SHA-256 of 32 bytes), never a sleep and never a
# spin on a clock: at first use the process measures, with
# ``time.thread_time()`` (CPU time of the calibrating thread, so time spent
# waiting for a CPU or the GIL does not count), how many iterations take 1 ms,
# over ten rounds of ~5 ms, keeping the fastest: interference (such as a busy
# SMT sibling) only slows a round, so N ms means N ms of an unhindered core,
# and a busy machine may spend more.  Each request then does round(N x
# per_ms) iterations.  Calibration runs once per process, under a lock.
# ``GET /work/wait?ms=N`` waits N ms without using CPU through the injected
# ``sleep``: ``gevent.sleep`` in the async model (cooperative: the other
# connections go on), ``time.sleep`` in the thread model (blocking its
# thread, as a database or upstream call would).
# So CPU-bound work stalls every connection of an async backend (the thread
# model goes on answering the others between GIL switches), and waiting work
# holds one OS thread per request in the thread model but nothing in async.
#
# N is a whole number 0..10000 given as the only query parameter (``ms=N``,
# ASCII digits; leading zeros allowed); a missing or malformed value, any
# other query parameter, and an unknown /work/ path are refused with 400 or
# 404 and a short reason, the connection kept open.  HEAD does the same work
# as GET (the connection drops the body).  Bodies have a fixed size whatever
# N is (``b"cpu 00005 ms\n"``, ``b"wait 00050 ms\n"``), so a load generator's
# length check holds.  The clocks and the sleeping live here, not in app.py.
from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from gservers.http import HttpError
from gservers.http.responses import Response, error_response

#: The path prefix these endpoints own (files under it are not served).
WORK_PREFIX = b"/work/"
#: The largest N accepted, in milliseconds.
MAX_MS = 10000
#: CPU seconds of work measured to calibrate /work/cpu, and in how many rounds.
CALIBRATION_SECONDS = 0.05
CALIBRATION_ROUNDS = 10
#: Iterations per calibration batch (the clock is read between batches).
_BATCH = 256

#: A sleep function: seconds in, returns once they have passed.
Sleep = Callable[[float], object]

_HEADERS_TYPE = (b"Content-Type", b"text/plain; charset=utf-8")
_SEED = b"gservers synthetic work, 32 byte"


def burn(iterations: int, seed: bytes = _SEED) -> bytes:
    """Chain ``iterations`` SHA-256 digests from ``seed``; return the last."""
    digest = seed
    sha256 = hashlib.sha256
    for _ in range(iterations):
        digest = sha256(digest).digest()
    return digest


def calibrate(seconds: float = CALIBRATION_SECONDS,
              rounds: int = CALIBRATION_ROUNDS) -> float:
    """Iterations of ``burn`` per millisecond of this thread's CPU time: the
    fastest of ``rounds`` rounds sharing ``seconds`` of CPU, after a warm-up."""
    burn(_BATCH * 4)
    best = 0.0
    for _ in range(rounds):
        done = 0
        start = time.thread_time()
        while (elapsed := time.thread_time() - start) < seconds / rounds:
            burn(_BATCH)
            done += _BATCH
        best = max(best, done / (elapsed * 1000.0))
    return best


def parse_ms(target: bytes) -> int:
    """N from a request-target whose whole query is ``ms=N`` (0..MAX_MS).

    Raises HttpError(400) naming what is wrong."""
    query = target.partition(b"?")[2].partition(b"#")[0]
    if not query:
        raise HttpError(400, f"ms=N is required (0..{MAX_MS})")
    name, eq, value = query.partition(b"=")
    if name != b"ms" or not eq or b"&" in value:
        raise HttpError(400, "only one query parameter, ms=N, is accepted")
    significant = value.lstrip(b"0") or b"0"  # int() of a long digit string is slow
    # bytes.isdigit: ASCII digits only, so "-1", "+1", "abc" and "" are refused.
    if (not value.isdigit() or len(significant) > len(str(MAX_MS))
            or int(significant) > MAX_MS):
        raise HttpError(400, f"ms must be a whole number 0..{MAX_MS}")
    return int(significant)


def _answer(body: bytes) -> Response:
    return Response(200, (_HEADERS_TYPE, (b"Content-Length", b"%d" % len(body))), body)


class Work:
    """The /work/ endpoints, waiting with the injected ``sleep``."""

    def __init__(self, sleep: Sleep = time.sleep) -> None:
        self.sleep = sleep
        self._per_ms: float | None = None
        self._lock = threading.Lock()
        self._endpoints: dict[bytes, Callable[[int], Response]] = {
            b"/work/cpu": self.cpu,
            b"/work/wait": self.wait,
        }

    def per_ms(self) -> float:
        """Iterations of ``burn`` per CPU millisecond, calibrated at first use."""
        per_ms = self._per_ms
        if per_ms is None:
            # Calibration never yields, so under gevent no other greenlet can
            # find this (unpatched) lock held and block the whole loop on it.
            with self._lock:
                if self._per_ms is None:
                    self._per_ms = calibrate()
                per_ms = self._per_ms
        return per_ms

    def cpu(self, ms: int) -> Response:
        """Burn about ``ms`` milliseconds of CPU."""
        burn(round(ms * self.per_ms()))
        return _answer(b"cpu %05d ms\n" % ms)

    def wait(self, ms: int) -> Response:
        """Wait ``ms`` milliseconds without using CPU."""
        self.sleep(ms / 1000.0)
        return _answer(b"wait %05d ms\n" % ms)

    def handle(self, path: bytes, target: bytes) -> Response:
        """Answer a GET or HEAD of decoded ``path`` (under WORK_PREFIX)."""
        endpoint = self._endpoints.get(path)
        if endpoint is None:
            return error_response(HttpError(404, "no such work endpoint (/work/cpu, "
                                                 "/work/wait)"), close=False)
        try:
            ms = parse_ms(target)
        except HttpError as exc:
            return error_response(exc, close=False)
        return endpoint(ms)
