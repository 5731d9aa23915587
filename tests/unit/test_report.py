# tests/unit/test_report.py -- rendering the results from saved cells.
#
# Strategy: cells are built from the saved ab outputs (tests/data/ab), so the
# table, CSV, JSON, seed comparison and plots are tested on real figures,
# without running any load.
from __future__ import annotations

import csv
from pathlib import Path

from loadtests import report, seed
from loadtests.cell import Cell, from_ab
from loadtests.tools import ab
from tests.support import ROOT

DATA = ROOT / "tests" / "data" / "ab"


def cells() -> list[Cell]:
    ok = ab.parse((DATA / "ok-c10.txt").read_text(), (DATA / "ok-c10.csv").read_text())
    bad = ab.parse((DATA / "failures.txt").read_text())
    good = from_ab(ok, "async", 1000, False, 398)
    good.server_cpu, good.client_cpu = 0.25, 0.1
    lb_bad = from_ab(bad, "lb", 300, False, 50)
    lb_bad.concurrency = 500
    return [good, lb_bad]


def test_table_has_the_seed_columns_in_order_and_marks_invalid_cells() -> None:
    text = report.table(cells())
    header = text.splitlines()[0]
    seed_columns = ["No.", "Server Model", "Concurrency Level", "Time taken for tests",
                    "Complete Requests", "Failed Requests", "Total Transferred",
                    "Requests per Second", "Time per Request", "Transfer Rate"]
    positions = [header.index(c) for c in seed_columns]
    assert positions == sorted(positions)
    for extra in ("p50", "p99", "Valid"):
        assert extra in header
    rows = text.splitlines()[2:]
    assert "| Asynchronous | 10 |" in rows[0] and rows[0].rstrip().endswith("| yes |")
    assert "250 µs/req" in rows[0]
    assert "**NO: failed 249" in rows[1]


def test_seed_comparison_marks_the_seeds_invalid_rows() -> None:
    text = report.seed_comparison(cells())
    lines = text.splitlines()
    async_row = next(line for line in lines if line.startswith("| Asynchronous | 10 |"))
    assert "| 2.10 | 0 | yes |" in async_row
    lb_row = next(line for line in lines if line.startswith("| Asynchronous+LB | 500 |"))
    assert "| 5964.70 | 66 | **no** |" in lb_row
    assert not seed.lookup("lb", 500).valid and seed.lookup("async", 10).valid


def test_summary_names_invalid_cells() -> None:
    lines = report.summary(cells())
    assert lines[0].startswith("1 of 2 cells valid; INVALID: Asynchronous+LB c=500")


def test_files_and_plots_are_written(tmp_path: Path) -> None:
    env = {"machine": "test"}
    files = report.write_all(cells(), env, str(tmp_path))
    names = {Path(f).name for f in files}
    assert names == {"results.md", "results.csv", "results.json", "rps.png", "latency.png",
                     "failures.png"}
    for f in files:
        assert Path(f).stat().st_size > 0
    for png in ("rps.png", "latency.png", "failures.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back, env_back = report.read_json(str(tmp_path / "results.json"))
    assert env_back == env
    assert [c.to_dict() for c in back] == [c.to_dict() for c in cells()]
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["valid"] for r in rows] == ["True", "False"]
    assert rows[0]["total_transferred"] == "398000"
    md = (tmp_path / "results.md").read_text()
    assert "## Against the original experiment" in md and "machine: test" in md
