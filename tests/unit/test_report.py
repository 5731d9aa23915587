# tests/unit/test_report.py -- rendering the results from saved runs.
#
# Strategy: runs are built from the saved ab outputs (tests/data/ab), so the
# tables, CSV, JSON, seed comparison and plots are tested on real figures,
# without running any load; a second round is the same run with its rate
# scaled, so the median, the range and the ratios are known.
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

from loadtests import aggregate, report, results, seed
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


def rounds() -> list[Cell]:
    """Two rounds: the saved runs, then the same runs at 1.5x the rate."""
    first = cells()
    second = copy.deepcopy(first)
    for c in second:
        c.round, c.rps = 2, c.rps * 1.5
    return first + second


def summaries() -> list[aggregate.Summary]:
    return aggregate.summarise(rounds())


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


def test_cells_table_shows_the_median_run_its_range_and_which_run_was_invalid() -> None:
    text = report.cells_table(summaries())
    header = text.splitlines()[0]
    positions = [header.index(c) for c in ("Requests per Second", "req/s min-max",
                                           "Time per Request", "p99", "p99 min-max",
                                           "Runs", "Spread", "Valid")]
    assert positions == sorted(positions)
    good, bad = text.splitlines()[2:]
    rate = cells()[0].rps
    assert f"| {rate:.2f} [#/sec] | {rate:.0f}-{rate * 1.5:.0f} |" in good
    assert "| 2 | 40% **noisy** | yes |" in good  # (1.5 - 1) / median(1, 1.5) = 0.4 > 0.25
    assert "**NO: round 1: failed 249" in bad and "round 2: failed 249" in bad


def test_seed_comparison_marks_the_seeds_invalid_rows() -> None:
    text = report.seed_comparison(summaries())
    lines = text.splitlines()
    async_row = next(line for line in lines if line.startswith("| Asynchronous | 10 |"))
    assert "| 2.10 | 0 | yes |" in async_row
    lb_row = next(line for line in lines if line.startswith("| Asynchronous+LB | 500 |"))
    assert "| 5964.70 | 66 | **no** |" in lb_row
    assert "| 498 | **no** |" in lb_row  # our failed requests, summed over both runs
    assert not seed.lookup("lb", 500).valid and seed.lookup("async", 10).valid


def test_summary_names_invalid_and_noisy_cells_and_suggests_a_remedy() -> None:
    lines = report.summary(summaries(), [])
    assert lines[0].startswith("1 of 2 cells valid (2 runs each, interleaved); INVALID: "
                               "Asynchronous+LB c=500")
    assert lines[1].startswith("2 of 2 cells noisy") and "--repeat 5" in lines[1]


def test_ratios_table_and_summary_give_the_median_and_range_over_rounds() -> None:
    runs = rounds()
    lb = copy.deepcopy([c for c in runs if c.model == "async"])
    for c in lb:
        c.model, c.rps = "lb", c.rps * (0.5 if c.round == 1 else 0.6)
    ratios = aggregate.ratios(runs + lb)
    table = report.ratios_table(ratios)
    assert "| ab | Asynchronous+LB / Asynchronous | 0.55x (0.50x-0.60x) |" in table
    line = next(x for x in report.summary(aggregate.summarise(runs + lb), ratios)
                if "Asynchronous+LB / Asynchronous" in x)
    assert "0.55x (median over 2 rounds, range 0.50x-0.60x)" in line


def test_files_and_plots_are_written(tmp_path: Path) -> None:
    env = {"machine": "test"}
    ratios = aggregate.ratios(rounds())
    files = results.write_all(summaries(), ratios, env, str(tmp_path), ["a note"])
    names = {Path(f).name for f in files}
    assert names == {"results.md", "results.csv", "results.json", "rps.png", "latency.png",
                     "failures.png"}
    for f in files:
        assert Path(f).stat().st_size > 0
    for png in ("rps.png", "latency.png", "failures.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["environment"] == env and data["notes"] == ["a note"]
    first = data["cells"][0]
    for key in ("model", "level", "tool", "valid", "noisy", "median", "rps_min", "rps_max",
                "p99_min_ms", "p99_max_ms", "runs"):
        assert key in first, key
    for key in ("rps", "p50_ms", "p99_ms", "failed", "non_2xx", "total_bytes"):
        assert key in first["median"], key
    assert set(first["runs"][0]) == {"round", "rps", "p99_ms", "failed", "non_2xx",
                                     "total_bytes", "valid", "reason"}
    assert [c["valid"] for c in data["cells"]] == [True, False]
    assert first["median"]["total_bytes"] == 398000
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["valid"] for r in rows] == ["True", "False"]
    assert rows[0]["total_bytes"] == "398000" and rows[0]["runs"] == "2"
    assert rows[1]["reasons"].startswith("round 1: failed 249")
    md = (tmp_path / "results.md").read_text()
    assert "## Against the original experiment" in md and "machine: test" in md
    assert "Note: a note" in md


def test_single_runs_round_trip_through_json(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.json")
    report.write_json(rounds(), {"tool": "locust"}, path)
    back, env = report.read_json(path)
    assert env == {"tool": "locust"}
    assert [c.to_dict() for c in back] == [c.to_dict() for c in rounds()]
    assert [c.round for c in back] == [1, 1, 2, 2]
