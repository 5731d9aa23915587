# gservers/backend/__main__.py -- the backend's command line.
#
# Strategy: this is the only place that parses arguments.  Flags come from the
# BackendConfig fields (one source of truth), are merged over an optional TOML
# file, and any bad value -- or a port already in use -- ends in one line on
# stderr and exit code 2, never a traceback.
from __future__ import annotations

import logging
import sys

from gservers.backend.config import BackendConfig
from gservers.net.listen import ListenError, raise_nofile_limit
from gservers.settings import ArgumentParser, ConfigError, add_arguments, build

PROG = "python -m gservers.backend"


def parser() -> ArgumentParser:
    """The argument parser, generated from BackendConfig."""
    p = ArgumentParser(
        prog=PROG,
        description="Serve a document root over HTTP/1.1 (keep-alive, pipelining) with the "
                    "async (gevent greenlet pool) or thread (one OS thread per connection) "
                    "model. Both answer byte for byte the same. GET /health answers 200.",
        epilog="Every flag can also be given in a TOML file (--config), with the flag's name "
               "as key, e.g. max-connections = 1000. Flags override the file.")
    p.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file")
    add_arguments(p, BackendConfig)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the chosen model; return the exit code."""
    p = parser()
    args = p.parse_args(argv)
    config_path = args.__dict__.pop("config", None)
    try:
        config = build(BackendConfig, args, config_path)
    except ConfigError as exc:
        p.error(str(exc))
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    raise_nofile_limit()
    from gservers.backend.models import run
    try:
        return run(config)
    except ListenError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
