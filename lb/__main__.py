# lb/__main__.py -- the balancer's command line: ``python -m lb``.
#
# Strategy: the only place that parses arguments.  Flags are generated from
# LBConfig (one source of truth) and merged over an optional TOML file; a bad
# value ends in one line and exit code 2.  With ``--workers 1`` this process
# is the worker; with more it becomes the supervisor, and each worker it
# starts runs this same module with the same arguments (told by environment
# which port the supervisor reserved and where to report ready).  The TLS
# files are loaded here once before anything starts, so a bad certificate,
# key or CA file is one line naming it (and exit 2), not a worker that dies.
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace

from gservers.net.listen import ListenError, raise_nofile_limit
from gservers.settings import ArgumentParser, ConfigError, add_arguments, build
from lb.config import Address, LBConfig
from lb.workers import (
    ADMIN_PORT_ENV,
    PORT_ENV,
    READY_ENV,
    RUN_DIR_ENV,
    WORKER_ENV,
    Supervisor,
)

PROG = "python -m lb"
#: Where --admin-token may come from instead (not shown by ps, unlike a flag).
TOKEN_ENV = "GSERVERS_LB_ADMIN_TOKEN"


def parser() -> ArgumentParser:
    """The argument parser, generated from LBConfig."""
    p = ArgumentParser(
        prog=PROG,
        description="A greenlet-pooled HTTP/1.1 load balancer. With no flags it listens on "
                    "127.0.0.1:44444 and balances over 127.0.0.1:9002-9005, per request, with "
                    "keep-alive connections to the backends, health checks, retries and "
                    "passive ejection. SIGTERM drains; SIGHUP re-reads --config.",
        epilog="Every flag can also be given in a TOML file (--config) with the flag's name as "
               "key, e.g. backend = [\"127.0.0.1:9002=2\", \"127.0.0.1:9003\"]; flags override "
               "the file.")
    p.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file")
    add_arguments(p, LBConfig)
    return p


def load(argv: list[str] | None) -> tuple[LBConfig, str | None]:
    """Parse ``argv`` (and the TOML file it names) into an LBConfig; a bad
    value raises ConfigError (usage errors still exit, as argparse does)."""
    args = parser().parse_args(argv)
    path = args.__dict__.pop("config", None)
    if "admin_token" not in vars(args) and os.environ.get(TOKEN_ENV):
        args.admin_token = os.environ[TOKEN_ENV]  # as if given as a flag
    return build(LBConfig, args, path), path


def main(argv: list[str] | None = None) -> int:
    """Run the balancer; return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        config, path = load(argv)
    except ConfigError as exc:
        parser().error(str(exc))
    worker_index = os.environ.get(WORKER_ENV)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(name)s" + (f"[{worker_index}]" if worker_index else "")
        + " %(levelname)s %(message)s")
    raise_nofile_limit()
    try:
        if worker_index is None:
            _check_tls(config)
        if config.workers > 1 and worker_index is None:
            return Supervisor(config, argv).run()
        return _worker(config, path, argv, worker_index is not None)
    except ListenError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a backend name that does not resolve
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def _check_tls(config: LBConfig) -> None:
    """Load the TLS files the settings name (raises ValueError naming the one
    at fault); warn loudly when backends' certificates go unchecked."""
    from gservers.net.tls import server_context
    from lb.upstream import backend_context
    if config.certfile:
        server_context(config.certfile, config.keyfile)
    if any(b.tls for b in config.backend):
        backend_context(config.backend_ca, not config.backend_insecure)
        if config.backend_insecure:
            logging.getLogger("lb").warning(
                "--backend-insecure: the certificates of https:// backends are NOT verified; "
                "anyone on the network path can pose as a backend")


def _worker(config: LBConfig, path: str | None, argv: list[str], supervised: bool) -> int:
    from lb.server import Worker
    ready: Callable[[], None] | None = None
    if supervised:
        config = _supervised_ports(config)
        fd = int(os.environ[READY_ENV])

        def report_ready() -> None:
            os.write(fd, b"1")
            os.close(fd)
        ready = report_ready

    def reload() -> LBConfig:
        new, _ = load(argv) if path else (config, None)
        return _supervised_ports(new) if supervised else new

    return Worker(config, reload if path else None, reuse_port=supervised, ready=ready,
                  run_dir=os.environ.get(RUN_DIR_ENV) if supervised else None,
                  index=int(os.environ.get(WORKER_ENV, "0"))).run()


def _supervised_ports(config: LBConfig) -> LBConfig:
    port = int(os.environ[PORT_ENV])
    config = replace(config, listen=Address(config.listen.host, port))
    if config.admin is not None:
        admin_port = int(os.environ[ADMIN_PORT_ENV])
        config = replace(config, admin=Address(config.admin.host, admin_port))
    return config


if __name__ == "__main__":
    sys.exit(main())
