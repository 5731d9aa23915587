# loadtests/workload.py -- what every request of a sweep asks the servers to do.
#
# Strategy: a workload is a value parsed from ``static``, ``cpu:MS`` or
# ``wait:MS`` that names the path each row is sent (the backends' sample
# page, or their synthetic endpoints /work/cpu and /work/wait, whose bodies
# have a fixed size so the sweep's length check holds) and says in one
# sentence what the comparison shows, for the report's title and summary.
from __future__ import annotations

from dataclasses import dataclass

#: The bounds the backends accept for ``ms`` (a larger value is their 400).
MAX_MS = 10000


@dataclass(frozen=True)
class Workload:
    """The request every run sends, and what comparing the models on it shows."""

    kind: str      #: "static", "cpu" or "wait"
    ms: int = 0    #: CPU to burn or time to wait per request (cpu, wait)

    @property
    def name(self) -> str:
        return self.kind if self.kind == "static" else f"{self.kind}:{self.ms}"

    def path(self, static_path: str) -> str:
        """The path every request asks for (``static_path`` for static)."""
        if self.kind == "static":
            return static_path
        return f"/work/{self.kind}?ms={self.ms}"

    @property
    def shows(self) -> str:
        """What this workload shows, for the report."""
        if self.kind == "cpu":
            return (f"Each request burns about {self.ms} ms of CPU in the backend: one process "
                    "can use one core, so this shows whether spreading requests over four "
                    "backends (the balancers' rows) buys throughput that one backend cannot "
                    "reach, once the balancer's own cost is paid.")
        if self.kind == "wait":
            return (f"Each request waits {self.ms} ms without using CPU, as a database or "
                    "upstream call would: this shows how many waiting requests each model "
                    "holds at once (a greenlet each in the async model, an OS thread each in "
                    "the thread model) and what that costs in CPU and memory.")
        return ("A small static page: this shows the cost of each model's per-request "
                "overhead, where one async backend answers faster than anything put in "
                "front of it.")


def parse(text: str) -> Workload:
    """``static``, ``cpu:MS`` or ``wait:MS`` as a Workload; ValueError says what is wrong."""
    kind, sep, value = text.strip().partition(":")
    if kind == "static" and not sep:
        return Workload("static")
    if kind not in ("cpu", "wait") or not sep:
        raise ValueError(f"{text!r} is not static, cpu:MS or wait:MS")
    if not value.isdigit() or not 0 <= int(value) <= MAX_MS:
        raise ValueError(f"{text!r}: MS must be a whole number 0..{MAX_MS}")
    return Workload(kind, int(value))
