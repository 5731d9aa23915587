# tests/corpus.py -- the raw request corpus (tests/requests) and what each case expects.
#
# Strategy: each NAME.http file holds the exact bytes a client sends; its
# NAME.expect says what a backend must answer (tests/requests/README.md).
# Loaded once, shared by the parser tests, the socket tests against both
# backend models and the malformed-input tests through the balancer.
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent / "requests"
#: Files longer than this are split in two at sampled positions only.
SPLIT_ALL_UP_TO = 4096
SPLIT_SAMPLES = 400


# -- the corpus ---------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One corpus file and its expectations (see tests/requests/README.md)."""

    kind: str                     #: "valid" or "invalid"
    name: str
    data: bytes
    statuses: tuple[int, ...]
    methods: tuple[bytes, ...]
    close: bool
    rejected: int | None
    bug: str | None
    xfail: frozenset[str]

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def finals(self) -> tuple[int, ...]:
        """The statuses of final (non-1xx) responses."""
        return tuple(s for s in self.statuses if s >= 200)

    def param(self, test_kind: str) -> pytest.param:
        """This case as a pytest parameter, xfail when its bug breaks ``test_kind``."""
        marks = []
        if test_kind in self.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=f"server bug: {self.bug}"))
        return pytest.param(self, id=self.id, marks=marks)


def parse_expect(text: str) -> dict[str, str]:
    """``key: value`` lines of an .expect file; ``#`` lines are comments."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"not a key: value line: {line!r}")
        out[key.strip()] = value.strip()
    return out


def load_corpus() -> list[Case]:
    """Every case under tests/requests, sorted by kind and name."""
    cases = []
    for kind in ("valid", "invalid"):
        for path in sorted((CORPUS / kind).glob("*.http")):
            expect = parse_expect(path.with_suffix(".expect").read_text("utf-8"))
            unknown = set(expect) - {"statuses", "methods", "close", "rejected", "bug", "xfail"}
            assert not unknown, f"{path}: unknown keys {unknown}"
            statuses = tuple(int(s) for s in expect["statuses"].split())
            methods = tuple(m.encode() for m in expect.get("methods", "").split()) \
                or (b"GET",) * len(statuses)
            assert len(methods) == len(statuses), path
            assert expect["close"] in ("yes", "no"), path
            xfail = frozenset(expect.get("xfail", "").split())
            assert xfail <= {"socket", "parse", "split"}, path
            assert not xfail or expect.get("bug"), f"{path}: xfail without bug"
            cases.append(Case(kind, path.stem, path.read_bytes(), statuses, methods,
                              expect["close"] == "yes",
                              int(expect["rejected"]) if "rejected" in expect else None,
                              expect.get("bug"), xfail))
    return cases


CASES = load_corpus()
