# tests/integration/test_static_files.py -- the backends as file servers: validators,
# conditional requests, byte ranges, folders, large files sent with sendfile.
#
# Strategy: one document root per module, made here with fixed content and a
# fixed mtime (so Last-Modified and the dates sent are known), served by a
# real backend of each model started through its CLI; every request goes on
# a fresh connection over 127.0.0.1 and every answer is parsed from the raw
# bytes, which must hold exactly one response (so a body on a 304 or a HEAD,
# or a wrong Content-Length, shows up as stray bytes).  Each rule of RFC 9110
# 13 and 14 the backends promise is asked of both models; ranges are probed
# at the file's edges and on a 0-byte file.  Large files (above the memory
# cache's limit) must be sent by sendfile: the kernel counts bytes copied by
# sendfile in the process's /proc/PID/io ``wchar`` and bytes written by
# send() not at all, so the server's ``wchar`` growing by the body's size
# shows which path was taken.  A client that stops reading a large file must
# not hold up another client of the async model (the sendfile waits in the
# hub).  nginx, where installed, answers the same requests on the same files
# and must agree on status and Content-Range (its own entity tags are used
# for its conditional requests).  Timeouts are hang protection only.
from __future__ import annotations

import io
import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from gservers.backend.app import CACHE_LIMIT
from loadtests import procstats
from loadtests.supervisor import Supervisor
from tests.support import (
    Reply,
    Server,
    connect,
    exchange,
    free_ports,
    parse_responses,
    read_all,
    run_cli,
    start_backend,
    strip_date,
)

MODELS = ("async", "thread")
HANG = 10.0  # seconds; hang protection only
MTIME = 1704164645  # 2024-01-02 03:04:05 UTC
MTIME_NS = MTIME * 1_000_000_000 + 123_456_789
SMALL = random.Random(1).randbytes(1000)
BIG = random.Random(2).randbytes(CACHE_LIMIT * 6 + 12345)  # above the cache limit


def http_date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


