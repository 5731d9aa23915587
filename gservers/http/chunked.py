# gservers/http/chunked.py -- where the request parser cuts the bytes it gives
# llhttp, and the chunk-size lines of a chunked body (RFC 9112 7.1), checked
# here and handed on to llhttp bare.
#
# Strategy: RFC 9112 7.1.1 allows BWS (optional spaces and tabs) around the
# ";" and "=" of a chunk extension, which llhttp refuses, and none of its
# leniency flags accepts exactly that: lenient_spaces_after_chunk_size lets
# "0 \r\n" through yet still refuses "5; a=b", and lenient_headers does not
# touch chunk lines.  So a chunked body goes through a ChunkLines, which cuts
# the stream at each chunk-size line, checks the line against the RFC's
# grammar -- 1*HEXDIG, then any number of
# BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ], then CRLF, so
# "0 \r\n" (space with no extension), a bare LF and an empty value stay
# refused -- and gives llhttp the size alone ("%x\r\n").  Extensions mean
# nothing to us: they are dropped.  Chunk data with its CRLF, and the
# trailer section, go to llhttp as they came, so llhttp still checks them.
# A chunk-size line may be at most 4096 bytes (Go's net/http limit); the
# trailer section may be as large as a head.
#
# For that llhttp must never read past a head into a chunked body, so Cuts
# hands the parser its bytes in pieces that end where a head or a body ends:
# a head ends at its first CRLFCRLF (llhttp, strict, accepts no bare CR or LF
# in a head; empty lines before a request are skipped), a Content-Length body
# after its length.  A request that is a single head, the common case, is
# one piece and costs one bytes.find.  A cut in the wrong place could only
# make llhttp read a chunked body itself, which is stricter, never laxer.
from __future__ import annotations

import re

from gservers.http.messages import HttpError

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*\r\n"
                   % (_TOKEN, _TOKEN, _QUOTED))
#: Longest chunk-size line, extensions and CRLF included.
MAX_LINE = 4096
_MAX_SIZE = 2 ** 64 - 1  # llhttp's own bound


class ChunkLines:
    """The bytes of one chunked body as llhttp is to see them: each chunk-size
    line checked and re-stated bare, everything else passed through."""

    __slots__ = ("_line", "_left", "_seam", "_trailer_bytes", "_max_trailer", "error")

    def __init__(self, max_trailer: int) -> None:
        self._line = b""                  #: a chunk-size line begun in an earlier feed
        self._left = 0                    #: chunk data and its CRLF still to pass
        self._seam: bytes | None = None   #: after the last chunk: the trailer's last bytes
        self._trailer_bytes = 0
        self._max_trailer = max_trailer
        #: Why the body is refused, once it is: the bytes before it are still
        #: returned, so that llhttp judges them first, as if fed them apart.
        self.error: HttpError | None = None

    def filter(self, data: bytes) -> tuple[bytes, bytes | None]:
        """``data`` re-stated for llhttp, up to the end of this body, and what
        follows the body's end (the next message's bytes) or None while the
        body goes on.  A malformed chunk-size line (400) or a trailer section
        over the limit (431) sets ``error`` and ends the bytes returned."""
        out: list[bytes] = []
        pos, end = 0, len(data)
        try:
            while pos < end:
                if self._left:  # chunk data, then its CRLF (llhttp checks it)
                    take = min(self._left, end - pos)
                    out.append(data[pos:pos + take])
                    self._left -= take
                    pos += take
                elif self._seam is not None:  # the trailer section, up to its empty line
                    done = self._trailer_end(data, pos)
                    if done < 0:
                        out.append(data[pos:])
                        break
                    out.append(data[pos:done])
                    return b"".join(out), data[done:]
                else:
                    pos = self._size_line(data, pos, out)
        except HttpError as exc:
            self.error = exc
        return b"".join(out), None

    def _size_line(self, data: bytes, pos: int, out: list[bytes]) -> int:
        """Take a chunk-size line (or the part of it in ``data``) from ``pos``;
        return the position after what was taken."""
        eol = data.find(b"\n", pos)
        line = self._line + (data[pos:] if eol < 0 else data[pos:eol + 1])
        if len(line) > MAX_LINE:
            raise HttpError(400, "chunk size line too long")
        if eol < 0:
            self._line = line
            return len(data)
        self._line = b""
        match = _LINE.fullmatch(line)
        if match is None:
            raise HttpError(400, "malformed chunk size line")
        size = int(match.group(1), 16)
        if size > _MAX_SIZE:
            raise HttpError(400, "chunk size overflow")
        out.append(b"%x\r\n" % size)
        if size:
            self._left = size + 2
        else:  # the last chunk: its line's CRLF may be the first half of the blank line
            self._seam = b"\r\n"
        return eol + 1

    def _trailer_end(self, data: bytes, pos: int) -> int:
        """Where the trailer section ends in ``data`` (past its blank line), or -1."""
        seam = self._seam or b""
        at = (seam + data[pos:pos + 3]).find(b"\r\n\r\n")  # a blank line across the seam
        if at >= 0:
            done = pos + at + 4 - len(seam)
        else:
            at = data.find(b"\r\n\r\n", pos)
            done = at + 4 if at >= 0 else -1
        if done >= 0:
            self._trailer_bytes += done - pos
        else:
            self._trailer_bytes += len(data) - pos
            self._seam = data[-3:] if len(data) - pos >= 3 else (seam + data[pos:])[-3:]
        if self._trailer_bytes > self._max_trailer:
            raise HttpError(431, "trailer section too large")
        return done


