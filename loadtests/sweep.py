# loadtests/sweep.py -- a locustfile that reproduces ab's concurrency sweep.
#
# Strategy: `ab -n N -c C` for each level C, in Locust terms.  SweepUser is a
# closed-loop FastHttpUser (no wait time, keep-alive) that takes one unit of
# this process's request quota before each request and idles while there is
# none.  SweepShape spawns all users of a level at once, then hands out the
# level's N requests (to the workers in proportion to their users, by a
# "sweep_level" message); each process reports its share ("sweep_done"), and
# with every share in, the shape builds the level's Cell and moves on, or
# returns None after the last so Locust stops.  On test_stop the master (or
# the one process) writes the cells as JSON, prints the table, and sets exit
# code 1 if any cell is invalid or a level was cut short (SWEEP INCOMPLETE).
# geventhttpclient's re-sends are off, so a dropped request is one failure.
# Bytes, as ab counts them: status line + headers + body of every response;
# head_size() rebuilds the head's length, as the client keeps no raw head.
from __future__ import annotations

import logging
import os
import resource
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from geventhttpclient.url import URL
from locust import LoadTestShape, __version__, constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment
from locust.runners import STATE_MISSING, STATE_RUNNING, MasterRunner, Runner, WorkerRunner

from loadtests.cell import MODELS, Cell
from loadtests.report import table, write_json
from loadtests.sweep_parts import check_parser, head_size, percentile, split

logger = logging.getLogger("sweep")
LEVEL_MSG, DONE_MSG = "sweep_level", "sweep_done"
IDLE_S = 0.5                              #: longest idle wait of a user with no quota
HEADERS = {"Accept-Encoding": "identity"}  # like ab: no compression, so lengths compare
Report = dict[str, Any]
BYTES_COUNTED = "status line, headers and body (as ab)"


def _cpu() -> float:
    """CPU seconds (user + system) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("sweep", "ab-style concurrency sweep (loadtests/sweep.py)")
    group.add_argument("--sweep-path", default="/page.html", help="path every request fetches")
    group.add_argument("--sweep-levels", default="1,10,100,500,1000", help="users per level")
    group.add_argument("--sweep-requests", type=int, default=1000, help="requests per level")
    group.add_argument("--sweep-expect-bytes", type=int, default=None,
                       help="bytes of one full response, head + body (default: the first 2xx's)")
    group.add_argument("--sweep-model", default="lb",
                       help=f"row named in the cells: {', '.join(MODELS)}, or any name")
    group.add_argument("--sweep-out", default="results/latest/locust-cells.json",
                       help="JSON output (default: %(default)s)")


class Share:
    """This process's part of one level: requests still to start, and what they measured."""

    def __init__(self, job: Report, node: str, report: Callable[[Report], None]) -> None:
        self.run, self.level, self.count = job["run"], job["level"], job["count"]
        self.node, self.report, self.left = node, report, self.count
        self.done = self.errors = self.wrong_length = self.non_2xx = self.bytes = 0
        self.times: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.first_start: float | None = None
        self.last_end, self.cpu_start = 0.0, _cpu()

    def record(self, start: float, end: float, ms: float, status: int, nbytes: int,
               failure: str | None) -> None:
        """One finished request; the last one sends the report."""
        self.done += 1
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.last_end = max(self.last_end, end)
        self.times.append(ms)
        self.statuses[str(status)] += 1
        self.bytes += nbytes
        if failure:
            self.failures[failure[:160]] += 1
        if status == 0:
            self.errors += 1
        elif not 200 <= status < 300:
            self.non_2xx += 1
        elif failure:
            self.wrong_length += 1
        if self.done == self.count:
            self.report({
                "run": self.run, "level": self.level, "node": self.node, "count": self.count,
                "done": self.done, "errors": self.errors, "wrong_length": self.wrong_length,
                "non_2xx": self.non_2xx, "bytes": self.bytes, "times": self.times,
                "statuses": dict(self.statuses), "failures": dict(self.failures.most_common(10)),
                "first_start": self.first_start, "last_end": self.last_end,
                "cpu": _cpu() - self.cpu_start, "expected": NODE.expected})


