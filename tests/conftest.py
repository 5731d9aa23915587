# tests/conftest.py -- markers by kind of test, and real backends of each model.
#
# Strategy: a test's folder says its kind -- unit/ (no processes),
# integration/ (real servers over real sockets), system/ (load, faults,
# benchmarks, network namespaces) -- and is turned into a marker, so
# ``-m "not slow"`` leaves out every system test.
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Server, start_backend

KINDS = ("unit", "integration", "system")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its kind, and every system test ``slow``."""
    for item in items:
        parts = Path(str(item.path)).parts
        kind = next((k for k in KINDS if k in parts), None)
        if kind is not None:
            item.add_marker(kind)
        if kind == "system":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module", params=["async", "thread"])
def backend(request: pytest.FixtureRequest) -> Server:
    """A backend of each model, started through the real CLI on a free port."""
    server = start_backend(request.param)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def both_backends() -> dict[str, Server]:
    """One backend of each model, side by side."""
    servers = {model: start_backend(model) for model in ("async", "thread")}
    yield servers
    for server in servers.values():
        server.stop()
