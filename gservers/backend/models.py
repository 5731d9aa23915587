# gservers/backend/models.py -- the registry of server models.
#
# Strategy: a model is a module with ``run(config) -> exit code``; the two
# differ only in how they spawn the shared connection handler.  Modules are
# imported by name on demand, so the thread model's process never imports
# gevent at all.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config names its model choices from MODELS
    from gservers.backend.config import BackendConfig

#: model name -> module implementing ``run(config)``
MODELS: dict[str, str] = {
    "async": "gservers.backend.async_model",
    "thread": "gservers.backend.thread_model",
}


def run(config: BackendConfig) -> int:
    """Run the server model ``config.model`` until it is stopped."""
    module = importlib.import_module(MODELS[config.model])
    return int(module.run(config))