class Node:
    """The request quota of this process (each worker, or the one local process)."""

    def __init__(self) -> None:
        self.share: Share | None = None
        self.expected: int | None = None  #: bytes of one full response, given or learned
        self.ready = Event()              #: set while there is quota to take

    def assign(self, job: Report, node: str, report: Callable[[Report], None]) -> None:
        """Start this process's share of a level."""
        self.expected = job.get("expected") or self.expected
        self.share = Share(job, node, report)
        self.ready.set()

    def take(self) -> Share | None:
        """One request's worth of quota, or None (then idle)."""
        share = self.share
        if share is None or share.left <= 0:
            self.ready.clear()
            return None
        share.left -= 1
        return share

    def reset(self) -> None:
        self.share, self.expected = None, None
        self.ready.clear()

    def verdict(self, status: int, head: int, body: int, length: Any, error: Any) -> str | None:
        """Why a response is a failure (None when it is a full 2xx of the expected size)."""
        if status == 0:
            return f"no response: {error!r}"
        if not 200 <= status < 300:
            return f"non-2xx status {status}"
        try:
            declared = int(length) if length is not None else None
        except (TypeError, ValueError):
            return f"bad Content-Length {length!r}"
        if self.expected is None:
            self.expected = head + (declared if declared is not None else body)
        if declared is not None and declared != body:
            return f"body {body} bytes != Content-Length {declared}"
        if head + body != self.expected:
            return f"response {head} + {body} bytes != expected {self.expected}"
        return None


NODE = Node()  # the only module-level state: this process's quota


class SweepUser(FastHttpUser):
    """A closed-loop client: one request at a time, no think time (ab's -c)."""

    wait_time = constant(0)
    concurrency = 1  # one request at a time, so one connection

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        # HTTPClient.request re-sends a GET whose connection closed unanswered, trying
        # pool size + 1 times (a dropping server saw up to 12 per request): -1 means once.
        # An idle connection the server closed is dropped before use (_is_socket_alive).
        http = self.client.client.clientpool.get_client(URL(self.host))
        if not hasattr(http._connection_pool, "size"):
            raise RuntimeError("geventhttpclient changed: cannot turn off its re-sends")
        http._connection_pool.size = -1
        check_parser()

    @task
    def fetch(self) -> None:
        share = NODE.take()
        if share is None:
            NODE.ready.wait(IDLE_S)
            return
        start, status, head, body, failure = time.time(), 0, 0, 0, None
        with self.client.get(self.environment.parsed_options.sweep_path, catch_response=True,
                             headers=HEADERS) as resp:
            try:
                status = resp.status_code or 0
                body = len(resp.content or b"") if status else 0
                head = head_size(resp) if status else 0
                length = resp.headers.get("content-length") if resp.headers else None
                failure = NODE.verdict(status, head, body, length, getattr(resp, "error", None))
            except Exception as exc:  # a broken body read is a failed request, not a lost one
                status, failure = 0, f"no response: {exc!r}"
            resp.failure(failure) if failure else resp.success()
        share.record(start, time.time(), resp.request_meta["response_time"], status,
                     head + body, failure)


