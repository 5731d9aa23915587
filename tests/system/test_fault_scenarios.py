# tests/system/test_fault_scenarios.py -- the catalogue of fault scenarios, each as a test.
#
# Strategy: the tests run the same catalogue as scripts/reliability
# (loadtests/faults/scenarios.py), one test per scenario: real backends and
# a real balancer on free ports of 127.0.0.1 (through loadtests/supervisor.py),
# fault proxies and a bounded, paced load, all stopped by PID afterwards.  A
# scenario passes when its verdict is "ok", i.e. every check of its stated
# expectation held; the failure message carries the row's figures (sent,
# failed, lost, codes, recovery), the reasons, and the expectation.  The
# balancer tests that duplicated a scenario (tests/test_lb_faults.py,
# tests/test_faultproxy.py) are these now; what they asserted beyond the
# scenario's checks became part of the scenario's expectation.  Cheap tests
# of the catalogue itself (names, selection, the row's arithmetic, how a
# verdict is formed) run without processes.
from __future__ import annotations

import pytest

from loadtests.faults import (
    CATALOGUE,
    SCENARIOS,
    Outcome,
    Row,
    Scenario,
    ScenarioSetup,
    run,
    select,
)
from loadtests.faults import load as loadmod
from loadtests.faults.stack import Hang, tally


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", CATALOGUE, ids=[s.name for s in CATALOGUE])
def test_scenario_behaves_as_specified(scenario: Scenario) -> None:
    row = run(scenario)
    print(f"\n[{scenario.name}] {row.figures()}")
    if not row.ok:
        pytest.fail(f"{row.figures()}\nexpected: {scenario.expectation}", pytrace=False)
    assert row.sent > 0 and 0 <= row.lost <= row.failed <= row.sent, row.figures()


def test_the_catalogue_is_one_dict_of_twelve_described_scenarios() -> None:
    assert list(SCENARIOS) == ["sigkill", "sigstop", "garbage", "truncate", "reset", "latency",
                               "blackhole", "all_down", "lb_sigterm", "lb_sighup", "slowloris",
                               "flood"]
    assert list(SCENARIOS.values()) == list(CATALOGUE)
    assert len({s.title for s in CATALOGUE}) == len(CATALOGUE)
    for s in CATALOGUE:
        assert s.injected and s.expectation and callable(s.check), s.name


def test_select_keeps_the_order_given_and_names_the_unknown() -> None:
    assert select() == list(CATALOGUE)
    assert [s.name for s in select(["flood", " reset", "flood"])] == ["flood", "reset"]
    with pytest.raises(ValueError, match=r"^unknown scenario nope, zap; choose from sigkill,"):
        select(["reset", "nope", "zap"])
    with pytest.raises(ValueError, match=r"\(none given\)"):
        select(["", " "])


def test_tally_counts_sent_failed_and_lost() -> None:
    row = Row("t")
    kinds = [(loadmod.COMPLETE, 200), (loadmod.COMPLETE, 200), (loadmod.COMPLETE, 504),
             (loadmod.TRUNCATED, 0), (loadmod.CLOSED_BEFORE_RESPONSE, 0),
             (loadmod.CONNECT_FAILED, 0)]
    tally(row, [Outcome(0, 0, i, f"/x?{i}", kind, status) for i, (kind, status)
                in enumerate(kinds)])
    assert (row.sent, row.failed, row.lost) == (5, 3, 2)  # a refused connect sent nothing
    assert row.codes() == "200×2 504×1 closed×1 cut×1 refused×1"


def test_a_verdict_lists_every_problem_and_a_hang_is_not_ok() -> None:
    def two_problems(stack: ScenarioSetup, row: Row) -> list[str]:
        row.sent = 3
        return ["2 failed", "no 503 seen"]

    def hangs(stack: ScenarioSetup, row: Row) -> list[str]:
        raise Hang("load did not start")

    failing = Scenario("x", "x", "nothing", "everything", two_problems)
    assert failing.run(None).verdict == "not ok: 2 failed; no 503 seen"  # type: ignore[arg-type]
    row = Scenario("y", "y", "nothing", "everything", hangs).run(None)  # type: ignore[arg-type]
    assert not row.ok and row.verdict == "not ok: load did not start"
    assert row.name == "y" and row.expectation == "everything"
