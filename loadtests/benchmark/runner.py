# loadtests/benchmark/runner.py -- one planned run at a time: load, measure, judge, say.
#
# Strategy: each Step of the plan runs its workload's tool against its
# target; around it, the CPU seconds of the target's process tree and,
# behind a balancer, of the four backends are read (psutil, before and
# after), and the tree's VmHWM after.  The run is judged by its tool's own
# judge against the size of one full response to the exact request the tool
# sends (measured once per port and request), then recorded and reported on
# one line of stderr -- loudly when invalid.
from __future__ import annotations

import sys
import time

from loadtests.benchmark.fleet import PATH, Endpoint
from loadtests.benchmark.stats import Run
from loadtests.benchmark.workloads import LARGE_PATH, Step, Workload
from loadtests.supervisor import HOST
from loadtests.tools import ab, probe, wrk


class Runner:
    """Runs the planned steps and collects the runs."""

    def __init__(self, targets: dict[str, Endpoint], wrk_path: str | None,
                 wrk_duration: float, pause: float) -> None:
        self.targets = targets
        self.wrk_path = wrk_path
        self.wrk_duration = wrk_duration
        self.pause = pause
        self.runs: list[Run] = []
        self.sizes: dict[tuple[int, bytes], int] = {}
        self.steps_done = 0
        self.steps_total = 0

    def size(self, port: int, workload: Workload) -> int:
        """Bytes of one full response to the request ``workload``'s tool sends."""
        request = workload.request(HOST, port, _path(workload))
        if (port, request) not in self.sizes:
            self.sizes[port, request] = probe.response_size(HOST, port, request,
                                                            tls=workload.phase == "https")
        return self.sizes[port, request]

    def run(self, step: Step) -> Run:
        """Run one step, measured and judged; recorded and reported."""
        target = self.targets[step.target]
        size = self.size(target.port, step.workload)
        load = self._ab if step.workload.tool == "ab" else self._wrk
        cpu0 = target.server.cpu_seconds(recursive=True)
        backend0 = sum(b.cpu_seconds(recursive=True) for b in target.backends)
        start = time.monotonic()
        run = load(step, target, size)
        run.elapsed = time.monotonic() - start
        run.server_cpu = target.server.cpu_seconds(recursive=True) - cpu0
        if target.backends:
            run.backend_cpu = sum(b.cpu_seconds(recursive=True) for b in target.backends) \
                - backend0
        run.peak_rss_kb = target.server.peak_rss_kb()
        return self._record(run)

    def _ab(self, step: Step, target: Endpoint, size: int) -> Run:
        w = step.workload
        scheme = "https" if w.phase == "https" else "http"
        result, _ = ab.run(f"{scheme}://{HOST}:{target.port}{_path(w)}", step.requests,
                           w.concurrency, w.keepalive)
        pct = result.percentiles
        return Run(target.name, w, step.round, step.requests, result.complete, result.rps,
                   pct.get(50), pct.get(99), size, ab.judge(result, step.requests, size),
                   detail={"failed": result.failed, "non_2xx": result.non_2xx,
                           "total_transferred": result.total_transferred,
                           "keepalive_requests": result.keepalive_requests,
                           "time_taken": result.time_taken, "aborted": result.aborted})

    def _wrk(self, step: Step, target: Endpoint, size: int) -> Run:
        assert self.wrk_path, "a wrk step is planned only when wrk is there"
        w = step.workload
        result, output = wrk.run(self.wrk_path, f"http://{HOST}:{target.port}{PATH}",
                                 w.concurrency, self.wrk_duration)
        return Run(target.name, w, step.round, result.requests, result.requests, result.rps,
                   result.latency.get(50), result.latency.get(99), size,
                   wrk.judge(result, size),
                   detail={"bytes_read": result.bytes_read, "duration": result.duration,
                           "socket_errors": result.socket_errors, "non_2xx": result.non_2xx,
                           "output_tail": output.strip().splitlines()[-3:]})

    def _record(self, run: Run) -> Run:
        self.runs.append(run)
        self.steps_done += 1
        say(f"[{self.steps_done}/{self.steps_total}] round {run.round} "
            f"{run.target:<16} {run.workload.name:<14} " + _verdict(run))
        time.sleep(self.pause)
        return run

    def run_all(self, steps: list[Step]) -> None:
        """Run every step in order."""
        self.steps_total = len(steps)
        for step in steps:
            self.run(step)


def _path(workload: Workload) -> str:
    """What ``workload`` asks for: the large file for its row, else /page.html."""
    return LARGE_PATH if workload.phase == "large" else PATH


def _verdict(run: Run) -> str:
    if not run.valid:
        return f"*** INVALID ***: {'; '.join(run.reasons)}"
    p99 = "-" if run.p99 is None else f"{run.p99:.1f}"
    cpu = "-" if run.cpu_us is None else f"{run.cpu_us:.0f}"
    return f"{run.rps:9.0f} req/s  p99 {p99:>7} ms  cpu {cpu:>5} µs/req"


def say(line: str) -> None:
    """One progress line on stderr, at once."""
    print(line, file=sys.stderr, flush=True)