LAST_MODIFIED = http_date(MTIME)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The document root: small.txt, empty.txt, big.bin, folder/index.html, bare/."""
    site = tmp_path_factory.mktemp("site")
    (site / "small.txt").write_bytes(SMALL)
    (site / "empty.txt").write_bytes(b"")
    (site / "big.bin").write_bytes(BIG)
    (site / "folder").mkdir()
    (site / "folder" / "index.html").write_bytes(b"<p>index</p>\n")
    (site / "bare").mkdir()
    for path in site.rglob("*"):
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    os.chmod(site, 0o755)  # nginx may read it as another user
    return site


@pytest.fixture(scope="module")
def servers(root: Path) -> Iterator[dict[str, Server]]:
    started = {model: start_backend(model, "--root", str(root)) for model in MODELS}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(params=MODELS)
def server(request: pytest.FixtureRequest, servers: dict[str, Server]) -> Server:
    return servers[request.param]


def raw_request(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ask(port: int, path: str, *headers: str, method: str = "GET") -> Reply:
    """One request on a fresh connection; the bytes received must be exactly one response."""
    raw = exchange(port, raw_request(path, *headers, method=method), timeout=HANG)
    replies = parse_responses(raw, [method.encode()])
    assert len(replies) == 1 and replies[0].raw == raw, raw[:500]
    return replies[0]


def etag(st: os.stat_result) -> bytes:
    return b'"%x-%x-%x"' % (st.st_ino, st.st_size, st.st_mtime_ns)


# -- validators ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["small.txt", "big.bin", "empty.txt"])
def test_validators_on_200(server: Server, root: Path, name: str) -> None:
    st = os.stat(root / name)
    for method in ("GET", "HEAD"):
        reply = ask(server.port, f"/{name}", method=method)
        assert reply.status == 200
        assert reply.header("ETag") == etag(st)  # inode, size, mtime_ns in hex: strong
        assert reply.header("Last-Modified") == LAST_MODIFIED.encode()
        assert reply.header("Accept-Ranges") == b"bytes"
        assert reply.header("Content-Length") == b"%d" % st.st_size
        assert reply.header("Cache-Control") is None  # not configured
        assert reply.body == (b"" if method == "HEAD" else (root / name).read_bytes())


def test_a_changed_file_gets_new_validators_and_content(server: Server, root: Path) -> None:
    path = root / f"changing-{server.port}.txt"
    path.write_bytes(b"one\n")
    first = ask(server.port, f"/{path.name}")
    assert first.body == b"one\n" and first.header("ETag") == etag(os.stat(path))
    os.utime(path, ns=(MTIME_NS, MTIME_NS))  # same size, other mtime
    second = ask(server.port, f"/{path.name}", f"If-None-Match: {first.header('ETag').decode()}")
    assert second.status == 200 and second.header("ETag") == etag(os.stat(path))
    replacement = root / f"replacement-{server.port}.txt"
    replacement.write_bytes(b"two\n")  # same size and mtime, another inode
    os.utime(replacement, ns=(MTIME_NS, MTIME_NS))
    os.replace(replacement, path)
    third = ask(server.port, f"/{path.name}")
    assert third.body == b"two\n" and third.header("ETag") == etag(os.stat(path))
    assert third.header("ETag") != second.header("ETag")


# -- conditional requests (RFC 9110 13.1, in 13.2.2's order) -----------------------

def conditional_cases(tag: str) -> list[tuple[list[str], int]]:
    """(headers, status) for small.txt whose entity tag is ``tag``."""
    weak, other = f"W/{tag}", '"other"'
    before, after = http_date(MTIME - 1), http_date(MTIME + 3600)
    return [
        ([f"If-Match: {tag}"], 200),
        (["If-Match: *"], 200),
        ([f"If-Match: {other}, {tag}"], 200),
        ([f"If-Match: {other}"], 412),
        ([f"If-Match: {weak}"], 412),                       # strong comparison
        ([f"If-Unmodified-Since: {before}"], 412),
        ([f"If-Unmodified-Since: {LAST_MODIFIED}"], 200),
        ([f"If-Unmodified-Since: {after}"], 200),
        (["If-Unmodified-Since: yesterday"], 200),          # not a date: ignored
        ([f"If-Match: {tag}", f"If-Unmodified-Since: {before}"], 200),  # If-Match wins
        ([f"If-None-Match: {tag}"], 304),
        ([f"If-None-Match: {weak}"], 304),                  # weak comparison
        (["If-None-Match: *"], 304),
        ([f"If-None-Match: {other}, {tag}"], 304),
        ([f"If-None-Match: {other}", f"If-None-Match: {weak}"], 304),  # two fields, one list
        ([f"If-None-Match: {other}"], 200),
        ([f"If-Modified-Since: {LAST_MODIFIED}"], 304),
        ([f"If-Modified-Since: {after}"], 304),
        ([f"If-Modified-Since: {before}"], 200),
        (["If-Modified-Since: Tuesday, 02-Jan-24 03:04:05 GMT"], 304),  # RFC 850
        (["If-Modified-Since: Tue Jan  2 03:04:05 2024"], 304),         # asctime
        (["If-Modified-Since: Tue, 02 Jan 2024 03:04:05 UTC"], 200),    # not a date
        (["If-Modified-Since: Tue, 31 Feb 2024 03:04:05 GMT"], 200),    # no such day
        ([f"If-None-Match: {other}", f"If-Modified-Since: {after}"], 200),  # INM wins
        ([f"If-Match: {other}", f"If-None-Match: {tag}"], 412),
    ]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_conditional_requests(server: Server, root: Path, method: str) -> None:
    tag = etag(os.stat(root / "small.txt")).decode()
    for headers, status in conditional_cases(tag):
        reply = ask(server.port, "/small.txt", *headers, method=method)
        assert reply.status == status, (headers, reply.raw[:300])
        if status == 304:
            assert reply.header("ETag") == tag.encode()
            assert reply.header("Last-Modified") == LAST_MODIFIED.encode()
            assert reply.header("Content-Length") is None and reply.body == b""
        elif status == 200:
            assert reply.body == (SMALL if method == "GET" else b"")


def test_not_modified_leaves_the_connection_usable(server: Server, root: Path) -> None:
    tag = etag(os.stat(root / "small.txt")).decode()
    data = (raw_request("/small.txt", f"If-None-Match: {tag}").replace(b"Connection: close\r\n",
                                                                      b"")
            + raw_request("/small.txt", f"If-None-Match: {tag}", method="HEAD")
            .replace(b"Connection: close\r\n", b"") + raw_request("/small.txt"))
    raw = exchange(server.port, data, timeout=HANG)
    replies = parse_responses(raw, [b"GET", b"HEAD", b"GET"])
    assert [r.status for r in replies] == [304, 304, 200]
    assert b"".join(r.raw for r in replies) == raw and replies[2].body == SMALL


# -- ranges (RFC 9110 14) ---------------------------------------------------------

N = len(SMALL)
RANGE_CASES = [  # (Range value, status, (first, last) of a 206)
    ("bytes=0-0", 206, (0, 0)),
    (f"bytes={N - 1}-{N - 1}", 206, (N - 1, N - 1)),
    ("bytes=-1", 206, (N - 1, N - 1)),
    (f"bytes={N - 1}-", 206, (N - 1, N - 1)),
    ("bytes=10-19", 206, (10, 19)),
    ("bytes=0-99999", 206, (0, N - 1)),
    ("bytes=-5000", 206, (0, N - 1)),
    ("BYTES=0-0", 206, (0, 0)),                  # the unit is case-insensitive
    ("bytes=, 3-4 ,", 206, (3, 4)),              # empty list elements
    (f"bytes={N}-", 416, None),
    (f"bytes={N}-{N + 10}", 416, None),
    ("bytes=-0", 416, None),
    ("bytes=1" + "0" * 30 + "-", 416, None),     # more digits than any size
    (f"bytes={N}-,{N + 5}-", 416, None),         # several, none satisfiable
    ("bytes=0-1,5-6", 200, None),                # several ranges: the whole file
    ("bytes=10-5", 200, None),                   # malformed: ignored
    ("bytes=abc", 200, None),
    ("bytes=", 200, None),
    ("bytes 0-1", 200, None),
    ("bytes=1-2-3", 200, None),
    ("items=0-1", 200, None),
]


def check_range(reply: Reply, status: int, span: tuple[int, int] | None, content: bytes,
                method: str) -> None:
    assert reply.status == status, reply.raw[:300]
    size = len(content)
    if status == 206:
        assert span is not None
        first, last = span
        assert reply.header("Content-Range") == b"bytes %d-%d/%d" % (first, last, size)
        assert reply.header("Content-Length") == b"%d" % (last - first + 1)
        assert reply.header("ETag") and reply.header("Last-Modified")
        assert reply.body == (b"" if method == "HEAD" else content[first:last + 1])
    elif status == 416:
        assert reply.header("Content-Range") == b"bytes */%d" % size
    else:
        assert reply.header("Content-Range") is None
        assert reply.body == (b"" if method == "HEAD" else content)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_ranges(server: Server, method: str) -> None:
    for value, status, span in RANGE_CASES:
        check_range(ask(server.port, "/small.txt", f"Range: {value}", method=method),
                    status, span, SMALL, method)


def test_ranges_on_an_empty_file(server: Server) -> None:
    plain = ask(server.port, "/empty.txt")
    assert (plain.status, plain.header("Content-Length"), plain.body) == (200, b"0", b"")
    for value in ("bytes=0-0", "bytes=0-", "bytes=-1"):
        for method in ("GET", "HEAD"):
            check_range(ask(server.port, "/empty.txt", f"Range: {value}", method=method),
                        416, None, b"", method)


def test_if_range(server: Server, root: Path) -> None:
    tag = etag(os.stat(root / "small.txt")).decode()
    cases = [(tag, 206), (LAST_MODIFIED, 206), ('"other"', 200), (f"W/{tag}", 200),
             (http_date(MTIME - 1), 200), ("soon", 200)]
    for value, status in cases:
        reply = ask(server.port, "/small.txt", "Range: bytes=5-9", f"If-Range: {value}")
        check_range(reply, status, (5, 9), SMALL, "GET")
    alone = ask(server.port, "/small.txt", f"If-Range: {tag}")  # without Range: nothing
    assert alone.status == 200 and alone.body == SMALL


# -- folders, and what stays as it was ---------------------------------------------

@pytest.mark.parametrize("target, location", [
    ("/folder", b"/folder/"), ("/folder?a=1&b=%20", b"/folder/?a=1&b=%20"),
    ("/bare", b"/bare/"), ("http://test/folder?q", b"/folder/?q"),
    ("/fol%64er", b"/fol%64er/"),
])
def test_a_folder_without_its_slash_is_redirected(server: Server, target: str,
                                                  location: bytes) -> None:
    for method in ("GET", "HEAD"):
        reply = ask(server.port, target, method=method)
        assert reply.status == 301 and reply.header("Location") == location


def test_folders_serve_their_index_and_nothing_else(server: Server) -> None:
    index = ask(server.port, "/folder/")
    assert index.status == 200 and index.body == b"<p>index</p>\n"
    assert index.header("Content-Type") == b"text/html; charset=utf-8"
    assert ask(server.port, "/folder/index.html").body == index.body
    assert ask(server.port, "/bare/").status == 404  # no index.html: no listing
    assert ask(server.port, "/small.txt/").status == 404  # a file is not a folder


def test_post_health_and_work_stay(server: Server) -> None:
    post = exchange(server.port, b"POST /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                                 b"Range: bytes=0-0\r\nConnection: close\r\n\r\nhi", timeout=HANG)
    (reply,) = parse_responses(post, [b"POST"])
    assert (reply.status, reply.body) == (200, b"OK\n")
    assert ask(server.port, "/health").body == b"ok\n"
    assert ask(server.port, "/work/cpu?ms=0").status == 200


# -- large files: sendfile ------------------------------------------------------------

def wchar(pid: int) -> int:
    """Bytes the process wrote through write()-like calls and sendfile, not send()."""
    with open(f"/proc/{pid}/io") as fh:
        return int(next(line for line in fh if line.startswith("wchar:")).split()[1])


@pytest.mark.parametrize("value, first, last", [
    (None, 0, len(BIG) - 1), ("bytes=1000-2500000", 1000, 2500000),
    ("bytes=-70000", len(BIG) - 70000, len(BIG) - 1),
    (f"bytes={CACHE_LIMIT}-", CACHE_LIMIT, len(BIG) - 1),
])
def test_a_large_file_goes_out_by_sendfile(server: Server, value: str | None, first: int,
                                           last: int) -> None:
    headers = [f"Range: {value}"] if value else []
    before = wchar(server.pid)
    reply = ask(server.port, "/big.bin", *headers)
    written = wchar(server.pid) - before
    assert reply.status == (206 if value else 200)
    assert reply.body == BIG[first:last + 1]
    assert written >= last - first + 1, "the body was not sent with sendfile"
    head = ask(server.port, "/big.bin", *headers, method="HEAD")
    assert head.status == reply.status and head.body == b""
    assert strip_date(head.raw) == strip_date(reply.raw[:len(head.raw)])


def test_large_files_keep_the_connection_framed(server: Server) -> None:
    keep = (raw_request("/big.bin", "Range: bytes=10-20").replace(b"Connection: close\r\n", b"")
            + raw_request("/big.bin").replace(b"Connection: close\r\n", b"")
            + raw_request("/small.txt"))
    raw = exchange(server.port, keep, timeout=HANG)
    replies = parse_responses(raw, [b"GET"] * 3)
    assert [r.status for r in replies] == [206, 200, 200]
    assert [r.body for r in replies] == [BIG[10:21], BIG, SMALL]
    assert b"".join(r.raw for r in replies) == raw


def test_a_stalled_large_download_holds_up_no_one(server: Server) -> None:
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    stalled.settimeout(HANG)
    stalled.connect(("127.0.0.1", server.port))
    with stalled:
        stalled.sendall(raw_request("/big.bin"))
        time.sleep(0.3)  # the server is now waiting for the stalled client to read
        other = ask(server.port, "/small.txt")
        assert other.status == 200 and other.body == SMALL
        raw = read_all(stalled, HANG)
    (reply,) = parse_responses(raw, [b"GET"])
    assert reply.body == BIG


def test_a_file_that_shrinks_while_sent_closes_the_connection(server: Server,
                                                             root: Path) -> None:
    """The head promised more bytes than are left: the connection must close
    (the client sees a short body and EOF), not wait for the next request."""
    path = root / f"shrinking-{server.port}.bin"
    path.write_bytes(BIG)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(HANG)
    stalled.connect(("127.0.0.1", server.port))
    with stalled:
        stalled.sendall(b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % path.name.encode())  # keep-alive
        time.sleep(0.3)  # the server now waits for the client to read
        os.truncate(path, CACHE_LIMIT)
        chunks, closed = [], False
        while not closed:
            try:
                block = stalled.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            chunks.append(block)
            closed = not block
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nContent-Length: %d\r\n" % len(BIG) in head
    assert closed, "the connection stayed open after a short body"
    # (sendfile hands the kernel page-cache pages: what was queued past the
    # new end may arrive changed, as with any server using sendfile)
    assert len(body) < len(BIG) and body[:CACHE_LIMIT] == BIG[:min(len(body), CACHE_LIMIT)]


def test_greensocket_sendfile_falls_back_to_reads() -> None:
    """Where os.sendfile refuses (no descriptor; /proc/self/cmdline gives
    EINVAL), GreenSocket.sendfile reads and sends the same bytes."""
    from gservers.net.greensock import GreenSocket
    cmdline = Path("/proc/self/cmdline").read_bytes()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = connect(listener.getsockname()[1])
        accepted, _ = listener.accept()
        green = GreenSocket(accepted)
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(read_all(client, HANG)))
        reader.start()
        try:
            assert green.sendfile(io.BytesIO(BIG), 1000, 300_000) == 300_000
            with open("/proc/self/cmdline", "rb") as fh:
                assert green.sendfile(fh, 2, None) == len(cmdline) - 2
        finally:
            green.close()
            reader.join(HANG)
            client.close()
    assert received == [BIG[1000:301000] + cmdline[2:]]


# -- both models, the cache-max-age setting, nginx ---------------------------------

def test_both_models_answer_the_same_bytes(servers: dict[str, Server], root: Path) -> None:
    tag = etag(os.stat(root / "small.txt")).decode()
    requests = [raw_request(path, *headers, method=method)
                for method in ("GET", "HEAD")
                for path, headers in [
                    ("/small.txt", []), ("/empty.txt", []), ("/folder", []), ("/bare/", []),
                    ("/folder/", []), ("/small.txt", [f"If-None-Match: {tag}"]),
                    ("/small.txt", ['If-Match: "x"']), ("/small.txt", ["Range: bytes=-3"]),
                    ("/small.txt", ["Range: bytes=5000-"]), ("/big.bin", ["Range: bytes=9-99"]),
                    ("/small.txt", ["Range: bytes=0-1", f"If-Range: {LAST_MODIFIED}"]),
                    ("/empty.txt", ["Range: bytes=0-"]), ("/small.txt/", [])]]
    for data in requests:
        answers = {strip_date(exchange(s.port, data, timeout=HANG)) for s in servers.values()}
        assert len(answers) == 1, (data, answers)


def test_cache_max_age(root: Path, tmp_path: Path) -> None:
    config = tmp_path / "backend.toml"
    config.write_text("cache-max-age = 120\n")
    started = [start_backend("async", "--root", str(root), "--cache-max-age", "120"),
               start_backend("thread", "--root", str(root), "--config", str(config))]
    try:
        for server in started:
            full = ask(server.port, "/small.txt")
            tag = full.header("ETag").decode()
            part = ask(server.port, "/big.bin", "Range: bytes=0-0")
            same = ask(server.port, "/small.txt", f"If-None-Match: {tag}")
            assert [r.status for r in (full, part, same)] == [200, 206, 304]
            for reply in (full, part, same):
                assert reply.header("Cache-Control") == b"max-age=120"
            assert ask(server.port, "/nope").header("Cache-Control") is None
    finally:
        for server in started:
            server.stop()
    result = run_cli("gservers.backend", "0", "--cache-max-age", "-1")
    assert result.returncode == 2 and "--cache-max-age" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def nginx_program() -> str | None:
    found = shutil.which("nginx")
    return found or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def nginx_static_config(folder: Path, root: Path, port: int) -> str:
    """A minimal nginx serving ``root`` on ``port``, in the foreground, every
    path under ``folder``; dates compared as RFC 9110 says, relative Location."""
    temp = " ".join(f"{kind}_temp_path {folder}/{kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    {temp}
    types {{ text/plain txt; text/html html; }}
    default_type application/octet-stream;
    absolute_redirect off;
    if_modified_since before;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /health {{ return 200 "ok\\n"; }}
    }}
}}
"""


