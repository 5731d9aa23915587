# tests/conftest.py -- fixtures: real backends of each model, per module.
from __future__ import annotations

import pytest

from tests.support import Server, start_backend


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
