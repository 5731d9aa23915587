# lb/config.py -- the balancer's settings.
#
# Strategy: one frozen dataclass, each field documented once through
# ``gservers.settings.setting`` (help, value parser, default); the CLI flags
# and the TOML keys are both generated from it by ``lb/__main__.py``.  Values
# are checked when parsed (addresses, weights, durations), cross-field rules
# in ``__post_init__``; every error names the setting.
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from gservers.settings import (
    backlog_setting,
    boolean,
    choice,
    fraction,
    grace_setting,
    header_timeout_setting,
    keepalive_timeout_setting,
    log_level_setting,
    non_negative_int,
    positive_int,
    seconds,
    setting,
)
from lb.hashkey import HashKey, hash_key
from lb.policies import POLICIES

_ADDRESS = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Address:
    """A host and port; ``weight`` and ``tls`` (an https:// backend) matter
    only for backends."""

    host: str
    port: int
    weight: int = 1
    tls: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def address(value: Any) -> Address:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``)."""
    match = _ADDRESS.match(str(value).strip())
    if not match:
        raise ValueError("expected HOST:PORT")
    port = int(match.group("port"))
    if not 0 <= port <= 65535:
        raise ValueError("a port is 0 to 65535")
    return Address(match.group("v6") or match.group("host"), port)


def backend_address(value: Any) -> Address:
    """``[http://|https://]HOST:PORT[=WEIGHT]``, weight a whole number >= 1;
    https:// makes the connections to it TLS."""
    text = str(value).strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() not in ("http", "https"):
            raise ValueError("a backend URL starts http:// or https://")
        text = rest
    weight = 1
    if "=" in text:
        text, _, raw = text.rpartition("=")
        try:
            weight = int(raw)
        except ValueError:
            raise ValueError("weight must be a whole number") from None
        if not 1 <= weight <= 1000:
            raise ValueError("weight must be 1 to 1000")
    where = address(text)
    if where.port == 0:
        raise ValueError("a backend needs a real port")
    return Address(where.host, where.port, weight, sep != "" and scheme.lower() == "https")


def readable_file(value: Any) -> str:
    """The path of a file this process can read."""
    path = str(value)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    return path


def optional_address(value: Any) -> Address | None:
    """``HOST:PORT``, or ``off``."""
    if str(value).strip().lower() in ("off", "none", ""):
        return None
    return address(value)


def token(value: Any) -> str:
    """An admin token: 8 or more printable characters, no spaces."""
    text = str(value)
    if len(text) < 8 or not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError("a token is 8 or more printable characters without spaces")
    return text


def loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def policy_name(value: Any) -> str:
    """A registered balancing policy."""
    name = str(value)
    if name not in POLICIES:
        raise ValueError(f"unknown policy; choose one of {', '.join(sorted(POLICIES))}")
    return name


DEFAULT_BACKENDS = tuple(Address("127.0.0.1", port) for port in range(9002, 9006))


@dataclass(frozen=True)
class LBConfig:
    """Everything one balancer process needs to know."""

    listen: Address = setting(Address("127.0.0.1", 44444), "address to listen on",
                              parse=address, metavar="HOST:PORT")
    backend: tuple[Address, ...] = setting(
        DEFAULT_BACKENDS, "a backend, [https://]HOST:PORT[=WEIGHT] (https:// for TLS to it); "
        "repeat the flag for each one (replaces the defaults)", parse=backend_address,
        metavar="[https://]HOST:PORT[=W]", repeat=True)
    policy: str = setting("round_robin", "balancing policy: " + ", ".join(sorted(POLICIES)),
                          parse=policy_name, metavar="NAME")
    hash_key: HashKey = setting(HashKey(), "what consistent_hash hashes on: client (its "
                                "address), header:NAME, cookie:NAME, uri (path and query) or "
                                "path; a request without it falls back to client",
                                parse=hash_key, metavar="KEY")
    workers: int = setting(1, "worker processes sharing the port (SO_REUSEPORT)",
                           parse=positive_int, metavar="N")
    max_connections: int = setting(10000, "client connections served at once per worker; "
                                   "beyond it the balancer stops accepting", parse=positive_int,
                                   metavar="N")
    backlog: int = backlog_setting(4096)
    connect_timeout: float = setting(1.0, "seconds to connect to a backend (then the next one)",
                                     parse=seconds, metavar="SECONDS")
    response_timeout: float = setting(10.0, "seconds to wait for a backend's response to start, "
                                      "and for each pause within it (then 504)",
                                      parse=seconds, metavar="SECONDS")
    header_timeout: float = header_timeout_setting()
    send_timeout: float = setting(60.0, "seconds a client may leave a response unread "
                                  "before its connection is dropped",
                                  parse=seconds, metavar="SECONDS")
    keepalive_timeout: float = keepalive_timeout_setting()
    pool_size: int = setting(256, "idle keep-alive connections kept per backend",
                             parse=non_negative_int, metavar="N")
    max_per_backend: int = setting(64, "requests in flight to one backend at once; more "
                                   "wait for one to finish, up to --response-timeout "
                                   "(0: no limit)", parse=non_negative_int, metavar="N")
    pool_idle_timeout: float = setting(10.0, "seconds an idle backend connection is kept "
                                       "(keep it below the backends' keep-alive timeout)",
                                       parse=seconds, metavar="SECONDS")
    retries: int = setting(2, "further backends tried for one request", parse=non_negative_int,
                           metavar="N")
    retry_budget: float = setting(0.2, "retries allowed as a share of requests, plus 10/s "
                                  "(0: no retries)",
                                  parse=fraction, metavar="RATIO")
    health_interval: float = setting(1.0, "seconds between active health checks (GET /health)",
                                     parse=seconds, metavar="SECONDS")
    health_timeout: float = setting(1.0, "seconds a health check may take", parse=seconds,
                                    metavar="SECONDS")
    health_path: str = setting("/health", "path the health checks request", parse=str,
                               metavar="PATH")
    rise: int = setting(2, "passing checks that bring a down backend back", parse=positive_int,
                        metavar="N")
    fall: int = setting(2, "failing checks that take a backend down", parse=positive_int,
                        metavar="N")
    eject_failures: int = setting(3, "consecutive request failures that eject a backend",
                                  parse=positive_int, metavar="N")
    eject_time: float = setting(5.0, "seconds an ejected backend is left out", parse=seconds,
                                metavar="SECONDS")
    fail_on_5xx: bool = setting(True, "count a backend's 5xx answer as its failure (towards "
                                "ejection); a 4xx is the client's business and never counts",
                                parse=boolean)
    tunnel_timeout: float = setting(3600.0, "seconds an upgraded connection (WebSocket and "
                                    "the like) may stay idle in both directions before it is "
                                    "closed", parse=seconds, metavar="SECONDS")
    max_body_buffer: int = setting(65536, "request bodies up to this size are buffered, so "
                                   "the request can be retried; larger ones are streamed",
                                   parse=non_negative_int, metavar="BYTES")
    certfile: str | None = setting(None, "PEM certificate chain (and key): the listener "
                                   "speaks TLS (HTTPS) with it; None: plain HTTP",
                                   parse=readable_file, metavar="PEM")
    keyfile: str | None = setting(None, "PEM private key for --certfile; None: the key is "
                                  "in the certificate file", parse=readable_file, metavar="PEM")
    handshake_timeout: float = setting(10.0, "seconds a client has to complete the TLS "
                                       "handshake", parse=seconds, metavar="SECONDS")
    backend_ca: str | None = setting(None, "PEM CA certificates to verify https:// backends "
                                     "against; None: the system's CAs",
                                     parse=readable_file, metavar="PEM")
    backend_insecure: bool = setting(False, "do not verify https:// backends' certificates "
                                     "(testing only)", parse=boolean)
    admin: Address | None = setting(Address("127.0.0.1", 44445), "admin listener (the status "
                                    "page, /stats, /metrics, /backends), or off; beyond "
                                    "loopback it needs --admin-token",
                                    parse=optional_address, metavar="HOST:PORT")
    admin_token: str | None = setting(None, "a secret every admin request must carry as "
                                      "'Authorization: Bearer TOKEN' (also taken from "
                                      "$GSERVERS_LB_ADMIN_TOKEN, which keeps it out of ps)",
                                      parse=token, metavar="TOKEN")
    access_log: str = setting("off", "access log: a file path, - for stderr, or off", parse=str,
                              metavar="PATH")
    access_log_format: str = setting("text", "access log lines: text, or json (one object "
                                     "per line, for log shippers)",
                                     parse=choice("text", "json"), metavar="FORMAT")
    grace: float = grace_setting()
    log_level: str = log_level_setting()

    def __post_init__(self) -> None:
        if not self.backend:
            raise ValueError("--backend: at least one backend is needed")
        seen = set()
        for b in self.backend:
            key = (b.host, b.port)
            if key in seen:
                raise ValueError(f"--backend: {b} is given twice")
            seen.add(key)
        if self.admin is not None and (self.admin.host, self.admin.port) == (
                self.listen.host, self.listen.port) and self.listen.port != 0:
            raise ValueError("--admin: must differ from --listen")
        if self.admin is not None and self.admin_token is None and not loopback(self.admin.host):
            raise ValueError(f"--admin: {self.admin} is not a loopback address; anyone who "
                             "reaches it could drain the backends: set --admin-token (or "
                             "GSERVERS_LB_ADMIN_TOKEN), or keep it on 127.0.0.1")
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("--keyfile: needs --certfile")
