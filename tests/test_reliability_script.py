# tests/test_reliability_script.py -- scripts/reliability as a user runs it.
#
# Strategy: run the real script as a subprocess (two quick scenarios, one
# through the fault proxy and one signal to the balancer), then check what a
# reader relies on: exit code 0, a well-formed Markdown table with one row
# per scenario and sane figures, and JSON rows that say the same thing as
# the table.  --help and a bad --only are checked too (both fast).
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

SCRIPT = ROOT / "scripts" / "reliability.py"
HEADER = ("| scenario | requests sent | failed | lost | status codes seen | recovery (s) "
          "| verdict |")
CODES = re.compile(r"^[\w-]+×\d+( [\w-]+×\d+)*$")


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_help_and_bad_only() -> None:
    helped = subprocess.run([str(ROOT / "scripts" / "reliability"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)  # the user's command
    assert helped.returncode == 0, helped.stderr
    text = " ".join(helped.stdout.split())
    for word in ("--only", "--json", "sigkill", "slowloris", "flood", "recovery", "lost"):
        assert word in text, word
    bad = run("--only", "nonsense")
    assert bad.returncode == 2
    assert "unknown scenario nonsense" in bad.stderr


@pytest.mark.timeout(180)
def test_two_scenarios_table_exit_code_and_json(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = run("--only", "reset,lb_sighup", "--json", str(out))
    print(done.stdout)
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    start = lines.index(HEADER)
    assert lines[start + 1] == "|---|---:|---:|---:|---|---:|---|"
    rows = [line for line in lines[start + 2:] if line.startswith("|")]
    assert len(rows) == 2, done.stdout
    table = {}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 7, line
        scenario, sent, failed, lost, codes, recovery, verdict = cells
        assert int(sent) >= 1000 and 0 <= int(lost) <= int(failed) <= int(sent), line
        assert CODES.match(codes), codes
        assert recovery == "-" or float(recovery) >= 0, recovery
        assert verdict == "ok", line
        table[scenario] = cells
    assert re.search(r"^2 scenarios in \d+s; 0 not ok$", done.stdout, re.M), done.stdout

    data = json.loads(out.read_text())
    assert [r["name"] for r in data] == ["reset", "lb_sighup"]
    for row in data:
        assert {"scenario", "sent", "failed", "lost", "statuses", "statuses_text", "recovery_s",
                "verdict", "ok", "expectation"} <= set(row), row
        assert row["ok"] is True and row["verdict"] == "ok"
        cells = table[row["scenario"]]
        assert cells[1:4] == [str(row["sent"]), str(row["failed"]), str(row["lost"])]
        assert cells[4] == row["statuses_text"]
        assert sum(n for k, n in row["statuses"].items() if k != "refused") == row["sent"]
        assert row["expectation"]
    reset, sighup = data
    # The proxied fault healed: the backend came back; a reload has no recovery time.
    assert reset["recovery_s"] is not None and reset["recovery_s"] >= 0
    assert table[reset["scenario"]][5] == f"{reset['recovery_s']:.2f}"
    assert sighup["recovery_s"] is None and table[sighup["scenario"]][5] == "-"
    assert reset["failed"] == 0 and sighup["failed"] == 0
