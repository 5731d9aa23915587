# loadtests/rows.py -- the rows of the sweep: what each one measures, and starting them.
#
# Strategy: a row is one server that load is sent to, under a key: the seed's
# models (one async backend, the thread backend, the lb over four async
# backends), the reference balancers (haproxy and nginx over the same four
# backends, configured as scripts/benchmark configures them, see
# loadtests.benchmark.configs), and targets the user runs themselves
# (``NAME=URL``).  The servers we start come from loadtests.supervisor, so
# they are stopped by PID on the way out; a target is only probed.  Each row
# knows the processes whose CPU it is charged with (none for a target) and,
# once ``size_rows`` has sent it one request, the bytes of one full response.
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from loadtests.benchmark.fleet import find_tool, start_haproxy, start_nginx
from loadtests.cell import MODELS, REFERENCES
from loadtests.supervisor import HOST, Process, Supervisor
from loadtests.tools import ab

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")
#: The program each reference row runs.
PROGRAMS = {"haproxy": "haproxy", "nginx": "nginx"}


@dataclass(frozen=True)
class Target:
    """A server the user runs, named on the command line as NAME=URL."""

    name: str
    host: str
    port: int
    path: str | None  #: None: the sweep's --path


def parse_target(text: str, taken: Sequence[str] = ()) -> Target:
    """``NAME=http://host[:port][/path]`` as a Target; ValueError says what is wrong."""
    name, sep, url = text.partition("=")
    name = name.strip()
    if not sep or not name or not url:
        raise ValueError(f"{text!r} is not NAME=URL (e.g. mine=http://127.0.0.1:8080/)")
    if not _NAME_RE.match(name):
        raise ValueError(f"target name {name!r}: use letters, digits and _ . + - "
                         "(at most 40, starting with a letter or digit)")
    reserved = {*MODELS, *REFERENCES, *MODELS.values(), *REFERENCES.values(), *taken}
    if name in reserved or name.lower() == "none":
        raise ValueError(f"target name {name!r} is taken by a model, a reference or "
                         "another target")
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"target {name}: {url!r} is not an http:// URL "
                         "(the sweep's probes speak plain HTTP/1.x)")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"target {name}: bad port in {url!r}") from None
    if not parts.hostname:
        raise ValueError(f"target {name}: no host in {url!r}")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return Target(name, parts.hostname, port, path or None)


@dataclass
class Row:
    """One row of the table: where load goes and whose CPU it costs."""

    key: str
    host: str
    port: int
    path: str
    procs: list[Process] = field(default_factory=list)  #: empty for a target
    size: int = 0  #: bytes of one full response to ab's request (see size_rows)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def ours(self) -> bool:
        """Whether the sweep started it (and so can count its CPU)."""
        return bool(self.procs)

    def cpu_seconds(self) -> float | None:
        return sum(p.cpu_seconds() for p in self.procs) if self.procs else None

    def reset_peak_rss(self) -> bool:
        """Start the peak RSS of the row's processes afresh (False: not possible)."""
        return bool(self.procs) and all([p.reset_peak_rss() for p in self.procs])

    def peak_rss_kb(self) -> int | None:
        """Peak RSS summed over the row's processes since the last reset, in KiB."""
        return sum(p.peak_rss_kb() for p in self.procs) if self.procs else None


def references(asked: Sequence[str] | None, models: Sequence[str]) -> tuple[list[str], list[str]]:
    """The reference rows to run and notes on those skipped.  ``asked`` None
    means the default: those installed, when the lb model is measured; a
    reference asked for by name must be installed (ValueError otherwise)."""
    if asked is not None:
        missing = [name for name in asked if not find_tool(PROGRAMS[name])]
        if missing:
            raise ValueError(", ".join(missing) + " not installed (apt-get install "
                             + " ".join("nginx-light" if m == "nginx" else m for m in missing)
                             + ", or --references none)")
        return list(asked), []
    if "lb" not in models:
        return [], []
    chosen = [name for name in REFERENCES if find_tool(PROGRAMS[name])]
    notes = [f"{name} is not installed: the {REFERENCES[name]} row was skipped"
             for name in REFERENCES if name not in chosen]
    return chosen, notes


def start_rows(sup: Supervisor, models: Sequence[str], refs: Sequence[str],
               targets: Sequence[Target], ports: dict[str, int], backend_ports: list[int],
               path: str, tmp: str, lb_workers: int = 1) -> list[Row]:
    """Start what the rows need (``ports`` by row key, plus "admin"); the rows
    in table order: models, references, targets.  Raises supervisor.StartError."""
    quiet = ("--log-level", "warning")
    shared = "async" in models or "lb" in models or bool(refs)
    backends = [sup.backend(port, "async", *quiet) for port in backend_ports] if shared else []
    rows = []
    for key in models:
        if key == "async":
            rows.append(Row(key, HOST, backend_ports[0], path, backends[:1]))
        elif key == "thread":
            rows.append(Row(key, HOST, ports["thread"], path,
                            [sup.backend(ports["thread"], "thread", *quiet)]))
        elif key == "lb":
            lb = sup.balancer(*quiet, "--workers", str(lb_workers), backends=backend_ports,
                              port=ports["lb"], admin=ports["admin"], timeout=20.0)
            rows.append(Row(key, HOST, ports["lb"], path, [lb.server, *backends]))
    for key in refs:
        program = find_tool(PROGRAMS[key])
        assert program is not None  # references() checked
        if key == "haproxy":
            proc = start_haproxy(sup, program, ports[key], backend_ports, tmp)
        else:
            proc = start_nginx(sup, program, "nginx", ports[key], None, backend_ports, tmp)
        rows.append(Row(key, HOST, ports[key], path, [proc, *backends]))
    rows += [Row(t.name, t.host, t.port, t.path or path) for t in targets]
    return rows


def size_rows(rows: Sequence[Row], keepalive: bool) -> None:
    """Learn each row's full response size from one request like ab's; a
    target that cannot be reached raises OSError naming it."""
    for row in rows:
        try:
            row.size = ab.response_size(row.host, row.port, row.path, keepalive)
        except OSError as exc:
            raise OSError(f"{row.key} ({row.url}) did not answer: {exc}") from None
        if not row.size:
            raise OSError(f"{row.key} ({row.url}) closed the connection without a response")
