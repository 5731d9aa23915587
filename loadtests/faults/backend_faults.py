# loadtests/faults/backend_faults.py -- the checks of the scenarios where backends fail.
#
# Strategy: one timeline serves every misbehaving-backend scenario: a paced
# load through the balancer, the fault injected into one backend (a signal
# to its PID, or a FaultProxy in front of it switched into a mode), the
# balancer must take it out of rotation (down by its health checks, or
# ejected where the checks cannot see the fault), a second of load without
# it (no request may reach it while down, the others take the load), the
# fault ends, the balancer must bring it back by itself (the recovery time),
# and a tail of load.  Each check function drives its scenario on a ScenarioSetup,
# fills the Row with the load's figures and returns the problems found: the
# timeline's own, and those of the scenario's stated expectation (in
# scenarios.py), e.g. exactly the garbled requests answered 502.
from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadtests.faults import load as loadmod
from loadtests.faults.load import LoadClient, Outcome
from loadtests.faults.proxy import FaultProxy
from loadtests.faults.stack import (
    LB_BASE,
    PAGE,
    WAIT,
    Row,
    ScenarioSetup,
    allowed,
    backends,
    finish,
    head_length,
    name_of,
    need,
    page_targets,
    short_bodies,
    tally,
    wait_until,
)
from loadtests.supervisor import Balancer, Process

BLACKHOLE_TIMEOUT = 0.5  #: --response-timeout of the blackhole scenario
LATENCY_MS = 300         #: what the latency proxy adds per chunk, each way
LATENCY_TIMEOUT = 0.1    #: --response-timeout of the latency scenario


@dataclass
class Fault:
    """One backend misbehaving, as the timeline drives it."""

    victim: str                      #: the balancer's name for the backend
    inject: Callable[[], Any]
    end: Callable[[], Any]
    out_by: str = "down"             #: "down" (its health checks fail) or "any" (ejected)
    ended: float = 0.0               #: monotonic time the fault ended


def timeline(lb: Balancer, load: LoadClient, fault: Fault,
             row: Row) -> tuple[list[Outcome], list[str]]:
    """Load, fault, out of rotation (+1 s of load without it), fault ends,
    back in rotation (the recovery time), a tail of load; the figures go to
    ``row``.  Returns the load's outcomes and the problems seen."""
    problems: list[str] = []
    need(load.wait_for(300, timeout=WAIT), "load did not start")
    fault.inject()
    since = out_of_rotation(lb, fault, problems)
    fault.end()
    fault.ended = time.monotonic()
    back = back_in_rotation(lb, fault.victim, since)
    if back is None:
        problems.append(f"not back in rotation within {WAIT:.0f}s")
    else:
        row.recovery_s = round(back - fault.ended, 2)
    load.wait_for(load.count() + 300, timeout=WAIT)
    outcomes = finish(load)
    tally(row, outcomes)
    problems += served(lb, fault.victim, outcomes)
    return outcomes, problems


def out_of_rotation(lb: Balancer, fault: Fault, problems: list[str]) -> int:
    """Wait until the victim is out of rotation, then watch a second of load
    without it; returns its request count after that second."""
    victim = fault.victim
    out = wait_until(lambda: backends(lb)[victim]["state"] != "up")
    if out and fault.out_by == "down":
        out = wait_until(lambda: backends(lb)[victim]["state"] == "down")
    if not out:
        problems.append(f"never taken out of rotation ({backends(lb)[victim]['state']})")
    before = backends(lb)
    time.sleep(1.0)
    after = backends(lb)
    if out and fault.out_by == "down":
        reached = after[victim]["requests"] - before[victim]["requests"]
        if reached:
            problems.append(f"{reached} requests sent to it while it was down")
        idle = sorted(n for n in after if n != victim
                      and after[n]["requests"] <= before[n]["requests"])
        if idle:
            problems.append(f"{', '.join(idle)} took no load while it was down")
    return after[victim]["requests"]


