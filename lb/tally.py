# lb/tally.py -- the balancer's counters, in shared memory, one file per worker.
#
# Strategy: each worker process writes its figures into its own file in the
# balancer's run directory (on /dev/shm when there is one, so it is memory,
# not disk), mapped with mmap and laid out as ctypes structures: a header of
# totals, then one block per backend name.  The hot path bumps a field of a
# structure that lives in that mapping -- no lock (one writer per file), no
# system call, about the price of a Python attribute.  Whoever answers an
# admin request maps every worker's file read-only and adds them up, so any
# worker gives the same totals, and a file stays behind when its worker
# dies: counters keep its counts and never go backwards, while its gauges
# (connections, in flight) no longer count.
#
# Why not prometheus_client's multiprocess mode: it takes a lock and an
# mmap write per increment, one set of files per metric type, and needs its
# environment variable before the library is first imported (an import-
# order trap for every module).  The balancer bumps about eight figures per
# request and wants per-worker views for /stats, so it keeps a flat block
# per worker and leaves prometheus_client to what it does best: rendering
# the exposition format (lb.stats).
from __future__ import annotations

import bisect
import ctypes
import glob
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"gslbtly1"
PREFIX = "gservers-lb-"  #: run directories' names begin so
#: Backend names one worker file has room for (a reload that brings new
#: names takes new blocks; names that come back reuse theirs).
MAX_BACKENDS = 256
#: Upper bounds, in seconds, of the latency histogram's buckets (the last
#: bucket, +Inf, is implied): fine where loopback latencies fall, coarse
#: beyond.
BOUNDS = (0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
          0.0075, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0,
          30.0, 60.0)
#: Health as a worker last saw it, stored as its index here.
HEALTH = ("up", "ejected", "down")
#: Status codes counted one by one: 100 to 599.
FIRST_CODE, LAST_CODE = 100, 599

_i64 = ctypes.c_int64


class WorkerBlock(ctypes.Structure):
    """One worker's totals.  Counters only grow; gauges are now's values."""

    _fields_ = [
        ("magic", ctypes.c_char * 8),
        ("pid", _i64),
        ("index", _i64),
        ("started", ctypes.c_double),
        ("requests", _i64),
        ("retries", _i64),
        ("tunnels", _i64),                  # upgraded connections, in all
        ("responses", _i64 * (LAST_CODE - FIRST_CODE + 1)),
        ("nbackends", _i64),                # backend blocks in use
        # gauges
        ("client_connections", _i64),
        ("tunnels_open", _i64),
        ("parked", _i64),
        ("greenlets", _i64),
        ("draining", _i64),
    ]

    def count(self, status: int) -> None:
        """One response with ``status`` was sent."""
        if FIRST_CODE <= status <= LAST_CODE:
            self.responses[status - FIRST_CODE] += 1


class BackendBlock(ctypes.Structure):
    """One backend's figures in one worker."""

    _fields_ = [
        ("name", ctypes.c_char * 264),
        ("requests", _i64),
        ("failures", _i64),
        ("retries", _i64),
        ("ejections", _i64),
        ("connects", _i64),                 # new connections made
        ("reuses", _i64),                   # requests sent on a pooled connection
        ("latency_sum", ctypes.c_double),   # seconds, over the histogram's observations
        ("buckets", _i64 * (len(BOUNDS) + 1)),  # per bucket, not cumulative
        # gauges
        ("in_flight", _i64),
        ("idle", _i64),
        ("health", _i64),
    ]

    def observe(self, seconds: float) -> None:
        """One upstream latency into the histogram."""
        self.buckets[bisect.bisect_left(BOUNDS, seconds)] += 1
        self.latency_sum += seconds


_HEADER = ctypes.sizeof(WorkerBlock)
_BLOCK = ctypes.sizeof(BackendBlock)
SIZE = _HEADER + MAX_BACKENDS * _BLOCK


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a worker that died and was not reaped yet is a zombie
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def run_directory() -> str:
    """A new private directory for a balancer's files (in memory if it can),
    after removing those whose balancer died without removing its own (a
    SIGKILL): each holds the PID that made it.  Raises ValueError saying why
    when it cannot be made."""
    shm = "/dev/shm"
    where = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    for stale in glob.glob(os.path.join(where, f"{PREFIX}*")):
        try:
            with open(os.path.join(stale, "owner"), encoding="ascii") as f:
                owner = int(f.read())
        except (OSError, ValueError):
            continue  # not one of ours to judge (another user's, or being made)
        if not _alive(owner):
            shutil.rmtree(stale, ignore_errors=True)
    try:
        path = tempfile.mkdtemp(prefix=PREFIX, dir=where)
        with open(os.path.join(path, "owner"), "w", encoding="ascii") as f:
            f.write(str(os.getpid()))
    except OSError as exc:
        raise ValueError(f"cannot make the balancer's run directory in {where}: "
                         f"{exc.strerror or exc}") from None
    return path


