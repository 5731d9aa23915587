# gservers/backend/files.py -- one file answered as a file server does: validators,
# conditional requests (RFC 9110 13) and byte ranges (RFC 9110 14).
#
# Strategy: pure functions over a FileEntry, no sockets and no clocks, so
# both server models give the same bytes.  An entry is made once per version
# of a file (the App re-validates it with one stat per request) and carries
# everything a plain GET needs already framed: its validators as bytes and
# the 200 and 304 Responses.  A request with none of the conditional or
# Range headers is answered with the prebuilt 200; the others go through
# ``answer``, which applies the preconditions in RFC 9110 13.2.2's order,
# then a single byte range.  Several ranges get the whole file (200), which
# RFC 9110 14.2 allows, unless none of them can be satisfied (416).  A
# malformed Range, If-Modified-Since or If-Unmodified-Since is ignored.
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate

from gservers.http import Head, Headers, HttpError
from gservers.http.responses import Response, error_response, header_lines

#: The request headers that make a file answer more than the prebuilt 200.
CONDITIONAL = frozenset({b"if-match", b"if-none-match", b"if-modified-since",
                         b"if-unmodified-since", b"range", b"if-range"})
PRECONDITION_FAILED = error_response(HttpError(412, "precondition failed"), close=False)
_TEXT = b"text/plain; charset=utf-8"
_UNSATISFIABLE = b"416 range not satisfiable\n"
_MOVED = b"301 moved permanently\n"
#: Digits beyond this many stand for "more than any file's size".
_MAX_DIGITS = 18

_DAYS = b"Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_MONTH_NAMES = b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_MONTHS = {name: i for i, name in enumerate(_MONTH_NAMES, 1)}
_MON = b"|".join(_MONTH_NAMES)
# The three forms of HTTP-date (RFC 9110 5.6.7): IMF-fixdate, RFC 850, asctime.
_IMF = re.compile(rb"(?:%s), (\d\d) (%s) (\d{4}) (\d\d):(\d\d):(\d\d) GMT" % (_DAYS, _MON))
_RFC850 = re.compile(rb"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, (\d\d)-(%s)-(\d\d) "
                     rb"(\d\d):(\d\d):(\d\d) GMT" % _MON)
_ASCTIME = re.compile(rb"(?:%s) (%s) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})" % (_DAYS, _MON))
_ENTITY_TAG = re.compile(rb'(?:W/)?"[^"]*"')
_RANGE_SPEC = re.compile(rb"(\d*)-(\d*)")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One version of a file, with its answers prebuilt."""

    path: str
    ino: int              #: identity: a file replaced under the same name differs here
    size: int             #: st_size when the entry was made (re-validation)
    mtime_ns: int
    length: int           #: bytes served (the body's length when held in memory)
    mtime: int            #: Last-Modified, in whole seconds
    etag: bytes           #: strong: ``"<inode>-<size>-<mtime_ns>"``, each in hex
    content_type: bytes
    validators: Headers   #: ETag, Last-Modified and Cache-Control (when configured)
    body: bytes | None    #: the content, or None for a file sent from disk
    full: Response        #: the 200
    not_modified: Response  #: the 304

    def matches(self, st: os.stat_result) -> bool:
        """Whether ``st`` (a fresh stat of ``path``) is still this version."""
        return (st.st_mtime_ns == self.mtime_ns and st.st_size == self.size
                and st.st_ino == self.ino)


def etag_of(st: os.stat_result) -> bytes:
    """A strong entity tag from the file's inode, size and mtime in nanoseconds (hex)."""
    return b'"%x-%x-%x"' % (st.st_ino, st.st_size, st.st_mtime_ns)


def make_entry(path: str, st: os.stat_result, content_type: bytes, body: bytes | None,
               cache_control: bytes | None = None) -> FileEntry:
    """The entry for the file at ``path`` as ``st`` describes it; ``body`` is
    its content when held in memory (its length then wins over st_size)."""
    etag = etag_of(st)
    mtime = st.st_mtime_ns // 1_000_000_000
    validators: Headers = ((b"ETag", etag),
                           (b"Last-Modified", formatdate(mtime, usegmt=True).encode("ascii")))
    if cache_control is not None:
        validators += ((b"Cache-Control", cache_control),)
    length = st.st_size if body is None else len(body)
    headers: Headers = ((b"Content-Type", content_type), (b"Content-Length", b"%d" % length),
                        (b"Accept-Ranges", b"bytes"), *validators)
    framed = header_lines(headers)  # the 200 and the 304 are framed once, not per request
    if body is None:
        full = Response(200, headers, path=path, count=length, framed=framed)
    else:
        full = Response(200, headers, body, framed=framed)
    not_modified = Response(304, validators, framed=header_lines(validators))
    return FileEntry(path, st.st_ino, st.st_size, st.st_mtime_ns, length, mtime, etag,
                     content_type, validators, body, full, not_modified)


def has_conditions(head: Head) -> bool:
    """Whether ``head`` carries a conditional or Range header (else: the 200)."""
    for name, _ in head.headers:
        if name.lower() in CONDITIONAL:
            return True
    return False


