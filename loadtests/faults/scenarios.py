# loadtests/faults/scenarios.py -- the catalogue of fault scenarios.
#
# Strategy: each scenario is a small frozen object -- its --only name, the
# table's title, what is injected, the stated expectation, and the check
# function (backend_faults.py, balancer_faults.py) that drives it on a
# fresh ScenarioSetup and returns the problems found -- and all of them sit in one
# dict, SCENARIOS, in the order of the table.  ``Scenario.run`` gives a Row
# whose verdict is "ok" exactly when every check of the expectation held; a
# phase that hangs, a process that will not start or a balancer that stops
# answering makes it "not ok" with the reason, never an exception.  The
# program (python -m loadtests.faults, behind scripts/reliability) and the
# tests (tests/test_fault_scenarios.py) both run this one catalogue.
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from loadtests.faults import backend_faults as bf
from loadtests.faults import balancer_faults as lbf
from loadtests.faults.stack import Hang, Row, ScenarioSetup, verdict
from loadtests.supervisor import StartError

#: A check: drives the scenario on a ScenarioSetup, fills the Row, returns the problems.
Check = Callable[[ScenarioSetup, Row], list[str]]


@dataclass(frozen=True)
class Scenario:
    """One fault, what it is done to, and how the system must behave."""

    name: str          #: the --only name
    title: str         #: the table's row title
    injected: str      #: what is done, to what, under which load
    expectation: str   #: the behaviour the verdict is judged against
    check: Check

    def run(self, stack: ScenarioSetup) -> Row:
        """Run on ``stack``; the Row's verdict says whether it behaved as specified."""
        row = Row(self.title, name=self.name, injected=self.injected,
                  expectation=self.expectation)
        try:
            problems = self.check(stack, row)
        except (Hang, StartError) as exc:
            problems = [str(exc).strip().splitlines()[0]]
        except OSError as exc:  # e.g. the admin listener of a balancer that died
            problems = [f"{type(exc).__name__}: {exc}"]
        row.verdict = verdict(problems)
        return row


def run(scenario: Scenario) -> Row:
    """Run ``scenario`` on a ScenarioSetup of its own, everything stopped afterwards."""
    with ScenarioSetup() as stack:
        return scenario.run(stack)


LOAD = "under a paced keep-alive load of 8 threads"
THROUGH = "(a fault proxy in front of each of three backends; the middle one misbehaves)"
BACK = "taken out of rotation, back by itself once the fault ends (recovery: fault end " \
       "to back in rotation)"
CATALOGUE = (
    Scenario("sigkill", "backend SIGKILL mid-load",
             f"SIGKILL to one of three backends {LOAD}; restarted on its port later",
             "0 failed (in-flight GETs retried; the balancer counts only 200s) and its "
             f"failures counted; down by health checks, no request to it while down; {BACK}",
             bf.sigkill),
    Scenario("sigstop", "SIGSTOP hung backend",
             f"SIGSTOP to one of three backends {LOAD}, --response-timeout 1, "
             "--eject-failures 1; SIGCONT later",
             "only 200 and 504 (requests stuck at the hung backend), nothing lost; ejected "
             f"(counted in /stats) and down; {BACK}; every request sent after SIGCONT 200",
             bf.sigstop),
    Scenario("garbage", "garbage response",
             f"non-HTTP bytes answered to every request {THROUGH} {LOAD}",
             "exactly the garbled requests answered 502 (never the garbage), nothing lost, "
             "each garbage-answering connection closed by the balancer and never reused; "
             f"down by health checks; {BACK}", bf.garbage),
    Scenario("truncate", "truncated response",
             f"responses cut mid-body, after the head went out {THROUGH} {LOAD}",
             "only 200 and cut (a response cut after its head went out can only be cut at "
             "the client): each cut one a request the proxy truncated, never a short body "
             "presented as complete; each cut connection closed by the balancer; every cut "
             f"counted as a failure, ejected; {BACK}", bf.truncate),
    Scenario("reset", "connection reset",
             f"RST on every request {THROUGH} {LOAD}",
             "0 failed (a GET reset before its response is retried on another backend: at "
             f"least one retry per reset GET); down by health checks; {BACK}", bf.reset),
    Scenario("latency", "latency beyond timeout",
             f"{bf.LATENCY_MS} ms added to every chunk {THROUGH} {LOAD}, "
             f"--response-timeout {bf.LATENCY_TIMEOUT:g}",
             f"only 200 and 504, nothing lost; ejected and down; {BACK}", bf.latency),
    Scenario("blackhole", "blackhole",
             f"requests read and never answered {THROUGH} {LOAD}, "
             f"--response-timeout {bf.BLACKHOLE_TIMEOUT:g}",
             "only 200 and 504, exactly the blackholed requests answered 504, each at the "
             f"response timeout (not sooner, nor 10 s later), nothing lost; ejected and down; "
             f"{BACK}", bf.blackhole),
    Scenario("all_down", "all backends down, then up",
             "SIGKILL to both backends under a paced load of 4 threads; restarted on their "
             "ports after a second",
             "503 with Retry-After while none is up (502 while the last ones fail), nothing "
             "lost; only 503 and 200 once restarted, whole bodies, every backend up again, the "
             "same balancer process (recovery: restart to first 200)", bf.all_down),
    Scenario("lb_sigterm", "lb SIGTERM under load",
             f"SIGTERM to the balancer (--grace 10) {LOAD} that stops at a refused connect",
             "exit 0 and 'stopped' logged; only 200 (at least 1000, whole bodies), "
             "unanswered-and-unprocessed (closed, safe to resend) and refused connects after "
             "the listener closed, every load thread ending on one; every processed request "
             "answered: the access log (all 200) and the clients agree", lbf.lb_sigterm),
    Scenario("lb_sighup", "lb SIGHUP reload under load",
             f"the config's two backends replaced by two others, then SIGHUP {LOAD}",
             "only 200, whole bodies, across a swap of the whole backend set; the new "
             "backends (up) take every request after it", lbf.lb_sighup),
    Scenario("slowloris", f"slowloris ({lbf.SLOW_CONNECTIONS} slow connections)",
             f"{lbf.SLOW_CONNECTIONS} connections each sending a request head one byte per "
             f"0.5 s, never finishing it, {LOAD}, --header-timeout {lbf.HEADER_TIMEOUT:g}",
             "the load 0 failed; every slow connection answered 408 after the header "
             "timeout and closed", lbf.slowloris),
    Scenario("flood", f"connection flood ({lbf.FLOOD} > --max-connections "
             f"{lbf.MAX_CONNECTIONS})",
             f"{lbf.FLOOD} connections each sending one keep-alive GET and staying open, "
             "under a paced load of 4 threads, --keepalive-timeout 0.5",
             "the established load 0 failed; the flood waits in the backlog and every flood "
             "request is answered 200 as slots free (recovery: flood start to the last "
             "answer)", lbf.flood),
)
#: Every scenario by its --only name, in the order of the table.
SCENARIOS: dict[str, Scenario] = {s.name: s for s in CATALOGUE}


def select(names: Iterable[str] | None = None) -> list[Scenario]:
    """The scenarios called ``names`` (all when None), in the order given;
    ValueError naming the unknown ones (one line)."""
    if names is None:
        return list(CATALOGUE)
    wanted = [n.strip() for n in names if n.strip()]
    unknown = [n for n in wanted if n not in SCENARIOS]
    if unknown or not wanted:
        raise ValueError(f"unknown scenario {', '.join(unknown) or '(none given)'}; choose "
                         f"from {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in dict.fromkeys(wanted)]
