# loadtests/procstats.py -- what a running process (and the machine) has used, from psutil.
#
# Strategy: every process figure the load-test tooling reads -- the process
# supervisor (loadtests/supervisor.py) and, through it, the sweep,
# bench_floor and the comparison benchmark (loadtests/benchmark/), and the
# tests -- comes from psutil through this one module: CPU seconds (user +
# system, i.e. utime + stime), resident and peak memory, open descriptors, a
# process's children, the connections it has accepted, and the machine's
# busy CPU time.  One rule for a process that is
# gone: a PID that has exited, or that may not be read, counts as nothing
# (0, an empty list, False), never an exception, because servers and their
# workers come and go between two reads.  Where identity matters the
# functions take psutil.Process objects: psutil remembers each one's start
# time, so a PID the kernel has since given to another process is never
# mistaken for ours.  The one figure psutil lacks, the peak resident set
# size (VmHWM), is read from /proc/PID/status here and nowhere else, and
# reset (so a peak can be taken over one run) through /proc/PID/clear_refs.
# Whether a port is held only by TIME_WAIT sockets is gservers.netutil's
# only_time_wait (the servers need it and must not import loadtests).
from __future__ import annotations

from collections.abc import Iterable

import psutil

#: A process by PID or as a psutil.Process (which also knows its start time).
Pid = int | psutil.Process

#: What reading a process that has exited (ZombieProcess is a NoSuchProcess
#: too) or that we may not read raises; such a process counts as gone.
GONE = (psutil.NoSuchProcess, psutil.AccessDenied)


def process(pid: Pid) -> psutil.Process | None:
    """``pid`` as a psutil.Process (a Process is returned as is); None when gone."""
    if isinstance(pid, psutil.Process):
        return pid
    try:
        return psutil.Process(pid)
    except GONE:
        return None


def tree(root: Pid, recursive: bool = True) -> list[psutil.Process]:
    """``root`` followed by its live children -- every descendant when
    ``recursive``, the direct children only otherwise.  Children that have
    exited but are not yet reaped (zombies) are included: their CPU time is
    still theirs.  [] when ``root`` is gone."""
    proc = process(root)
    if proc is None:
        return []
    try:
        return [proc, *proc.children(recursive=recursive)]
    except GONE:
        return []


def cpu_seconds(pid: Pid) -> float:
    """User + system CPU seconds ``pid`` has used (all its threads, not its
    children); 0.0 when gone."""
    proc = process(pid)
    if proc is None:
        return 0.0
    try:
        times = proc.cpu_times()
    except GONE:
        return 0.0
    return times.user + times.system


def tree_cpu_seconds(root: Pid, recursive: bool = True) -> float:
    """:func:`cpu_seconds` summed over :func:`tree` (``root`` and its live
    children, or all its live descendants)."""
    return sum(cpu_seconds(proc) for proc in tree(root, recursive))


def rss_kb(pid: Pid) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS); 0 when gone."""
    proc = process(pid)
    if proc is None:
        return 0
    try:
        return proc.memory_info().rss // 1024
    except GONE:
        return 0


def peak_rss_kb(pid: Pid) -> int:
    """Peak resident set size of ``pid`` in KiB (VmHWM); 0 when gone.

    psutil has no peak RSS on Linux (memory_info and memory_full_info give
    the current figures only; resource.getrusage's ru_maxrss covers only
    this process and the children it has waited for), so this is the one
    figure read from /proc, here and nowhere else."""
    number = pid.pid if isinstance(pid, psutil.Process) else pid
    try:
        with open(f"/proc/{number}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, or a zombie (its status has no memory lines)


def reset_peak_rss(pid: Pid) -> bool:
    """Start ``pid``'s peak RSS afresh from its current RSS (writing 5 to
    /proc/PID/clear_refs, Linux 4.0 and later, for a process we may write
    to); False when that could not be done (then VmHWM stays the peak since
    the process started)."""
    number = pid.pid if isinstance(pid, psutil.Process) else pid
    try:
        with open(f"/proc/{number}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def num_fds(pid: Pid) -> int:
    """Descriptors ``pid`` has open; 0 when gone."""
    proc = process(pid)
    if proc is None:
        return 0
    try:
        return proc.num_fds()
    except GONE:
        return 0


def alive(proc: psutil.Process) -> bool:
    """Whether ``proc`` -- the same process: PID and start time -- still runs
    (a zombie does not)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except GONE:
        return False


def kill(proc: psutil.Process) -> None:
    """SIGKILL ``proc`` if that PID is still the same process (psutil checks
    the start time, so a reused PID is left alone); nothing when gone."""
    try:
        if proc.is_running():
            proc.kill()
    except GONE:
        pass


def established(procs: Iterable[Pid], port: int) -> int:
    """TCP connections on local ``port`` in ESTABLISHED state that ``procs``
    hold: the connections a server has accepted on its listening port.
    Those still waiting in the listener's accept queue belong to no process
    yet and are not counted; a socket shared by several processes (a worker
    that inherited it) is counted once."""
    seen: set[tuple] = set()
    for pid in procs:
        proc = process(pid)
        if proc is None:
            continue
        try:
            conns = proc.net_connections(kind="tcp")
        except GONE:
            continue
        seen.update((c.laddr, c.raddr) for c in conns
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)
    return len(seen)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot, over all
    CPUs: every state but idle and iowait; guest time is left out, being
    counted in user and nice already."""
    times = psutil.cpu_times()
    not_busy = ("idle", "iowait", "guest", "guest_nice")
    return sum(times) - sum(getattr(times, name, 0.0) for name in not_busy)