def answer(entry: FileEntry, head: Head) -> Response:
    """The answer to a GET or HEAD of ``entry`` with conditional or Range
    headers: 412, 304, 206, 416 or the 200 (RFC 9110 13.2.2's order)."""
    fields: dict[bytes, bytes] = {}
    for name, value in head.headers:
        name = name.lower()
        if name in CONDITIONAL:
            fields[name] = fields[name] + b", " + value if name in fields else value
    if_match = fields.get(b"if-match")
    if if_match is not None:
        if not tag_matches(if_match, entry.etag, weak=False):
            return PRECONDITION_FAILED
    elif b"if-unmodified-since" in fields:
        date = parse_http_date(fields[b"if-unmodified-since"])
        if date is not None and entry.mtime > date:
            return PRECONDITION_FAILED
    if_none_match = fields.get(b"if-none-match")
    if if_none_match is not None:
        if tag_matches(if_none_match, entry.etag, weak=True):
            return entry.not_modified
    elif b"if-modified-since" in fields:
        date = parse_http_date(fields[b"if-modified-since"])
        if date is not None and entry.mtime <= date:
            return entry.not_modified
    spec = fields.get(b"range")
    if spec is None or not if_range_holds(fields.get(b"if-range"), entry):
        return entry.full
    return ranged(entry, spec)


def tag_matches(value: bytes, etag: bytes, weak: bool) -> bool:
    """Whether an If-Match/If-None-Match list (or ``*``) names ``etag``:
    the weak comparison ignores ``W/``, the strong one never matches it."""
    if value.strip() == b"*":
        return True
    for tag in _ENTITY_TAG.findall(value):
        if tag == etag or (weak and tag[2:] == etag and tag.startswith(b"W/")):
            return True
    return False


def if_range_holds(value: bytes | None, entry: FileEntry) -> bool:
    """Whether Range may be honoured: no If-Range, or one naming the current
    entity tag (strongly) or a date equal to Last-Modified."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith((b'"', b"W/")):
        return value == entry.etag
    return parse_http_date(value) == entry.mtime


def ranged(entry: FileEntry, spec: bytes) -> Response:
    """The answer to ``Range: spec``: 206 for one satisfiable range, 416 when
    none is satisfiable, the 200 for a malformed header or several ranges."""
    ranges = parse_ranges(spec, entry.length)
    if ranges is None:
        return entry.full
    if not ranges:
        body = _UNSATISFIABLE
        return Response(416, ((b"Content-Type", _TEXT), (b"Content-Length", b"%d" % len(body)),
                              (b"Content-Range", b"bytes */%d" % entry.length)), body)
    if len(ranges) > 1:
        return entry.full
    first, last = ranges[0]
    count = last - first + 1
    headers: Headers = ((b"Content-Type", entry.content_type),
                        (b"Content-Length", b"%d" % count),
                        (b"Content-Range", b"bytes %d-%d/%d" % (first, last, entry.length)),
                        (b"Accept-Ranges", b"bytes"), *entry.validators)
    if entry.body is None:
        return Response(206, headers, path=entry.path, offset=first, count=count)
    return Response(206, headers, entry.body[first:last + 1])


def parse_ranges(spec: bytes, length: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges of a ``bytes=`` Range value over ``length``
    bytes, as (first, last) inclusive; None when the value is malformed or
    another unit (ignore the header), [] when no range is satisfiable."""
    unit, eq, ranges = spec.partition(b"=")
    if not eq or unit.strip().lower() != b"bytes":
        return None
    out: list[tuple[int, int]] = []
    found = False
    for part in ranges.split(b","):
        part = part.strip(b" \t")
        if not part:
            continue  # empty list elements are allowed (RFC 9110 5.6.1)
        match = _RANGE_SPEC.fullmatch(part)
        if match is None or match.group(1) == match.group(2) == b"":
            return None
        found = True
        first, last = _number(match.group(1)), _number(match.group(2))
        if first is None:  # -suffix: the last ``last`` bytes
            assert last is not None
            if last > 0 and length > 0:
                out.append((max(0, length - last), length - 1))
        elif last is not None and last < first:
            return None  # invalid range-spec: the whole header is ignored
        elif first < length:
            out.append((first, length - 1 if last is None else min(last, length - 1)))
    return out if found else None


def _number(digits: bytes) -> int | None:
    if not digits:
        return None
    return 10 ** _MAX_DIGITS if len(digits) > _MAX_DIGITS else int(digits)


def parse_http_date(value: bytes) -> int | None:
    """Seconds since the epoch for an HTTP-date in any of its three forms
    (RFC 9110 5.6.7), or None when ``value`` is not one.  A two-digit RFC 850
    year is 19yy from 70 on and 20yy below."""
    value = value.strip()
    if match := _IMF.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850.fullmatch(value):
        day, month, yy, hour, minute, second = match.groups()
        year = b"%d" % (int(yy) + (1900 if int(yy) >= 70 else 2000))
    elif match := _ASCTIME.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    try:
        when = datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute),
                        min(int(second), 59), tzinfo=UTC)
    except ValueError:
        return None
    return int(when.timestamp())


def folder_redirect(target: bytes) -> Response:
    """301 to the slashed form of a folder's request-target, query kept."""
    path, question, query = target.split(b"#", 1)[0].partition(b"?")
    lowered = path[:8].lower()
    if lowered.startswith((b"http://", b"https://")):  # absolute-form: keep the path
        slash = path.find(b"/", path.find(b"//") + 2)
        path = path[slash:] if slash >= 0 else b"/"
    location = path + b"/" + question + query
    return Response(301, ((b"Location", location), (b"Content-Type", _TEXT),
                          (b"Content-Length", b"%d" % len(_MOVED))), _MOVED)
