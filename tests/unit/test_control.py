# tests/unit/test_control.py -- the operator's shared table of backend states and weights.
#
# Strategy: parse_change is pure: each accepted body comes back as the
# change, each refused one raises a ValueError whose message names the
# problem.  Control instances over one temporary directory stand for the
# workers: a change made through one is seen once by another's poll; two
# real processes (spawned, released together by a barrier) making 50 changes
# each lose none of them; garbage in the file leaves the last good table in
# place.
from __future__ import annotations

import json
import logging
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from lb.control import Control, parse_change


@pytest.mark.parametrize(("body", "want"), [
    (b'{"state": "drain"}', {"state": "drain"}),
    (b'{"state": "maint"}', {"state": "maint"}),
    (b'{"weight": 0}', {"weight": 0}),
    (b'{"weight": 1000}', {"weight": 1000}),
    (b' {"state": "ready", "weight": 7}\n', {"state": "ready", "weight": 7}),
])
def test_accepted_changes(body: bytes, want: dict[str, Any]) -> None:
    assert parse_change(body) == want


@pytest.mark.parametrize(("body", "why"), [
    (b"drain", "not JSON"),
    (b'{"state": "drain"', "not JSON"),
    (b'\xff{"state": "drain"}', "not JSON.*utf-8"),
    (b"", "expected a JSON object"),
    (b'["state", "drain"]', "expected a JSON object"),
    (b'"drain"', "expected a JSON object"),
    (b"{}", "expected a JSON object"),
    (b'{"state": "drain", "colour": "red"}', "unknown field 'colour'"),
    (b'{"state": "off"}', "state must be one of ready, drain, maint, not 'off'"),
    (b'{"state": null}', "state must be one of"),
    (b'{"weight": -1}', "weight must be a whole number 0 to 1000, not -1"),
    (b'{"weight": 1001}', "weight must be a whole number 0 to 1000, not 1001"),
    (b'{"weight": "3"}', "weight must be a whole number .*'3'"),
    (b'{"weight": true}', "weight must be a whole number .*True"),
    (b'{"weight": 2.5}', "weight must be a whole number .*2.5"),
    (b'{"state": "drain", "weight": 2.5}', "weight must be"),
])
def test_refused_changes_say_why(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_change(body)


def test_deeply_nested_json_is_refused_as_not_json() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        parse_change(b"[" * 5000)  # 5 kB, well under the admin's MAX_BODY


def test_changes_merge_into_the_entry(tmp_path: Path) -> None:
    control = Control(str(tmp_path))
    control.change("a:1", {"state": "drain"})
    table = control.change("a:1", {"weight": 3})
    assert table == {"a:1": {"state": "drain", "weight": 3}}
    control.change("a:1", {"state": "ready"})
    table = control.change("b:2", {"weight": 0})
    want = {"a:1": {"state": "ready", "weight": 3}, "b:2": {"weight": 0}}
    assert table == control.table == want
    assert json.loads((tmp_path / "control.json").read_text()) == want


def test_another_worker_sees_each_change_once(tmp_path: Path) -> None:
    writer, reader = Control(str(tmp_path)), Control(str(tmp_path))
    assert reader.poll() is None  # no file yet: nothing to take
    writer.change("a:1", {"state": "drain"})
    assert reader.poll() == {"a:1": {"state": "drain"}}
    assert reader.poll() is None
    assert reader.poll() is None
    writer.change("a:1", {"state": "maint"})  # the same size as before
    assert reader.poll() == {"a:1": {"state": "maint"}}
    assert reader.poll() is None
    assert reader.table == {"a:1": {"state": "maint"}}


def change_many(directory: str, prefix: str, start: Any) -> None:
    """One process's share of the race: 50 changes, once every racer is ready."""
    control = Control(directory)
    start.wait(60)
    for i in range(50):
        control.change(f"{prefix}-{i}", {"weight": i})


def test_two_processes_changing_at_once_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)  # both are imported and waiting before either begins
    workers = [context.Process(target=change_many, args=(str(tmp_path), prefix, start))
               for prefix in ("left", "right")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        if worker.is_alive():  # stuck: end it, and fail below
            worker.kill()
            worker.join()
    assert [w.exitcode for w in workers] == [0, 0]
    table = Control(str(tmp_path)).poll()
    assert table is not None
    want = {f"{prefix}-{i}": {"weight": i} for prefix in ("left", "right") for i in range(50)}
    assert table == want


@pytest.mark.parametrize("garbage", [
    b'{"a:1": {"state": "dr',
    b"",
    b"\xff\xfe\x00garbage",
    b"[1, 2]",  # JSON, but not a table
    b"null",
])
def test_a_corrupted_file_keeps_the_last_table(tmp_path: Path, garbage: bytes,
                                               caplog: pytest.LogCaptureFixture) -> None:
    writer, reader = Control(str(tmp_path)), Control(str(tmp_path))
    writer.change("a:1", {"state": "drain"})
    good = reader.poll()
    assert good == {"a:1": {"state": "drain"}}
    (tmp_path / "control.json").write_bytes(garbage)
    with caplog.at_level(logging.ERROR, logger="lb.control"):
        seen = reader.poll()  # must not raise
    assert seen in (None, good)
    assert reader.table == good
    assert "cannot read" in caplog.text
