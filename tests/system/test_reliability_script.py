# tests/system/test_reliability_script.py -- scripts/reliability (python -m loadtests.faults) as a
# user runs it.
#
# Strategy: run the real program as a subprocess -- --help through the bash
# shim (the user's command), a bad --only and a bad option (one line each,
# exit 2), and one real scenario end to end -- then check what a reader
# relies on: exit code 0, a well-formed Markdown table with one row and sane
# figures, and JSON rows that say the same thing as the table.  How the
# table shows a row without a recovery time, and a failed verdict, is
# checked on rows made by hand (no processes).  The catalogue's scenarios
# themselves are run by tests/test_fault_scenarios.py.
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.faults import SCENARIOS, Row
from loadtests.faults.__main__ import HEADER, RULE, as_json, table

ROOT = Path(__file__).resolve().parents[2]
CODES = re.compile(r"^[\w-]+×\d+( [\w-]+×\d+)*$")


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m loadtests.faults args`` from the checkout."""
    return subprocess.run([sys.executable, "-m", "loadtests.faults", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def cells_of(stdout: str) -> list[list[str]]:
    """The table's rows, as stripped cells."""
    lines = stdout.splitlines()
    start = lines.index(HEADER)
    assert lines[start + 1] == RULE == "|---|---:|---:|---:|---|---:|---|"
    rows = [line for line in lines[start + 2:] if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def test_help_lists_the_catalogue() -> None:
    helped = subprocess.run([str(ROOT / "scripts" / "reliability"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)  # the user's command
    assert helped.returncode == 0, helped.stderr
    text = " ".join(helped.stdout.split())
    for word in ("--only", "--json", "recovery", "lost", "python -m loadtests.faults"):
        assert word in text, word
    for scenario in SCENARIOS.values():
        assert f"{scenario.name}: " in text, scenario.name
        assert " ".join(scenario.expectation.split()) in text, scenario.name


@pytest.mark.parametrize("args, message", [
    (("--only", "nonsense"), "--only: unknown scenario nonsense; choose from sigkill,"),
    (("--only", "reset,nope,flood"), "--only: unknown scenario nope; choose from"),
    (("--only", ","), "--only: unknown scenario (none given)"),
    (("--bogus",), "unrecognized arguments: --bogus"),
    (("--json", "/nonexistent-dir/rows.json"), "--json: no directory /nonexistent-dir"),
], ids=["unknown", "one_of_three", "empty", "bad_option", "json_nowhere"])
def test_bad_input_is_one_line(args: tuple[str, ...], message: str) -> None:
    done = run(*args, timeout=60)
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("scripts/reliability: error: "), done.stderr
    assert message in done.stderr, done.stderr


@pytest.mark.timeout(120)
def test_one_scenario_table_exit_code_and_json(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = run("--only", "reset", "--json", str(out))
    print(done.stdout)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "reliability: reset: ok (" in done.stderr, done.stderr
    (cells,) = cells_of(done.stdout)
    assert len(cells) == 7, cells
    scenario, sent, failed, lost, codes, recovery, verdict = cells
    assert scenario == SCENARIOS["reset"].title
    assert int(sent) >= 1000 and int(failed) == int(lost) == 0, cells
    assert CODES.match(codes), codes
    assert verdict == "ok", cells
    assert re.search(r"^1 scenarios in \d+s; 0 not ok$", done.stdout, re.M), done.stdout
    assert re.search(r"^- connection reset: \d+ connections reset by the proxy$", done.stdout,
                     re.M), done.stdout

    (row,) = json.loads(out.read_text())
    assert {"scenario", "name", "sent", "failed", "lost", "statuses", "statuses_text",
            "recovery_s", "verdict", "ok", "injected", "expectation", "note"} <= set(row), row
    assert row["name"] == "reset" and row["ok"] is True and row["verdict"] == "ok"
    assert row["expectation"] == SCENARIOS["reset"].expectation
    assert row["injected"] == SCENARIOS["reset"].injected
    assert cells[1:5] == [str(row["sent"]), str(row["failed"]), str(row["lost"]),
                          row["statuses_text"]]
    assert sum(row["statuses"].values()) == row["sent"]
    # The proxied fault healed: the backend came back.
    assert row["recovery_s"] is not None and row["recovery_s"] >= 0
    assert recovery == f"{row['recovery_s']:.2f}"


def test_table_and_json_of_rows_made_by_hand() -> None:
    rows = [Row("reload", name="lb_sighup", sent=10, statuses={"200": 10}),
            Row("down", name="all_down", sent=5, failed=3, lost=1, recovery_s=1.5,
                statuses={"closed": 1, "503": 2, "200": 2, "refused": 4},
                verdict="not ok: no 503 seen")]
    lines = table(rows).splitlines()
    assert lines[:2] == [HEADER, RULE]
    assert lines[2] == "| reload | 10 | 0 | 0 | 200×10 | - | ok |"
    assert lines[3] == ("| down | 5 | 3 | 1 | 200×2 503×2 closed×1 refused×4 | 1.50 "
                        "| not ok: no 503 seen |")
    data = json.loads(as_json(rows))
    assert [r["ok"] for r in data] == [True, False]
    assert data[1]["statuses_text"] == "200×2 503×2 closed×1 refused×4"
    assert data[0]["recovery_s"] is None
