# tests/unit/test_cell.py -- an ab cell's verdict, from the saved ab outputs.
#
# Strategy: loadtests.cell.from_ab turns one ab run into the table's cell and
# judges it with loadtests.tools.ab.judge.  Each saved output in tests/data/ab
# breaks exactly one kind of rule (or none), so each is turned into a cell and
# the cell must be invalid for that reason, carry it through JSON, and show it
# in the table; the clean outputs must give valid cells.
from __future__ import annotations

import pytest

from loadtests import report
from loadtests.cell import Cell, from_ab
from loadtests.tools import ab
from tests.support import ROOT

DATA = ROOT / "tests" / "data" / "ab"
HEAD = len(b"HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n")  # short-body's head


def cell(name: str, requests: int, size: int, keepalive: bool = False) -> Cell:
    csv_path = DATA / f"{name}.csv"
    result = ab.parse((DATA / f"{name}.txt").read_text(),
                      csv_path.read_text() if csv_path.exists() else "")
    return from_ab(result, "async", requests, keepalive, size)


@pytest.mark.parametrize(("name", "requests", "size", "keepalive"), [
    ("ok-c10", 1000, 398, False), ("ok-keepalive-c50", 2000, 425, True)])
def test_clean_runs_are_valid_cells(name: str, requests: int, size: int,
                                    keepalive: bool) -> None:
    c = cell(name, requests, size, keepalive)
    assert c.valid and c.reasons == [] and c.tool == "ab" and c.complete == requests
    assert Cell.from_dict(c.to_dict()).valid


@pytest.mark.parametrize(("name", "requests", "size", "reason"), [
    ("refused", 100, 398, "ab gave up: apr_socket_recv"),          # no response at all
    ("timelimit", 100000, 49, "complete 96 != 100000 requested"),  # complete != requested
    ("failures", 300, 50, "failed 249 (connect 0, receive 0, length 249"),  # failed > 0
    ("non2xx-404", 200, 179, "non-2xx 200"),                       # non-2xx > 0
    ("short-body", 200, HEAD + 100, "total transferred"),          # length mismatch
    ("empty-responses", 100, 398, "total transferred 0 != 100 x 398"),  # nothing came back
])
def test_each_broken_rule_makes_an_invalid_cell(name: str, requests: int, size: int,
                                                reason: str) -> None:
    c = cell(name, requests, size)
    assert not c.valid
    assert any(r.startswith(reason) for r in c.reasons), c.reasons
    back = Cell.from_dict(c.to_dict())
    assert not back.valid and back.reasons == c.reasons and c.to_dict()["valid"] is False
    assert "**NO: " in report.table([c])