class Sweep:
    """One pass over the levels, run by the master (or the single process)."""

    def __init__(self, environment: Environment) -> None:
        opts = environment.parsed_options
        self.env = environment
        self.levels = [int(x) for x in str(opts.sweep_levels).split(",") if x.strip()]
        self.requests = int(opts.sweep_requests)
        self.expected = int(opts.sweep_expect_bytes or 0) or None  # one full response, or learn
        self.model, self.path, self.out = opts.sweep_model, opts.sweep_path, opts.sweep_out
        if not self.levels or min(self.levels) < 1 or self.requests < 1:
            raise ValueError("--sweep-levels needs users >= 1 and --sweep-requests >= 1")
        self.run, self.index = uuid.uuid4().hex[:8], 0
        self.shares: dict[str, int] | None = None  # None while the level's users spawn
        self.reports: dict[str, Report] = {}
        self.cells: list[Cell] = []
        self.cpu_start, self.finished = 0.0, False

    def tick(self, runner: Runner) -> tuple[int, float] | None:
        """The shape's answer: (users, spawn rate) of the current level, or None when done."""
        while self.index < len(self.levels):
            users = self.levels[self.index]
            if self.shares is None:
                if runner.user_count == users and runner.state == STATE_RUNNING:
                    self.hand_out(runner, users)
                return users, float(users)
            if self.reports.keys() != self.shares.keys():
                lost = [n for n in self.shares if n not in self.reports and getattr(
                    runner.clients.get(n), "state", STATE_MISSING) == STATE_MISSING
                ] if isinstance(runner, MasterRunner) else []
                if lost:  # its share can never finish: end the sweep (finish() flags it)
                    logger.error("SWEEP ABORTED: worker(s) %s lost during level %d", lost,
                                 self.index + 1)
                    return None
                return users, float(users)
            self.cells.append(self.close_level(runner, users))
            self.index, self.shares, self.reports = self.index + 1, None, {}
        return None

    def hand_out(self, runner: Runner, users: int) -> None:
        """Give the level's N requests to the processes that run its users."""
        master = isinstance(runner, MasterRunner)
        weights = ({cid: n.user_count for cid, n in runner.clients.items() if n.user_count > 0}
                   if master else {"local": users})
        self.shares = {k: n for k, n in split(self.requests, weights).items() if n}
        logger.info("level %d: %d users, %d requests as %s", self.index + 1, users,
                    self.requests, self.shares)
        self.cpu_start = _cpu()
        for node, count in self.shares.items():
            job = {"run": self.run, "level": self.index, "count": count, "expected": self.expected}
            if master:
                runner.send_message(LEVEL_MSG, job, client_id=node)
            else:
                NODE.assign(job, node, lambda report: self.receive(report["node"], report))

    def receive(self, node: str, report: Report) -> None:
        """A process's share is done."""
        if (report["run"] != self.run or report["level"] != self.index or self.shares is None
                or node not in self.shares):
            logger.warning("ignoring a stale sweep report from %s", node)
            return
        self.reports[node] = report
        if self.expected is None and report["expected"] is not None:
            self.expected = report["expected"]  # later levels check against the same size

    def close_level(self, runner: Runner, users: int) -> Cell:
        """The Cell of the level whose shares are all in."""
        rs = list(self.reports.values())
        times = sorted(t for r in rs for t in r["times"])
        done = sum(r["done"] for r in rs)
        complete = done - sum(r["errors"] for r in rs)
        failed = sum(r["errors"] + r["wrong_length"] for r in rs)
        non_2xx = sum(r["non_2xx"] for r in rs)
        nbytes = sum(r["bytes"] for r in rs)
        starts = [r["first_start"] for r in rs if r["first_start"] is not None]
        taken = max(r["last_end"] for r in rs) - min(starts) if starts else 0.0
        cpu = sum(r["cpu"] for r in rs) + (
            _cpu() - self.cpu_start if isinstance(runner, MasterRunner) else 0.0)
        learned = {r["expected"] for r in rs if r["expected"] is not None}
        expected = self.expected or 0
        reasons = []
        if done != self.requests or complete != self.requests:
            reasons.append(f"complete {complete} of {done} done != {self.requests} requested")
        if failed:
            reasons.append(f"failed {failed} (no response {sum(r['errors'] for r in rs)}, "
                           f"wrong length {sum(r['wrong_length'] for r in rs)})")
        if non_2xx:
            reasons.append(f"non-2xx {non_2xx}")
        if not expected:
            reasons.append("no 2xx response to learn the expected size from")
        if len(learned | {expected}) > 1:
            reasons.append(f"processes disagree on the expected size: {sorted(learned)}")
        if nbytes != self.requests * expected:
            reasons.append(f"total transferred {nbytes} != {self.requests} x {expected}")
        statuses = sum((Counter(r["statuses"]) for r in rs), Counter[str]())
        failures = sum((Counter(r["failures"]) for r in rs), Counter[str]())
        detail = {"bytes_counted": BYTES_COUNTED, "processes": len(rs), "shares": self.shares,
                  "statuses": dict(statuses), "failure_reasons": dict(failures.most_common(5)),
                  "locust_failures": failed + non_2xx, "path": self.path,
                  "time_per_request_all": taken * 1000 / complete if complete else 0.0}
        return Cell("locust", self.model, users, self.requests, True, taken, complete, failed,
                    non_2xx, nbytes, complete / taken if taken else 0.0,
                    taken * 1000 * users / complete if complete else 0.0,
                    nbytes / 1024 / taken if taken else 0.0, percentile(times, 50),
                    percentile(times, 90), percentile(times, 99), expected, reasons,
                    client_cpu=cpu, detail=detail)

    def finish(self) -> None:
        """Write the cells, print the table, and fail the exit code loudly if any is bad."""
        self.finished = True
        opts = self.env.parsed_options
        mode = (f"--processes {opts.processes}" if getattr(opts, "processes", None)
                else "master/worker" if isinstance(self.env.runner, MasterRunner) else "local")
        info = {"tool": "locust", "locust_version": __version__, "mode": mode,
                "host": self.env.host, "path": self.path, "levels": self.levels,
                "requests_per_level": self.requests, "total_transferred": BYTES_COUNTED}
        os.makedirs(os.path.dirname(self.out) or ".", exist_ok=True)
        write_json(self.cells, info, self.out)
        print(table(self.cells), flush=True)
        bad = [c for c in self.cells if not c.valid]
        for c in bad:
            logger.error("INVALID CELL: %s c=%d: %s", c.model, c.concurrency, "; ".join(c.reasons))
        if self.index < len(self.levels):
            logger.error("SWEEP INCOMPLETE: stopped during level %d of %d (%s users)",
                         self.index + 1, len(self.levels), self.levels[self.index])
        bad_run = bool(bad) or self.index < len(self.levels)
        self.env.process_exit_code = 1 if bad_run else None
        logger.info("sweep %s: %d cells written to %s", "FAILED" if bad_run else "ok",
                    len(self.cells), self.out)


