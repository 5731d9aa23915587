# lb/control.py -- an operator's runtime states and weights, shared by every worker.
#
# Strategy: one small JSON file in the balancer's run directory maps backend
# names to ``{"state": "ready"|"drain"|"maint", "weight": N}``.  A change is
# made under an flock (read, merge, write a temporary file, rename over), so
# two workers answering two POSTs at once lose neither, and a reader never
# sees half a file.  Each worker looks at the file's identity (inode, mtime,
# size) every TICK seconds and hands a new table to its Backends, so a
# change made through any worker's admin listener holds in all of them
# within a second.  The file is not the configuration: it outlives a reload
# (SIGHUP keeps the runtime states of backends still listed) and goes with
# the run directory when the balancer stops.
from __future__ import annotations

import fcntl
import json
import logging
import os
from typing import Any

log = logging.getLogger("lb.control")

#: Seconds between two looks at the file (and at the gauges, lb.server).
TICK = 0.25
#: An operator's states for a backend: ready takes requests (while healthy),
#: drain takes no new ones, maint takes none and is not health-checked.
STATES = ("ready", "drain", "maint")
MAX_WEIGHT = 1000

Table = dict[str, dict[str, Any]]


def parse_change(body: bytes) -> dict[str, Any]:
    """The change a POST body asks for: ``{"state": ...}`` and/or
    ``{"weight": N}``.  Raises ValueError with a reason a client can read."""
    try:
        change = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("the body is not JSON this API takes: nested too deep") from None
    if not isinstance(change, dict) or not change:
        raise ValueError('expected a JSON object such as {"state": "drain"} or {"weight": 5}')
    unknown = sorted(set(change) - {"state", "weight"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}: only state and weight can be set")
    if "state" in change and change["state"] not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {change['state']!r}")
    weight = change.get("weight", 0)
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= MAX_WEIGHT:
        raise ValueError(f"weight must be a whole number 0 to {MAX_WEIGHT}, not {weight!r}")
    return change


class Control:
    """The shared table, as this worker last read it."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "control.json")
        self._lock_path = os.path.join(directory, "control.lock")
        self._stamp: tuple[int, int, int] | None = None
        self.table: Table = {}

    def _read(self) -> Table:
        try:
            with open(self.path, encoding="utf-8") as f:
                table = json.load(f)
            if not isinstance(table, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            log.error("cannot read %s: %s; keeping the states as they are", self.path, exc)
            return self.table
        return {name: entry for name, entry in table.items() if isinstance(entry, dict)}

    def poll(self) -> Table | None:
        """The table when it changed since the last look, else None."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        self.table = self._read()
        return self.table

    def change(self, name: str, change: dict[str, Any]) -> Table:
        """Merge ``change`` (from parse_change) into backend ``name``'s entry,
        for every worker; return the new table."""
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._stamp = None  # read it afresh, under the lock
                table = self._read()
                table[name] = {**table.get(name, {}), **change}
                temporary = f"{self.path}.{os.getpid()}"
                with open(temporary, "w", encoding="utf-8") as f:
                    json.dump(table, f, indent=1, sort_keys=True)
                os.replace(temporary, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self.poll()
        return self.table