def back_in_rotation(lb: Balancer, name: str, since: int, timeout: float = WAIT) -> float | None:
    """Monotonic time when ``name`` is up and taking requests again (its
    request count past ``since``), or None."""
    found: list[float] = []

    def back() -> bool:
        state = backends(lb)[name]
        if state["state"] == "up" and state["requests"] > since:
            found.append(time.monotonic())
            return True
        return False

    wait_until(back, timeout)
    return found[0] if found else None


def served(lb: Balancer, victim: str, outcomes: list[Outcome]) -> list[str]:
    """What every backend scenario demands at its end: the balancer still
    runs (the same process: no restart), the other backends stayed up, and
    no 200 had a short body."""
    problems: list[str] = []
    if not lb.server.alive():
        return [f"the balancer exited ({lb.server.popen.returncode})"]
    if lb.stats()["pid"] != lb.server.pid:
        problems.append("the balancer was restarted")
    down = sorted(n for n, s in backends(lb).items() if n != victim and s["state"] != "up")
    if down:
        problems.append(f"{', '.join(down)} not up")
    if short_bodies(outcomes):
        problems.append(f"{short_bodies(outcomes)} 200s with a short body")
    return problems


def counted(state: dict[str, Any], failures: int = 1, ejections: int = 0) -> list[str]:
    """A problem unless /stats counted at least these failures and ejections."""
    if state["failures"] >= failures and state["ejections"] >= ejections:
        return []
    return [f"/stats counted failures {state['failures']}, ejections {state['ejections']} "
            f"(want >= {failures}, >= {ejections})"]


# -- signals to a backend's PID -------------------------------------------------------

def three(stack: ScenarioSetup, *lb_args: str) -> tuple[list[Process], Balancer]:
    """Three backends and a balancer over them."""
    procs = [stack.backend() for _ in range(3)]
    return procs, stack.balancer(*LB_BASE, *lb_args, backends=[p.port for p in procs])


def sigkill(stack: ScenarioSetup, row: Row) -> list[str]:
    """SIGKILL one of three backends under load, restart it on its port."""
    procs, lb = three(stack)
    victim = procs[1]

    def kill() -> None:
        victim.signal(signal.SIGKILL)
        victim.popen.wait(10)

    fault = Fault(name_of(victim.port), kill, lambda: stack.backend(victim.port))
    _, problems = timeline(lb, stack.load(lb.port), fault, row)
    state = backends(lb)[fault.victim]
    if not (state["retries"] or state["failures"]):
        problems.append(f"no retry or failure counted for it: {state}")
    responses = lb.stats()["totals"]["responses"]
    if responses != {"200": row.sent}:
        problems.append(f"the balancer counted responses {responses}, not 200×{row.sent}")
    if row.failed:
        problems.append(f"{row.failed} failed")
    return problems


def sigstop(stack: ScenarioSetup, row: Row) -> list[str]:
    """SIGSTOP one of three backends under load, SIGCONT it later."""
    procs, lb = three(stack, "--response-timeout", "1", "--eject-failures", "1")
    victim = procs[1]
    fault = Fault(name_of(victim.port), lambda: victim.signal(signal.SIGSTOP),
                  lambda: victim.signal(signal.SIGCONT))
    outcomes, problems = timeline(lb, stack.load(lb.port), fault, row)
    allowed(row, {"200", "504"}, problems)
    if not row.statuses.get("504"):
        problems.append("no 504 seen")
    problems += counted(backends(lb)[fault.victim], ejections=1)
    late = Counter(o.status or o.kind for o in outcomes if o.began > fault.ended and not o.ok)
    if late:
        problems.append(f"requests sent after SIGCONT failed: {dict(late)}")
    return problems


# -- a fault proxy in front of each backend ---------------------------------------------

