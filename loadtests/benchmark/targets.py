# loadtests/benchmark/targets.py -- the targets, checked against the medians.
#
# Strategy: pure functions over the summaries.  Each target is one function
# returning a Target with its goal, what was measured (as text a reader can
# check) and the verdict: True, False, or None when it could not be measured
# on this machine (haproxy or nginx missing, --only, no idle-connection run).
# A missing figure is never counted as met.
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loadtests.benchmark import workloads as wl
from loadtests.benchmark.idle import IdleResult
from loadtests.benchmark.stats import Summaries, figure, fmt, ratio
from loadtests.benchmark.workloads import Workload

TARGET_RPS_VS_HAPROXY = 0.85
TARGET_RPS_VS_HAPROXY_K = 0.70
TARGET_CPU_US = 60.0
TARGET_CPU_US_K = 30.0
TARGET_BACKEND_VS_NGINX = 0.70
TARGET_SEED_RPS = 6000.0
TARGET_THREAD_RPS = 3000.0
TARGET_IDLE_RSS_MB = 100.0


@dataclass
class Target:
    """One of the issue's targets, as measured."""

    name: str
    goal: str
    measured: str
    met: bool | None               #: None: could not be measured here


def vs_haproxy(summary: Summaries, workload: Workload, goal: float, label: str) -> Target:
    """The lb's req/s over haproxy's for ``workload``."""
    g = figure(summary, "gservers", workload, "rps")
    h = figure(summary, "haproxy", workload, "rps")
    r = ratio(g, h)
    measured = ("haproxy not run" if h is None and ("haproxy", workload) not in summary
                else f"{fmt(r, '.2f', 'x')} ({fmt(g)} vs {fmt(h)} req/s)")
    return Target(f"lb throughput vs haproxy, {label}", f">= {goal:.2f}x", measured,
                  None if r is None else r >= goal)


def lb_cpu(summary: Summaries, workload: Workload, goal: float) -> Target:
    """The lb's CPU per request for ``workload``."""
    value = figure(summary, "gservers", workload, "cpu_us")
    return Target(f"lb CPU per request, {workload}", f"<= {goal:.0f} µs",
                  fmt(value, ".1f", " µs"), None if value is None else value <= goal)


def backend_vs_nginx(summary: Summaries, direct: Workload | None) -> Target:
    """One async backend's req/s over nginx's return-200 under ``direct``."""
    b = figure(summary, "async backend", direct, "rps") if direct else None
    n = figure(summary, "nginx return-200", direct, "rps") if direct else None
    r = ratio(b, n)
    return Target(f"async backend vs nginx return-200, {direct or 'wrk -k'}",
                  f">= {TARGET_BACKEND_VS_NGINX:.2f}x",
                  "nginx not run" if n is None and b is not None else
                  f"{fmt(r, '.2f', 'x')} ({fmt(b)} vs {fmt(n)} req/s)",
                  None if r is None else r >= TARGET_BACKEND_VS_NGINX)


def sweep_floor(summary: Summaries, target: str, levels: Sequence[int], lowest: int,
                goal: float, name: str) -> Target:
    """The lowest seed-sweep req/s of ``target`` over the levels >= ``lowest``."""
    figures = [(c, figure(summary, target, wl.seed_level(c), "rps"))
               for c in levels if c >= lowest and (target, wl.seed_level(c)) in summary]
    if not figures:
        return Target(name, f">= {goal:.0f} req/s", "not run", None)
    missing = [c for c, v in figures if v is None]
    if missing:
        return Target(name, f">= {goal:.0f} req/s",
                      "no valid run at c=" + ",".join(map(str, missing)), False)
    c_min, v_min = min(figures, key=lambda cv: cv[1])
    return Target(name, f">= {goal:.0f} req/s", f"min {v_min:.0f} req/s (c={c_min})",
                  v_min >= goal)


def seed_p99(summary: Summaries, levels: Sequence[int]) -> Target:
    """The lb's p99 at the highest seed-sweep level against haproxy's."""
    top = max(levels) if levels else 1000
    g99 = figure(summary, "gservers", wl.seed_level(top), "p99")
    h99 = figure(summary, "haproxy", wl.seed_level(top), "p99")
    return Target(f"seed sweep p99 at c={top}, lb vs haproxy", "<= haproxy's",
                  f"{fmt(g99, '.1f', ' ms')} vs {fmt(h99, '.1f', ' ms')}",
                  None if g99 is None or h99 is None else g99 <= h99)


def idle_rss(idle: IdleResult | None) -> Target:
    """The lb's VmRSS while it holds every idle connection asked for."""
    goal = f"<= {TARGET_IDLE_RSS_MB:.0f} MB"
    if idle is None:
        return Target("lb RSS holding idle connections", goal, "not run", None)
    mb = idle.rss_kb / 1024
    held = idle.accepted >= idle.asked and idle.still_open >= idle.asked
    measured = (f"{mb:.1f} MB with {idle.accepted} accepted / {idle.still_open} open"
                + ("" if held else f" (asked {idle.asked}: NOT all held)"))
    return Target(f"lb RSS holding {idle.asked} idle connections", goal, measured,
                  mb <= TARGET_IDLE_RSS_MB and held)


def check_targets(summary: Summaries, levels: Sequence[int], direct: Workload | None,
                  idle: IdleResult | None, concurrency: int = wl.CONCURRENCY) -> list[Target]:
    """The issue's targets against the medians; ``direct`` is the
    backend-vs-nginx workload run (None when it was not)."""
    plain, keep = wl.ab_run(False, concurrency), wl.ab_run(True, concurrency)
    return [
        vs_haproxy(summary, plain, TARGET_RPS_VS_HAPROXY, f"{plain} (no keep-alive)"),
        vs_haproxy(summary, keep, TARGET_RPS_VS_HAPROXY_K, keep.name),
        lb_cpu(summary, plain, TARGET_CPU_US),
        lb_cpu(summary, keep, TARGET_CPU_US_K),
        backend_vs_nginx(summary, direct),
        sweep_floor(summary, "gservers", levels, 10, TARGET_SEED_RPS,
                    "seed sweep through lb, every c >= 10"),
        seed_p99(summary, levels),
        sweep_floor(summary, "thread backend", levels, 1, TARGET_THREAD_RPS,
                    "thread model seed sweep, every level"),
        idle_rss(idle),
    ]
