# tests/unit/test_workload.py -- parsing the sweep's --workload and what each one asks for.
#
# Strategy: loadtests.workload is pure: each accepted spelling gives the path
# the runs request, each bad one a ValueError naming the value, and the
# report's title names the workload.
from __future__ import annotations

import pytest

from loadtests import aggregate, report
from loadtests.cell import Cell
from loadtests.workload import MAX_MS, Workload, parse


@pytest.mark.parametrize(("text", "path", "name"), [
    ("static", "/page.html", "static"),
    ("cpu:2", "/work/cpu?ms=2", "cpu:2"),
    ("wait:50", "/work/wait?ms=50", "wait:50"),
    ("wait:0", "/work/wait?ms=0", "wait:0"),
    (f"cpu:{MAX_MS}", f"/work/cpu?ms={MAX_MS}", f"cpu:{MAX_MS}"),
])
def test_each_workload_names_its_path(text: str, path: str, name: str) -> None:
    w = parse(text)
    assert w.path("/page.html") == path and w.name == name and w.shows


@pytest.mark.parametrize("text", ["", "cpu", "cpu:", "cpu:-1", "cpu:2.5", "wait:x",
                                  f"wait:{MAX_MS + 1}", "static:1", "sleep:5", "CPU:2"])
def test_bad_workloads_are_refused_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text) if text else "is not"):
        parse(text)


def test_the_report_names_the_workload_and_what_it_shows() -> None:
    run = Cell("ab", "async", 10, 100, False, 1.0, 100, 0, 0, 100, 100.0, 100.0, 1.0,
               1.0, 2.0, 3.0, 1)
    md = report.markdown(aggregate.summarise([run]), [], {}, (), Workload("wait", 50),
                         "/work/wait?ms=50")
    assert md.startswith("# Results: workload wait:50 (/work/wait?ms=50)")
    assert Workload("wait", 50).shows in md
