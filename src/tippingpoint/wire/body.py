"""Sans-io HTTP/1.1 message bodies: fixed-length and chunked, one reader for both sides.

The server reads request bodies with it (``wire/http1.py``) and the load generator
response bodies (``wire/response.py``). The reader works on a caller's buffer from a
position and returns the position it stopped at; bytes it could not use yet (half a
chunk-size line) stay the caller's to keep. Body bytes are counted, never copied.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["BodyError", "BodyReader"]

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?")
_TRAILER_LINE = re.compile(_TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*\r\n")
_MAX_CHUNK_LINE: Final = 1024

FIXED: Final = 1
CHUNK_SIZE_LINE: Final = 2
CHUNK_DATA: Final = 3
CHUNK_CRLF: Final = 4
TRAILERS: Final = 5
DONE: Final = 7


class BodyError(Exception):
    """The body cannot be framed; ``status`` is the answer a server gives to it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BodyReader:
    """One body at a time: :meth:`fixed` or :meth:`chunked`, then :meth:`read` until
    :attr:`done`. ``max_body`` bounds the body, ``max_trailer`` the trailer section."""

    __slots__ = ("_trailer", "max_body", "max_trailer", "remaining", "state", "total")

    def __init__(self, max_body: int, max_trailer: int) -> None:
        self.max_body = max_body
        self.max_trailer = max_trailer
        self.state = DONE
        self.remaining = 0
        self.total = 0
        """Body bytes so far (chunk framing and trailers not included)."""
        self._trailer = 0

    @property
    def done(self) -> bool:
        return self.state == DONE

    def fixed(self, length: int) -> None:
        self.state = FIXED if length else DONE
        self.remaining = length
        self.total = 0

    def chunked(self) -> None:
        self.state = CHUNK_SIZE_LINE
        self.remaining = 0
        self.total = 0
        self._trailer = 0

    def read(self, buf: bytes, pos: int) -> int:
        """Consume what of ``buf[pos:]`` belongs to the body; return where it stopped.
        Short of ``len(buf)`` and not :attr:`done`: the rest is an incomplete line,
        to be given again with more bytes after it. Raises :class:`BodyError`."""
        n = len(buf)
        while True:
            state = self.state
            if state in (FIXED, CHUNK_DATA):
                take = min(n - pos, self.remaining)
                pos += take
                self.remaining -= take
                self.total += take
                if self.remaining:
                    return pos
                self.state = DONE if state == FIXED else CHUNK_CRLF
                if state == FIXED:
                    return pos
            elif state == CHUNK_SIZE_LINE:
                stop = buf.find(b"\r\n", pos)
                if stop < 0:
                    if n - pos > _MAX_CHUNK_LINE:
                        raise BodyError(400, "chunk size line too long")
                    return pos
                match = _CHUNK_SIZE.fullmatch(buf, pos, stop)
                if match is None:
                    raise BodyError(400, f"invalid chunk size line {buf[pos:stop][:30]!r}")
                size = int(match.group(1), 16)
                pos = stop + 2
                if size == 0:
                    self.state = TRAILERS
                    continue
                if self.total + size > self.max_body:
                    raise BodyError(413, f"body exceeds {self.max_body} bytes")
                self.remaining = size
                self.state = CHUNK_DATA
            elif state == CHUNK_CRLF:
                if n - pos < 2:
                    return pos
                if not buf.startswith(b"\r\n", pos):
                    raise BodyError(400, "chunk data not followed by CRLF")
                pos += 2
                self.state = CHUNK_SIZE_LINE
            elif state == TRAILERS:  # header lines up to an empty line
                stop = buf.find(b"\r\n", pos)
                if stop < 0:
                    if self._trailer + n - pos > self.max_trailer:
                        raise BodyError(431, "trailer section too large")
                    return pos
                if stop == pos:
                    self.state = DONE
                    return pos + 2
                self._trailer += stop + 2 - pos
                if self._trailer > self.max_trailer:
                    raise BodyError(431, "trailer section too large")
                if _TRAILER_LINE.fullmatch(buf, pos, stop + 2) is None:
                    raise BodyError(400, "malformed trailer line")
                pos = stop + 2
            else:
                return pos
