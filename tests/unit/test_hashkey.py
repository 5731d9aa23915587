# tests/unit/test_hashkey.py -- what consistent_hash hashes on, read off request heads.
#
# Strategy: lb.hashkey is pure: heads are parsed by the real RequestParser
# from raw bytes, and each --hash-key spelling must give the expected key,
# fall back to the client address when the request lacks it, and refuse bad
# spellings naming the problem.
from __future__ import annotations

import pytest

from gservers.http import Head, RequestParser
from lb.hashkey import HashKey, hash_key, key_for


def head(*lines: str, target: str = "/a/b?x=1") -> Head:
    raw = f"GET {target} HTTP/1.1\r\nHost: t\r\n" + "".join(f"{x}\r\n" for x in lines) + "\r\n"
    [event, *_] = RequestParser().feed(raw.encode())
    assert isinstance(event, Head)
    return event


@pytest.mark.parametrize(("spec", "lines", "want"), [
    ("client", ["X-User: 7"], "10.0.0.1"),
    ("header:X-User", ["X-User: 7"], "header:7"),
    ("header:x-user", ["X-USER: 7"], "header:7"),           # names are case-insensitive
    ("header:X-User", [], "10.0.0.1"),                       # absent: the client
    ("cookie:sid", ["Cookie: a=1; sid=abc; b=2"], "cookie:abc"),
    ("cookie:sid", ['Cookie: sid="q"'], "cookie:q"),
    ("cookie:sid", ["Cookie: sidx=1; a=sid"], "10.0.0.1"),   # only that exact name
    ("cookie:sid", ["Cookie: a=1", "Cookie: sid=z"], "cookie:z"),
    ("uri", [], "uri:/a/b?x=1"),
    ("path", [], "path:/a/b"),
])
def test_keys(spec: str, lines: list[str], want: str) -> None:
    assert key_for(hash_key(spec), head(*lines), "10.0.0.1") == want


def test_absolute_and_origin_form_of_one_uri_share_a_key() -> None:
    for spec in ("uri", "path"):
        assert (key_for(hash_key(spec), head(target="http://h.example/a/b?x=1"), "c")
                == key_for(hash_key(spec), head(target="/a/b?x=1"), "c"))


def test_the_same_path_with_other_queries_shares_a_path_key() -> None:
    a, b = head(target="/p?1"), head(target="/p?2")
    assert key_for(hash_key("path"), a, "c") == key_for(hash_key("path"), b, "c")
    assert key_for(hash_key("uri"), a, "c") != key_for(hash_key("uri"), b, "c")


@pytest.mark.parametrize(("spec", "why"), [
    ("host", "expected one of"), ("header:", "needs a name"), ("cookie", "needs a name"),
    ("header:a b", "needs a name"), ("uri:x", "takes no name")])
def test_bad_keys_are_refused(spec: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        hash_key(spec)


def test_round_trip_and_default() -> None:
    assert hash_key("header:X-User") == HashKey("header", b"x-user")
    assert str(hash_key("cookie:SID")) == "cookie:SID" and HashKey() == hash_key("client")
