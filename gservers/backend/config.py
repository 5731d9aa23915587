# gservers/backend/config.py -- the backend's settings.
#
# Strategy: one frozen dataclass, each field documented once (help, parser,
# default) through ``settings.setting``; the CLI and the TOML file are both
# generated from it by the entry module.  Cross-field checks live in
# ``__post_init__`` and raise ValueError with a message naming the flag.
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gservers.backend.models import MODELS
from gservers.settings import (
    backlog_setting,
    choice,
    grace_setting,
    header_timeout_setting,
    keepalive_timeout_setting,
    log_level_setting,
    non_negative_int,
    port,
    positive_int,
    setting,
)

#: The sample site served when no --root is given.
DEFAULT_ROOT = str(Path(__file__).resolve().parent.parent / "site")


def directory(value: Any) -> str:
    """An existing directory, made absolute."""
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise ValueError("not a directory")
    return str(path.resolve())


@dataclass(frozen=True)
class BackendConfig:
    """Everything one backend process needs to know."""

    port: int = setting(9002, "TCP port to listen on (0 picks a free one)", parse=port,
                        positional=True, metavar="PORT")
    host: str = setting("127.0.0.1", "address to listen on", parse=str)
    model: str = setting("async", "server model: async (gevent greenlet pool) or thread "
                         "(one OS thread per connection)", parse=choice(*MODELS))
    root: str = setting(DEFAULT_ROOT, "document root served for GET and HEAD", parse=directory,
                        metavar="DIR")
    backlog: int = backlog_setting(2048, "large enough that c=1000 never overflows")
    max_connections: int = setting(4096, "connections served at once; beyond it the server "
                                   "stops accepting and the backlog holds the rest",
                                   parse=positive_int, metavar="N")
    keepalive_timeout: float = keepalive_timeout_setting()
    header_timeout: float = header_timeout_setting()
    max_body: int = setting(10 * 1024 * 1024, "largest request body accepted, in bytes (then 413)",
                            parse=positive_int, metavar="BYTES")
    cache_max_age: int | None = setting(None, "add Cache-Control: max-age=SECONDS to file "
                                        "responses (200, 206, 304); without it none is sent",
                                        parse=non_negative_int, metavar="SECONDS")
    file_cache_bytes: int = setting(64 * 1024 * 1024, "bytes of small files (1 MiB or less) "
                                    "kept in memory; past it the oldest are dropped (0: every "
                                    "file is read from disk)", parse=non_negative_int,
                                    metavar="BYTES")
    grace: float = grace_setting()
    log_level: str = log_level_setting()