def proxied(stack: ScenarioSetup, *lb_args: str,
            **proxy_options: Any) -> tuple[list[Process], list[FaultProxy], Balancer]:
    """Three backends, a FaultProxy in front of each, a balancer over the proxies."""
    procs = [stack.backend() for _ in range(3)]
    proxies = [stack.proxy(p.port, **proxy_options) for p in procs]
    lb = stack.balancer(*LB_BASE, *lb_args, backends=[p.port for p in proxies])
    need(wait_until(lambda: all(b["state"] == "up" for b in lb.stats()["backends"])),
         "backends not up at start")
    return procs, proxies, lb


def through_proxy(stack: ScenarioSetup, row: Row, mode: str, lb_args: tuple[str, ...] = (),
                  codes: frozenset[str] = frozenset({"200"}), out_by: str = "down",
                  **proxy_options: Any
                  ) -> tuple[list[Outcome], FaultProxy, Balancer, list[str]]:
    """The timeline with the middle proxy in ``mode`` as the fault; only
    ``codes`` may be seen.  Returns the outcomes, that proxy, the balancer
    and the problems."""
    procs, proxies, lb = proxied(stack, *lb_args, **proxy_options)
    bad = proxies[1]
    if mode == "truncate":
        bad.truncate_bytes = head_length(procs[1].port) + len(PAGE) // 2  # mid-body
    fault = Fault(name_of(bad.port), lambda: setattr(bad, "mode", mode),
                  lambda: setattr(bad, "mode", "pass"), out_by)
    outcomes, problems = timeline(lb, stack.load(lb.port), fault, row)
    allowed(row, set(codes), problems)
    return outcomes, bad, lb, problems


def victim_state(lb: Balancer, proxy: FaultProxy) -> dict[str, Any]:
    """/stats of the backend behind ``proxy``."""
    return backends(lb)[name_of(proxy.port)]


def garbage(stack: ScenarioSetup, row: Row) -> list[str]:
    """One backend answers non-HTTP bytes to every request."""
    outcomes, bad, lb, problems = through_proxy(
        stack, row, "garbage", ("--pool-idle-timeout", "60"), frozenset({"200", "502"}))
    got = Counter(o.target for o in outcomes if o.status == 502)
    garbled = page_targets(bad.targets("garbage"))
    if not garbled:
        problems.append("no request reached the garbage-answering backend")
    if got != garbled:
        problems.append(f"502s {sum(got.values())} != garbled requests {sum(garbled.values())}")
    if bad.stats().get("garbage_reused", 0):
        problems.append("a connection that answered garbage was used again")
    if not wait_until(lambda: (s := bad.stats()).get("garbage_closed", 0) == s["garbage"], 5):
        problems.append(f"connections that answered garbage left open: {bad.stats()}")
    return problems + counted(victim_state(lb, bad))


def truncate(stack: ScenarioSetup, row: Row) -> list[str]:
    """One backend's responses cut mid-body (after the head went out)."""
    outcomes, bad, lb, problems = through_proxy(
        stack, row, "truncate", ("--pool-idle-timeout", "60"), frozenset({"200", "cut"}),
        out_by="any")
    seen = Counter(o.target for o in outcomes if o.kind == loadmod.TRUNCATED)
    cut = page_targets(bad.targets("truncate"))
    if not cut:
        problems.append("no request reached the truncating backend")
    if seen != cut:
        problems.append(f"cut at clients {sum(seen.values())} != truncated {sum(cut.values())}")
    if not wait_until(lambda: (s := bad.stats()).get("truncate_closed", 0) == s["truncate"], 5) \
            or bad.stats().get("request_after_truncate", 0):
        problems.append(f"truncated connections not discarded: {bad.stats()}")
    row.note = f"{sum(cut.values())} responses truncated mid-body by the proxy"
    return problems + counted(victim_state(lb, bad), sum(cut.values()), 1)