def comparison_requests(tag: str) -> list[tuple[str, list[str]]]:
    """(path, headers) both servers must answer alike; ``tag`` is each one's own ETag."""
    before, after = http_date(MTIME - 1), http_date(MTIME + 3600)
    small = [[f"If-None-Match: {tag}"], ['If-None-Match: "x"'], ["If-None-Match: *"],
             [f"If-None-Match: W/{tag}"], [f"If-Match: {tag}"], ['If-Match: "x"'],
             [f"If-Match: W/{tag}"], [f"If-Modified-Since: {LAST_MODIFIED}"],
             [f"If-Modified-Since: {before}"], [f"If-Modified-Since: {after}"],
             [f"If-Unmodified-Since: {before}"], [f"If-Unmodified-Since: {LAST_MODIFIED}"],
             ["If-Modified-Since: garbage"], ['If-None-Match: "x"', f"If-Modified-Since: {after}"],
             ["Range: items=0-1"], [f"Range: bytes={N}-,{N + 5}-"],
             ["Range: bytes=0-0", f"If-Range: {tag}"], ["Range: bytes=0-0", 'If-Range: "x"'],
             ["Range: bytes=0-0", f"If-Range: W/{tag}"],
             ["Range: bytes=0-0", f"If-Range: {LAST_MODIFIED}"],
             ["Range: bytes=0-0", f"If-Range: {before}"]]
    # Left out where nginx differs by choice: empty list elements in Range
    # (RFC 9110 5.6.1 allows them; nginx answers 416), malformed and multiple
    # ranges (nginx: 416 and a multipart 206), ranges on a 0-byte file (nginx: 200).
    small += [[f"Range: {value}"] for value, status, _ in RANGE_CASES
              if status != 200 and not value.startswith("bytes=,")]
    return ([("/small.txt", h) for h in [[]] + small]
            + [("/big.bin", h) for h in ([], ["Range: bytes=1000-2000"], ["Range: bytes=-5"])]
            + [("/folder", []), ("/folder?x=1", []), ("/folder/", []), ("/small.txt/", [])])