class SweepShape(LoadTestShape):
    """Steps through the levels: all users of a level at once, exactly N requests, next."""

    sweep: Sweep | None = None  #: this run's sweep, set by the first tick

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        if self.sweep is None or self.sweep.finished:
            self.sweep = Sweep(self.runner.environment)  # a new run (the web UI can rerun)
        return self.sweep.tick(self.runner)


def _on_sigterm(environment: Environment) -> None:
    """SIGTERM ends the sweep as a stop does (cells written, SWEEP INCOMPLETE if a level
    was cut, exit 1); headless Locust installs its own handler only once the shape ends."""
    logger.warning("SIGTERM: stopping the sweep")
    if environment.runner is not None:
        environment.runner.quit()


@events.init.add_listener
def _on_init(environment: Environment, runner: Runner, **_: Any) -> None:
    if not isinstance(runner, WorkerRunner):
        Sweep(environment)  # check the options now: a ValueError here stops Locust
        gevent.signal_handler(signal.SIGTERM, _on_sigterm, environment)
    if isinstance(runner, WorkerRunner):
        def on_level(environment: Environment, msg: Any) -> None:
            NODE.assign(msg.data, runner.client_id,
                        lambda report: runner.send_message(DONE_MSG, report))
        runner.register_message(LEVEL_MSG, on_level)
    elif isinstance(runner, MasterRunner):
        def on_done(environment: Environment, msg: Any) -> None:
            shape = environment.shape_class
            if isinstance(shape, SweepShape) and shape.sweep is not None:
                shape.sweep.receive(msg.node_id, msg.data)
        runner.register_message(DONE_MSG, on_done)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    NODE.reset()


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    NODE.reset()
    shape = environment.shape_class
    if (not isinstance(environment.runner, WorkerRunner) and isinstance(shape, SweepShape)
            and shape.sweep is not None and not shape.sweep.finished):
        shape.sweep.finish()
