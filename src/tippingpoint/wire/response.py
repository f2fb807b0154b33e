"""Sans-io HTTP/1.x response framing for the load generator.

The client needs three facts per response: its status, where it ends (Content-Length,
chunked, or the connection closing) and whether the connection can be reused. The
body is counted, not kept. Header names are matched case-insensitively (HAProxy
lower-cases them). ``1xx`` interim responses are skipped.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ResponseError", "ResponseReader"]

_MAX_HEAD: Final = 65536
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?")

_HEAD: Final = 0
_FIXED: Final = 1
_CHUNK_SIZE_LINE: Final = 2
_CHUNK_DATA: Final = 3
_CHUNK_CRLF: Final = 4
_TRAILERS: Final = 5
_UNTIL_CLOSE: Final = 6
_DONE: Final = 7


class ResponseError(Exception):
    """The response cannot be framed (the message says how)."""


def _value(head: bytes, key: bytes) -> bytes | None:
    i = head.find(key)
    if i < 0:
        return None
    start = i + len(key)
    return head[start : head.find(b"\r\n", start)].strip()


class ResponseReader:
    """One response at a time: :meth:`start`, then :meth:`feed` until it returns True."""

    __slots__ = (
        "_buf",
        "_head_request",
        "_remaining",
        "_state",
        "body_bytes",
        "keep_alive",
        "status",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._state = _DONE
        self._remaining = 0
        self._head_request = False
        self.status = 0
        self.keep_alive = True
        self.body_bytes = 0

    def start(self, head_request: bool = False) -> None:
        self._buf = b""
        self._state = _HEAD
        self._head_request = head_request
        self.status = 0
        self.body_bytes = 0
        self.keep_alive = True

    def feed(self, data: bytes) -> bool:
        """Bytes received; True when the response is complete."""
        if self._state == _HEAD:
            if self._buf:
                data = self._buf + data
                self._buf = b""
            return self._parse_head(data)
        return self._body(data)

    def feed_eof(self) -> bool:
        """The peer closed: True if that completes the response (body delimited by close)."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            self.keep_alive = False
            return True
        return self._state == _DONE

    @property
    def started(self) -> bool:
        """True once any byte of the response has arrived."""
        return self._state != _HEAD or bool(self._buf)

    # Internals

    def _parse_head(self, data: bytes) -> bool:
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > _MAX_HEAD:
                    raise ResponseError(f"response header block over {_MAX_HEAD} bytes")
                if data[:5] not in (b"HTTP/"[: len(data)], b"HTTP/"):
                    raise ResponseError(f"not an HTTP response: {data[:30]!r}")
                self._buf = data
                return False
            if data[:5] != b"HTTP/" or data[8:9] != b" " or not data[9:12].isdigit():
                raise ResponseError(f"malformed status line: {data[: min(end, 60)]!r}")
            status = int(data[9:12])
            http10 = data[5:8] == b"1.0"
            body_start = end + 4
            if 100 <= status < 200:  # interim response: the real one follows
                data = data[body_start:]
                if not data:
                    self._buf = b""
                    return False
                continue
            break
        self.status = status
        head = data[: end + 2].lower()
        conn = _value(head, b"\r\nconnection:") if b"\r\nconnection:" in head else None
        if http10:
            self.keep_alive = conn is not None and b"keep-alive" in conn
        else:
            self.keep_alive = conn is None or b"close" not in conn
        rest = data[body_start:]
        if self._head_request or status in (204, 304):
            self._state = _DONE
            return self._finish(rest)
        te = _value(head, b"\r\ntransfer-encoding:") if b"\r\ntransfer-encoding:" in head else None
        if te is not None and te.endswith(b"chunked"):
            self._state = _CHUNK_SIZE_LINE
            return self._body(rest)
        cl = _value(head, b"\r\ncontent-length:") if b"\r\ncontent-length:" in head else None
        if cl is not None:
            if not cl.isdigit():
                raise ResponseError(f"bad Content-Length {cl[:30]!r}")
            self._remaining = int(cl)
            self._state = _FIXED
            if len(rest) == self._remaining:  # the usual case: all of it in one read
                self.body_bytes = self._remaining
                self._state = _DONE
                return True
            return self._body(rest)
        self._state = _UNTIL_CLOSE
        self.keep_alive = False
        return self._body(rest)

    def _finish(self, rest: bytes) -> bool:
        if rest:
            raise ResponseError(f"{len(rest)} unexpected bytes after the response")
        return True

    def _body(self, data: bytes) -> bool:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos = 0
        n = len(data)
        while True:
            state = self._state
            if state == _FIXED:
                take = min(n - pos, self._remaining)
                pos += take
                self._remaining -= take
                self.body_bytes += take
                if self._remaining:
                    return False
                self._state = _DONE
                return self._finish(data[pos:])
            if state == _UNTIL_CLOSE:
                self.body_bytes += n - pos
                return False
            if state == _CHUNK_SIZE_LINE:
                stop = data.find(b"\r\n", pos)
                if stop < 0:
                    if n - pos > 1024:
                        raise ResponseError("chunk size line too long")
                    self._buf = data[pos:]
                    return False
                match = _CHUNK_SIZE.fullmatch(data, pos, stop)
                if match is None:
                    raise ResponseError(f"bad chunk size line {data[pos:stop][:30]!r}")
                size = int(match.group(1), 16)
                pos = stop + 2
                if size == 0:
                    self._state = _TRAILERS
                else:
                    self._remaining = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                take = min(n - pos, self._remaining)
                pos += take
                self._remaining -= take
                self.body_bytes += take
                if self._remaining:
                    return False
                self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if n - pos < 2:
                    self._buf = data[pos:]
                    return False
                if data[pos : pos + 2] != b"\r\n":
                    raise ResponseError("chunk data not followed by CRLF")
                pos += 2
                self._state = _CHUNK_SIZE_LINE
            elif state == _TRAILERS:
                stop = data.find(b"\r\n", pos)
                if stop < 0:
                    if n - pos > _MAX_HEAD:
                        raise ResponseError("trailer section too large")
                    self._buf = data[pos:]
                    return False
                empty = stop == pos
                pos = stop + 2
                if empty:
                    self._state = _DONE
                    return self._finish(data[pos:])
            else:
                raise ResponseError(f"{n - pos} bytes received with no request outstanding")
