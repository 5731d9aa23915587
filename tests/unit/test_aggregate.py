# tests/unit/test_aggregate.py -- the order of the runs, and the arithmetic of cells and ratios.
#
# Strategy: loadtests.aggregate is pure, so it is checked on hand-made runs
# whose figures are chosen so every expected value can be worked out on
# paper: which run is the median, the spread and the noisy threshold, a
# cell made invalid by one bad run, and ratios taken within a round.
from __future__ import annotations

import pytest

from loadtests.aggregate import NOISY_SPREAD, ratios, schedule, summarise
from loadtests.cell import Cell


def run(model: str, level: int, rnd: int, rps: float, p99: float = 1.0,
        reasons: list[str] | None = None, tool: str = "ab") -> Cell:
    return Cell(tool, model, level, 100, False, 100 / rps, 100, 0, 0, 100 * 200, rps,
                1000 * level / rps, rps * 200 / 1024, p99 / 2, p99, p99, 200,
                list(reasons or []), round=rnd)


def test_rounds_measure_every_cell_once_with_the_rows_rotated() -> None:
    order = schedule(["a", "b", "c"], [1, 10], 3)
    assert order[:6] == [(1, "a", 1), (1, "b", 1), (1, "c", 1),
                         (1, "a", 10), (1, "b", 10), (1, "c", 10)]
    assert [row for rnd, row, level in order if rnd == 2 and level == 1] == ["b", "c", "a"]
    assert [row for rnd, row, level in order if rnd == 3 and level == 10] == ["c", "a", "b"]
    assert len(order) == 18 and len(set(order)) == 18
    for rnd in (1, 2, 3):  # each round holds every (row, level) exactly once
        assert sorted((r, lv) for n, r, lv in order if n == rnd) == sorted(
            (r, lv) for r in "abc" for lv in (1, 10))
    assert [n for n, _, _ in order] == sorted(n for n, _, _ in order)  # round by round


def test_a_fourth_round_comes_back_to_the_first_order() -> None:
    order = schedule(["a", "b"], [5], 4)
    assert [row for _, row, _ in order] == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_the_median_run_stands_for_the_cell_with_the_range_beside_it() -> None:
    [cell] = summarise([run("lb", 10, 1, 900, p99=5), run("lb", 10, 2, 1000, p99=9),
                        run("lb", 10, 3, 1100, p99=4)])
    assert cell.median.round == 2 and cell.median.rps == 1000
    assert (cell.rps_min, cell.rps_max) == (900, 1100)
    assert (cell.p99_min, cell.p99_max) == (4, 9)
    assert cell.spread == pytest.approx(0.2)
    assert cell.valid and not cell.noisy
    data = cell.to_dict()
    assert data["model"] == "Asynchronous+LB" and data["level"] == 10 and data["tool"] == "ab"
    assert data["median"]["rps"] == 1000 and data["median"]["p99_ms"] == 9
    assert [r["round"] for r in data["runs"]] == [1, 2, 3]


def test_an_even_count_takes_the_lower_middle_run() -> None:
    [cell] = summarise([run("async", 1, n, rps) for n, rps in enumerate((40, 10, 30, 20), 1)])
    assert cell.median.rps == 20
    assert cell.spread == pytest.approx(30 / 25)  # (40 - 10) / median(10, 20, 30, 40)


def test_noisy_is_a_spread_over_a_quarter_of_the_median() -> None:
    def cell(low: float, high: float):
        return summarise([run("async", 1, 1, low), run("async", 1, 2, 100),
                          run("async", 1, 3, high)])[0]
    assert NOISY_SPREAD == 0.25
    assert not cell(90, 115).noisy            # 0.25 exactly is not over
    assert cell(90, 116).noisy                # 0.26
    assert not summarise([run("async", 1, 1, 50)])[0].noisy  # one run has no spread
    assert cell(90, 116).to_dict()["noisy"] is True


def test_one_invalid_run_makes_its_cell_invalid_and_says_which() -> None:
    [cell] = summarise([run("thread", 500, 1, 1000), run("thread", 500, 2, 990,
                                                           reasons=["non-2xx 3"]),
                        run("thread", 500, 3, 1010)])
    assert not cell.valid
    assert [r.round for r in cell.invalid_runs] == [2]
    runs = cell.to_dict()["runs"]
    assert [r["valid"] for r in runs] == [True, False, True]
    assert runs[1]["reason"] == "non-2xx 3" and cell.to_dict()["valid"] is False


def test_cells_are_kept_apart_by_tool_row_and_level() -> None:
    cells = summarise([run("async", 1, 1, 10), run("async", 10, 1, 20), run("lb", 1, 1, 5),
                       run("async", 1, 1, 11, tool="locust"), run("async", 1, 2, 12)])
    assert [(c.tool, c.model, c.level, len(c.runs)) for c in cells] == [
        ("ab", "async", 1, 2), ("ab", "async", 10, 1), ("ab", "lb", 1, 1),
        ("locust", "async", 1, 1)]


def test_ratios_are_taken_within_each_round() -> None:
    # round 1: lb 500 / async 1000 = 0.5, round 2: 1800 / 2000 = 0.9, round 3: 900 / 1500
    # = 0.6; dividing across rounds (or medians: 900 / 1500) would give other figures.
    cells = [run("async", 1, n, rps) for n, rps in ((1, 1000), (2, 2000), (3, 1500))]
    cells += [run("lb", 1, 1, 500), run("lb", 1, 2, 1800), run("lb", 1, 3, 900)]
    found = {(r.name, r.level): r for r in ratios(cells)}
    r = found[("lb/async", 1)]
    assert (r.median, r.min, r.max, r.rounds) == (pytest.approx(0.6), pytest.approx(0.5),
                                                  pytest.approx(0.9), 3)
    assert ("thread/async", 1) not in found  # a row that was not measured has no ratio


def test_a_round_with_an_invalid_run_gives_no_ratio_and_all_is_the_median_of_rounds() -> None:
    cells = [run("async", lv, n, 1000) for n in (1, 2) for lv in (1, 10, 100)]
    cells += [run("thread", 1, 1, 500), run("thread", 10, 1, 700), run("thread", 100, 1, 900),
              run("thread", 1, 2, 400), run("thread", 10, 2, 300, reasons=["failed 1"]),
              run("thread", 100, 2, 100)]
    found = {(r.name, r.level): r for r in ratios(cells)}
    assert found[("thread/async", 10)].rounds == 1  # round 2's run at c=10 was invalid
    overall = found[("thread/async", "all")]
    # round 1: median(0.5, 0.7, 0.9) = 0.7; round 2: median(0.4, 0.1) = 0.25
    assert overall.min == pytest.approx(0.25) and overall.max == pytest.approx(0.7)
    assert overall.median == pytest.approx(0.475) and overall.rounds == 2
    assert overall.to_dict() == {"name": "thread/async", "level": "all", "tool": "ab",
                                 "median": overall.median, "min": overall.min,
                                 "max": overall.max, "rounds": 2}
