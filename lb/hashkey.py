# lb/hashkey.py -- what consistent_hash hashes on (--hash-key).
#
# Strategy: a key is a small frozen value parsed once from the setting, and
# ``key_for`` reads it off a request head with no I/O: the client's address
# (the default; behind a NAT or another proxy every client shares one), a
# request header (e.g. a user or tenant id a front proxy sets), a cookie (a
# session), the whole target (path and query) or the path alone.  A request
# without the key falls back to the client's address, so it is still
# balanced consistently.  Only consistent_hash reads keys; the other
# policies get the client address, which costs nothing to compute.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gservers.http import Head, origin_form

KINDS = ("client", "header", "cookie", "uri", "path")


@dataclass(frozen=True)
class HashKey:
    """What a request is hashed on."""

    kind: str = "client"
    name: bytes = b""  #: the header or cookie name (lower-case header names)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name.decode()}" if self.name else self.kind


def hash_key(value: Any) -> HashKey:
    """``client``, ``header:NAME``, ``cookie:NAME``, ``uri`` or ``path``."""
    if isinstance(value, HashKey):
        return value
    text = str(value).strip()
    kind, sep, name = text.partition(":")
    if kind not in KINDS:
        raise ValueError("expected one of client, header:NAME, cookie:NAME, uri, path")
    if kind in ("header", "cookie"):
        if not name or any(c in name for c in " \t;,=:"):
            raise ValueError(f"{kind}: needs a name, e.g. {kind}:X-User")
        return HashKey(kind, (name.lower() if kind == "header" else name).encode("latin-1"))
    if sep:
        raise ValueError(f"{kind} takes no name")
    return HashKey(kind)


def _cookie(head: Head, name: bytes) -> bytes | None:
    for field, value in head.headers:
        if field.lower() != b"cookie":
            continue
        for pair in value.split(b";"):
            key, eq, got = pair.strip().partition(b"=")
            if eq and key == name:
                return got.strip(b'"')
    return None


def key_for(key: HashKey, head: Head, client: str) -> str:
    """The string ``head`` hashes to under ``key``; ``client`` when it lacks one."""
    kind = key.kind
    found: bytes | None = None
    if kind == "header":
        found = next((v for n, v in head.headers if n.lower() == key.name), None)
    elif kind == "cookie":
        found = _cookie(head, key.name)
    elif kind == "uri":  # an absolute-form target hashes as its origin-form
        found = origin_form(head.method, head.target)[0]
    elif kind == "path":
        found = origin_form(head.method, head.target)[0].split(b"?", 1)[0]
    if not found:
        return client
    return f"{kind}:{found.decode('latin-1')}"