class Cuts:
    """Cuts a request stream into the pieces llhttp is fed: each ends at most
    where a head or a body ends, and a chunked body comes re-stated."""

    __slots__ = ("_chunks", "_body_left", "_tail", "_max_trailer", "error")

    def __init__(self, max_trailer: int) -> None:
        self._chunks: ChunkLines | None = None  #: in a chunked body
        self._body_left = 0                     #: of a Content-Length body
        self._tail = b""                        #: a head's last bytes, from an earlier feed
        self._max_trailer = max_trailer
        #: Why the last piece's chunked body is refused (after that piece).
        self.error: HttpError | None = None

    @property
    def idle(self) -> bool:
        """No body is being followed."""
        return self._chunks is None and not self._body_left

    def body(self, chunked: bool, length: int | None) -> None:
        """A head just ended (where the last piece did); its body comes next."""
        if chunked:
            self._chunks = ChunkLines(self._max_trailer)
        elif length:
            self._body_left = length

    def piece(self, data: bytes, in_head: bool) -> tuple[bytes, bytes]:
        """The first piece of ``data`` for llhttp, and the bytes after it;
        ``in_head``: a head began in an earlier piece.  A malformed chunked
        body sets ``error``: refuse it once llhttp had this piece."""
        if self._chunks is not None:
            piece, rest = self._chunks.filter(data)
            self.error = self._chunks.error
            if rest is None:
                return piece, b""
            self._chunks = None
            return piece, rest
        left = self._body_left
        if left:
            self._body_left = max(0, left - len(data))
            return data[:left], data[left:]
        end = -1
        if in_head:
            tail = self._tail
            at = (tail + data[:3]).find(b"\r\n\r\n")  # a blank line across the feeds
            if at >= 0:
                end = at + 4 - len(tail)
        if end < 0:
            start = 0
            if not in_head and data[0] in b"\r\n":  # empty lines before a request
                start = len(data) - len(data.lstrip(b"\r\n"))
            at = data.find(b"\r\n\r\n", start)
            if at < 0:
                self._tail = data[-3:] if len(data) >= 3 else (self._tail + data)[-3:]
                return data, b""
            end = at + 4
        if end < len(data):
            return data[:end], data[end:]
        return data, b""
