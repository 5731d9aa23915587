# loadtests/faults/__main__.py -- python -m loadtests.faults (scripts/reliability):
# the fault catalogue as a table.
#
# Strategy: the command line only picks scenarios from the catalogue
# (scenarios.py) and says where the JSON goes; each picked scenario runs on
# a ScenarioSetup of its own (real processes on 127.0.0.1, ended by PID), one after
# the other, with a progress line each on stderr.  Then the Markdown table
# on stdout, the notes under it, and the rows as JSON if asked.  The exit
# code is 1 when any scenario did not behave as specified, 2 for bad input
# (one line), 130 when interrupted (Ctrl-C or SIGTERM end the run through
# the same clean-up, so nothing started is left running).
from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from loadtests import supervisor
from loadtests.faults.scenarios import CATALOGUE, Scenario, run, select
from loadtests.faults.stack import Row

HEADER = ("| scenario | requests sent | failed | lost | status codes seen | recovery (s) "
          "| verdict |")
RULE = "|---|---:|---:|---:|---|---:|---|"
WIDTH = 79  #: --help text width
DESCRIPTION = (
    "Run the balancer's fault scenarios (python -m loadtests.faults) against real processes "
    "on 127.0.0.1 -- async backends, python -m lb, and a fault proxy in front of the "
    "backends for misbehaving-backend faults -- each under a bounded, paced, threaded "
    "keep-alive load, and print a Markdown table. Exit code 1 if any scenario did not "
    "behave as specified.")
PROCESSES = ("Every process is started here and ended by its PID, also on Ctrl-C. A whole "
             "run takes about a minute.")
COLUMNS = (
    "Columns: requests sent (refused connects excluded: no request went out); failed = no "
    "complete 2xx response; lost = no complete response at all; status codes seen (cut = "
    "response cut short, closed = closed before any response byte, refused = connect "
    "refused, timeout = hang protection hit); recovery = seconds from the fault's end "
    "(backend restarted, SIGCONT, proxy back to pass) until the backend is back in rotation "
    "(up and taking requests), or until the first 200 (all_down), or from the flood's start "
    "until its last answer (flood); '-' where it does not apply; verdict = ok, or not ok "
    "with the reason, against the scenario's expectation (also in the --json rows).")


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def catalogue_help(scenarios: tuple[Scenario, ...]) -> str:
    """The scenarios for --help: name, what is injected, what is expected."""
    lines = ["Scenarios:"]
    for s in scenarios:
        lines.append(textwrap.fill(f"{s.name}: {s.injected}.", WIDTH, initial_indent="  ",
                                   subsequent_indent="      "))
        lines.append(textwrap.fill(f"expected: {s.expectation}.", WIDTH,
                                   initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[Scenario]]:
    """The options and the scenarios they pick."""
    parser = Parser(
        prog="scripts/reliability", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(DESCRIPTION, WIDTH),
        epilog="\n\n".join([catalogue_help(CATALOGUE), textwrap.fill(COLUMNS, WIDTH),
                             textwrap.fill(PROCESSES, WIDTH)]))
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help="run only these scenarios (names below), in this order")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    args = parser.parse_args(argv)
    if args.json is not None and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json: no directory {Path(args.json).resolve().parent}")
    try:
        picked = select(args.only.split(",") if args.only is not None else None)
    except ValueError as exc:
        parser.error(f"--only: {exc}")
    return args, picked


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [HEADER, RULE]
    for r in rows:
        recovery = f"{r.recovery_s:.2f}" if r.recovery_s is not None else "-"
        lines.append(f"| {r.scenario} | {r.sent} | {r.failed} | {r.lost} | {r.codes()} | "
                     f"{recovery} | {r.verdict} |")
    return "\n".join(lines)


def as_json(rows: list[Row]) -> str:
    """The rows as a JSON list (every field, the codes as text, ok)."""
    data = [{**asdict(r), "statuses_text": r.codes(), "ok": r.ok} for r in rows]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def run_all(scenarios: list[Scenario]) -> list[Row]:
    """Run each scenario in turn, a progress line each on stderr."""
    rows: list[Row] = []
    for scenario in scenarios:
        print(f"reliability: {scenario.name} ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        row = run(scenario)
        rows.append(row)
        print(f"reliability: {scenario.name}: {row.verdict} ({time.monotonic() - began:.1f}s)",
              file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the picked scenarios, print the table; the exit code."""
    args, scenarios = parse_args(argv)

    # Ctrl-C and SIGTERM both end the run through the same clean-up (also
    # when started with SIGINT ignored, as background jobs of a script are).
    supervisor.interrupt_on(signal.SIGINT, signal.SIGTERM)
    began = time.monotonic()
    try:
        rows = run_all(scenarios)
    except KeyboardInterrupt:
        print("reliability: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    print(table(rows))
    notes = [f"- {r.scenario}: {r.note}" for r in rows if r.note]
    if notes:
        print("\n" + "\n".join(notes))
    print(f"\n{len(rows)} scenarios in {time.monotonic() - began:.0f}s; "
          f"{sum(not r.ok for r in rows)} not ok")
    if args.json:
        try:
            Path(args.json).write_text(as_json(rows))
        except OSError as exc:
            print(f"reliability: cannot write {args.json}: {exc.strerror}", file=sys.stderr)
            return 2
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