def test_nginx_agrees_on_status_and_content_range(root: Path, tmp_path: Path) -> None:
    program = nginx_program()
    if program is None:
        pytest.skip("nginx is not installed: the comparison with it is skipped")
    (port,) = free_ports(1)
    folder = tmp_path / "nginx"
    folder.mkdir()
    (folder / "nginx.conf").write_text(nginx_static_config(folder, root, port))
    with Supervisor(str(tmp_path)) as sup:
        nginx = sup.start("nginx", [program, "-p", str(folder), "-c", str(folder / "nginx.conf"),
                                    "-e", str(folder / "error.log")], port, timeout=HANG)
        ours = sup.backend(0, "async", "--root", str(root))
        tags = {s.port: ask(s.port, "/small.txt").header("ETag").decode() for s in (ours, nginx)}
        for method in ("GET", "HEAD"):
            for path, headers in comparison_requests("{tag}"):
                seen = []
                for server in (ours, nginx):
                    sent = [h.replace("{tag}", tags[server.port]) for h in headers]
                    reply = ask(server.port, path, *sent, method=method)
                    seen.append((reply.status, reply.header("Content-Range"),
                                 reply.header("Location")))
                assert seen[0] == seen[1], (method, path, headers, seen)


# -- the memory cache is bounded ---------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_the_memory_cache_stays_within_file_cache_bytes(model: str, tmp_path: Path) -> None:
    """200 files of 512 KiB (100 MiB, each small enough to be held) through
    a backend allowed 8 MiB: every answer is whole and right, and the
    process does not grow by the files it served (held all, it would by
    100 MiB)."""
    files = {f"f{i}.bin": random.Random(i).randbytes(512 * 1024) for i in range(200)}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    backend = start_backend(model, "--root", str(tmp_path), "--file-cache-bytes",
                            str(8 * 1024 * 1024))
    try:
        assert ask(backend.port, "/f0.bin").body == files["f0.bin"]
        before = procstats.rss_kb(backend.pid)
        for _ in range(2):  # the second pass finds the first files dropped, and reloads them
            for name, content in files.items():
                reply = ask(backend.port, f"/{name}")
                assert reply.status == 200 and reply.body == content, name
        grown = procstats.rss_kb(backend.pid) - before
        assert grown < 40 * 1024, f"grew by {grown} KiB serving 100 MiB with an 8 MiB cache"
    finally:
        backend.stop()