def reset(stack: ScenarioSetup, row: Row) -> list[str]:
    """One backend's connections reset (RST) when a request arrives."""
    _, bad, lb, problems = through_proxy(stack, row, "reset")
    resets = bad.stats().get("reset", 0)
    retries = lb.stats()["totals"]["retries"]
    reset_gets = sum(page_targets(bad.targets("reset")).values())
    if not resets:
        problems.append("no connection was reset")
    if retries < max(1, reset_gets):
        problems.append(f"{retries} retries for {reset_gets} reset requests")
    if row.failed:
        problems.append(f"{row.failed} failed")
    row.note = f"{resets} connections reset by the proxy"
    return problems


def latency(stack: ScenarioSetup, row: Row) -> list[str]:
    """One backend answers LATENCY_MS late per chunk, past the response timeout."""
    _, bad, lb, problems = through_proxy(
        stack, row, "latency", ("--response-timeout", f"{LATENCY_TIMEOUT:g}"),
        frozenset({"200", "504"}), latency_ms=LATENCY_MS)
    if not row.statuses.get("504"):
        problems.append("no 504 seen")
    return problems + counted(victim_state(lb, bad), 1, 1)


def blackhole(stack: ScenarioSetup, row: Row) -> list[str]:
    """One backend reads requests and never answers."""
    outcomes, bad, lb, problems = through_proxy(
        stack, row, "blackhole", ("--response-timeout", f"{BLACKHOLE_TIMEOUT:g}"),
        frozenset({"200", "504"}))
    waited = [o.seconds for o in outcomes if o.status == 504]
    if not waited:
        problems.append("no 504 seen")
    elif not BLACKHOLE_TIMEOUT * 0.9 <= min(waited) <= max(waited) < BLACKHOLE_TIMEOUT + 10:
        problems.append(f"504s came {min(waited):.2f}-{max(waited):.2f}s after their requests, "
                        f"not at the response timeout")
    got = Counter(o.target for o in outcomes if o.status == 504)
    swallowed = page_targets(bad.targets("blackhole"))
    if got != swallowed:
        problems.append(f"504s {sum(got.values())} != blackholed requests "
                        f"{sum(swallowed.values())}")
    return problems + counted(victim_state(lb, bad), 1, 1)


# -- every backend at once -------------------------------------------------------------

def all_down(stack: ScenarioSetup, row: Row) -> list[str]:
    """SIGKILL both backends under load, restart them on their ports."""
    procs = [stack.backend() for _ in range(2)]
    lb = stack.balancer(*LB_BASE, backends=[p.port for p in procs])
    load = stack.load(lb.port, threads=4, cap=750)
    problems: list[str] = []
    need(load.wait_for(300, timeout=WAIT), "load did not start")
    for proc in procs:
        proc.signal(signal.SIGKILL)
        proc.popen.wait(10)
    if not wait_until(lambda: all(b["state"] == "down" for b in lb.stats()["backends"])):
        problems.append("backends not taken down")
    time.sleep(1.0)
    probe = loadmod.fetch(lb.port)
    if probe is None or probe.status != 503 or "retry-after" not in probe.headers:
        problems.append(f"no 503 with Retry-After while down ({probe and probe.status})")
    restarted = time.monotonic()
    for proc in procs:
        stack.backend(proc.port)
    if not wait_until(lambda: any(o.ok and o.at > restarted for o in list(load.outcomes))):
        problems.append("no 200 after the restart")
    load.wait_for(load.count() + 300, timeout=WAIT)
    outcomes = finish(load)
    tally(row, outcomes)
    after = [o.at for o in outcomes if o.ok and o.at > restarted]
    if after:
        row.recovery_s = round(min(after) - restarted, 2)
    allowed(row, {"200", "502", "503"}, problems)
    if not row.statuses.get("503"):
        problems.append("no 503 seen")
    late = Counter(o.status or o.kind for o in outcomes
                   if o.began > restarted and o.status not in (200, 503))
    if late:
        problems.append(f"requests sent after the restart answered {dict(late)}")
    if not wait_until(lambda: all(b["state"] == "up" for b in lb.stats()["backends"])):
        problems.append(f"not all up again: {backends(lb)}")
    return problems + served(lb, "", outcomes)
