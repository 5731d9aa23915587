# tests/unit/test_app.py -- the backend's file cache: what it holds, and what it drops.
#
# Strategy: App is a pure function of request heads over a document root
# (no sockets), so it is driven here directly, with heads parsed from bytes
# by the real parser; what the cache holds is read off App.held and
# App.cached.  Over the budget the oldest entry made goes first; a file
# that changes replaces its own entry without being counted twice; a file
# larger than the whole budget is sent from disk and holds nothing.
from __future__ import annotations

from pathlib import Path

from gservers.backend.app import CACHE_ENTRIES, App
from gservers.http import Head, RequestParser


def get(app: App, path: str) -> bytes:
    """The body App answers GET ``path`` with (read from disk when not held)."""
    head = next(e for e in RequestParser().feed(
        f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()) if type(e) is Head)
    response = app.handle(head, b"")
    assert response.status == 200, response
    if response.path is not None:
        with open(response.path, "rb") as f:
            return f.read()
    return response.body


def test_over_the_budget_the_oldest_entry_goes(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.txt").write_bytes(bytes([65 + i]) * 300)
    app = App(str(tmp_path), cache_bytes=1000)
    def held() -> list[str]:
        return [Path(p).stem for p in app.cached]

    for i in range(3):
        assert get(app, f"/{i}.txt") == bytes([65 + i]) * 300
    assert (held(), app.held) == (["0", "1", "2"], 900)
    assert get(app, "/3.txt") == b"D" * 300  # 1200 > 1000: 0.txt goes
    assert (held(), app.held) == (["1", "2", "3"], 900)
    assert get(app, "/0.txt") == b"A" * 300  # back again; 1.txt goes
    assert get(app, "/1.txt") == b"B" * 300  # and back; 2.txt goes
    assert (held(), app.held) == (["3", "0", "1"], 900)


def test_a_changed_file_replaces_its_entry(tmp_path: Path) -> None:
    path = tmp_path / "page.txt"
    path.write_bytes(b"x" * 100)
    app = App(str(tmp_path), cache_bytes=1000)
    assert get(app, "/page.txt") == b"x" * 100
    path.write_bytes(b"y" * 250)
    assert get(app, "/page.txt") == b"y" * 250
    assert (len(app.cached), app.held) == (1, 250)


def test_a_file_larger_than_the_budget_is_sent_from_disk(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"z" * 5000)
    app = App(str(tmp_path), cache_bytes=1000)
    assert get(app, "/big.bin") == b"z" * 5000
    assert (len(app.cached), app.held) == (1, 0)  # its entry, without its content
    none = App(str(tmp_path), cache_bytes=0)
    assert get(none, "/big.bin") == b"z" * 5000 and none.held == 0


def test_entries_are_bounded_in_number_too(tmp_path: Path) -> None:
    """Files that hold no content (empty here, or sent from disk) still cost
    an entry each: CACHE_ENTRIES of them at most."""
    for i in range(CACHE_ENTRIES + 5):
        (tmp_path / f"{i}.txt").touch()
    app = App(str(tmp_path))
    for i in range(CACHE_ENTRIES + 5):
        assert get(app, f"/{i}.txt") == b""
    assert len(app.cached) == CACHE_ENTRIES and app.held == 0
    assert Path(app.cached[0]).stem == "5"  # the five oldest went