def _create(directory: str) -> tuple[int, str]:
    """A new file of our own (a dead worker of the same PID keeps its own)."""
    for n in range(1000):
        path = os.path.join(directory, f"worker-{os.getpid()}{f'-{n}' if n else ''}.tally")
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), path
        except FileExistsError:
            continue
    raise OSError(f"no free tally file name in {directory}")


class Tally:
    """This worker's own file: its WorkerBlock and its backends' blocks."""

    def __init__(self, directory: str, index: int) -> None:
        """Raises ValueError, saying where and why, when the file cannot be made."""
        try:
            fd, self.path = _create(directory)
        except OSError as exc:
            raise ValueError(f"cannot keep the counters in {directory}: "
                             f"{exc.strerror or exc}") from None
        try:
            # Allocated now, not page by page as counters are first bumped:
            # a full tmpfs is this error at start, never a SIGBUS later.
            os.posix_fallocate(fd, 0, SIZE)
            self._map = mmap.mmap(fd, SIZE)
        except OSError as exc:
            raise ValueError(f"cannot keep the counters in {self.path}: "
                             f"{exc.strerror or exc}") from None
        finally:
            os.close(fd)
        self.worker = WorkerBlock.from_buffer(self._map)
        self.worker.pid, self.worker.index, self.worker.started = os.getpid(), index, time.time()
        self.worker.magic = MAGIC
        self._blocks: dict[str, BackendBlock] = {}

    def backend(self, name: str) -> BackendBlock:
        """The block of backend ``name``: the same one each time it is asked
        (across reloads too), a private one when the file is full."""
        block = self._blocks.get(name)
        if block is not None:
            return block
        used = self.worker.nbackends
        if used >= MAX_BACKENDS:
            block = BackendBlock()  # counted, but seen only by this worker's own reloads
        else:
            block = BackendBlock.from_buffer(self._map, _HEADER + used * _BLOCK)
            block.name = name.encode()[:263]
            self.worker.nbackends = used + 1
        self._blocks[name] = block
        return block


@dataclass
class WorkerFigures:
    """A copy of one worker's file, as read by whoever sums them."""

    worker: WorkerBlock
    backends: dict[str, BackendBlock]
    alive: bool


def read_all(directory: str) -> Iterator[WorkerFigures]:
    """Every worker's figures, the dead ones' included, oldest first."""
    found = []
    for path in glob.glob(os.path.join(directory, "worker-*.tally")):
        try:
            with open(path, "rb") as f:
                data = f.read(SIZE)
        except OSError:
            continue
        if len(data) < _HEADER or data[:8] != MAGIC:
            continue  # a worker still creating its file
        worker = WorkerBlock.from_buffer_copy(data)
        backends = {}
        for i in range(min(worker.nbackends, MAX_BACKENDS)):
            block = BackendBlock.from_buffer_copy(data, _HEADER + i * _BLOCK)
            backends[block.name.decode()] = block
        found.append(WorkerFigures(worker, backends, _alive(worker.pid)))
    found.sort(key=lambda w: (w.worker.started, w.worker.pid))
    return iter(found)


def quantiles(buckets: list[int], qs: tuple[float, ...]) -> list[float | None]:
    """Quantiles (seconds) of a histogram of per-bucket counts over BOUNDS,
    interpolated within the bucket as Prometheus' histogram_quantile does;
    None without observations."""
    total = sum(buckets)
    if not total:
        return [None for _ in qs]
    out: list[float | None] = []
    for q in qs:
        rank = q * total
        seen = 0
        for i, n in enumerate(buckets):
            if n and seen + n >= rank:
                low = BOUNDS[i - 1] if i else 0.0
                high = BOUNDS[i] if i < len(BOUNDS) else BOUNDS[-1]
                out.append(low + (high - low) * (rank - seen) / n)
                break
            seen += n
    return out
