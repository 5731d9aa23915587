# tests/integration/test_supervisor.py -- loadtests/supervisor.py on real processes.
#
# Strategy: small Python programs started through the supervisor stand in
# for servers: one that prints a listening line with its working directory
# and an environment variable, one that exits at once, and a parent that
# leaves a child behind when it is stopped.  A real backend gives the memory
# figures.  Every process is ended by PID.
from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
import pytest

from loadtests import procstats
from loadtests.supervisor import StartError, Supervisor, spawn

SAYS = ("import os, sys, time; print('listening on http://127.0.0.1:4321', os.getcwd(), "
        "os.environ['GS_TEST'], flush=True); time.sleep(60)")
#: A parent printing its child's PID; SIGTERM ends the parent only.
LEAVES_A_CHILD = ("import subprocess, sys, time; "
                  "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
                  " print(child.pid, flush=True); time.sleep(60)")


def test_start_reads_the_listening_line_and_passes_cwd_and_env(tmp_path: Path) -> None:
    with Supervisor() as sup:
        proc = sup.start("says", [sys.executable, "-c", SAYS], cwd=str(tmp_path),
                         env={"GS_TEST": "passed-on"})
        assert (proc.host, proc.port) == ("127.0.0.1", 4321)
        assert str(tmp_path) in proc.log and "passed-on" in proc.log
    assert not proc.alive()


def test_a_program_that_never_listens_is_a_start_error_with_its_output() -> None:
    with Supervisor() as sup, pytest.raises(RuntimeError) as caught:
        sup.start("quits", [sys.executable, "-c", "print('no listener here')"])
    assert isinstance(caught.value, StartError)
    assert "quits did not start" in str(caught.value) and "no listener here" in str(caught.value)


def test_stop_ends_a_child_its_parent_left_behind() -> None:
    parent = spawn("parent", [sys.executable, "-c", LEAVES_A_CHILD])
    try:
        deadline = time.monotonic() + 20
        while not parent.lines and time.monotonic() < deadline:
            time.sleep(0.05)
        child = psutil.Process(int(parent.lines[0]))
        assert [p.pid for p in parent.tree()] == [parent.pid, child.pid]
        parent.stop(timeout=10)
        psutil.wait_procs([child], timeout=10)
        assert not procstats.alive(child)
    finally:
        parent.stop(timeout=5)


def test_memory_figures_of_a_backend() -> None:
    with Supervisor() as sup:
        backend = sup.backend()
        rss, peak = backend.rss_kb(), backend.peak_rss_kb()
        assert rss > 0 and peak >= rss
        backend.stop()
        assert backend.rss_kb() == 0 and backend.tree() == []


def test_the_peak_rss_can_be_taken_afresh_over_one_run() -> None:
    """A process that held 200 MiB and let it go: its lifetime peak says so, and
    after reset_peak_rss the peak is its current size again (what a sweep's run
    reports is the peak during that run, not since the server started)."""
    code = ("import sys, time; a = bytearray(200 * 1024 * 1024); a[::4096] = b'x' * len(a[::4096]);"
            " del a; print('listening on http://127.0.0.1:1', flush=True); time.sleep(60)")
    with Supervisor() as sup:
        proc = sup.start("hog", [sys.executable, "-c", code])
        assert proc.peak_rss_kb() > 150 * 1024
        assert proc.reset_peak_rss()
        assert proc.peak_rss_kb() < 100 * 1024
        assert proc.peak_rss_kb() >= proc.rss_kb() * 0.9
