"""Sans-io HTTP/1.x response framing for the load generator.

The client needs three facts per response: its status, where it ends (Content-Length,
chunked, or the connection closing) and whether the connection can be reused. The
body is counted, not kept. Header names are matched case-insensitively (HAProxy
lower-cases them). ``1xx`` interim responses are skipped.
"""

from __future__ import annotations

import re
from typing import Final

from tippingpoint.wire.body import BodyError, BodyReader

__all__ = ["ResponseError", "ResponseReader"]

_MAX_HEAD: Final = 65536
_NO_LIMIT: Final = 1 << 62

_HEAD: Final = 0
_BODY: Final = 1  # fixed-length or chunked, read by a BodyReader
_UNTIL_CLOSE: Final = 6
_DONE: Final = 7


class ResponseError(Exception):
    """The response cannot be framed (the message says how)."""


_CHUNKED: Final = -1
_UNTIL_CLOSE_LENGTH: Final = -2
_FRAMING_HEADERS = re.compile(rb"\r\n(content-length|transfer-encoding|connection):[ \t]*([^\r]*)")
# Heads seen recently -> their framing. Responses of one server usually repeat their
# headers byte for byte (the Date changes once a second), so most responses are
# framed with one dictionary lookup. The mapping is a pure function of the bytes.
_MEMO: dict[bytes, tuple[int, bool, int]] = {}
_MEMO_SIZE: Final = 256


def _framing(head: bytes) -> tuple[int, bool, int]:
    """``(status, keep_alive, length)`` of a response head (without the final CRLFCRLF);
    length is the Content-Length, ``_CHUNKED`` or ``_UNTIL_CLOSE_LENGTH``."""
    if head[:5] != b"HTTP/" or head[8:9] != b" " or not head[9:12].isdigit():
        raise ResponseError(f"malformed status line: {head[:60]!r}")
    status = int(head[9:12])
    http10 = head[5:8] == b"1.0"
    found: dict[bytes, bytes] = {}
    for name, value in _FRAMING_HEADERS.findall(head.lower() + b"\r\n"):
        found[name] = found[name] + b"," + value.strip() if name in found else value.strip()
    conn = found.get(b"connection")
    if http10:
        keep_alive = conn is not None and b"keep-alive" in conn
    else:
        keep_alive = conn is None or b"close" not in conn
    te = found.get(b"transfer-encoding")
    if te is not None and te.endswith(b"chunked"):
        return status, keep_alive, _CHUNKED
    cl = found.get(b"content-length")
    if cl is not None:
        values = {v.strip() for v in cl.split(b",")}
        if len(values) != 1 or not (raw := values.pop()).isdigit():
            raise ResponseError(f"bad Content-Length {cl[:30]!r}")
        return status, keep_alive, int(raw)
    if status < 200 or status in (204, 304):
        return status, keep_alive, 0
    return status, False, _UNTIL_CLOSE_LENGTH


class ResponseReader:
    """One response at a time: :meth:`start`, then :meth:`feed` until it returns True."""

    __slots__ = (
        "_body_reader",
        "_buf",
        "_head_request",
        "_prev",
        "_prev_keep_alive",
        "_prev_length",
        "_prev_size",
        "_prev_status",
        "_state",
        "body_bytes",
        "keep_alive",
        "status",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._state = _DONE
        self._body_reader: BodyReader | None = None  # made for the first body over reads
        self._head_request = False
        self.status = 0
        self.keep_alive = True
        self.body_bytes = 0
        # The head (with its blank line) of the last response framed by Content-Length,
        # and its framing: a server repeats its heads byte for byte, so the next
        # response is usually recognised with one comparison.
        self._prev = b""
        self._prev_size = -1  # head + body: no response has it until one is remembered
        self._prev_status = 0
        self._prev_keep_alive = True
        self._prev_length = 0

    def start(self, head_request: bool = False) -> None:
        """Expect the response to a new request (``status`` and the rest are set when
        it completes)."""
        self._state = _HEAD
        self._head_request = head_request

    def feed(self, data: bytes) -> bool:
        """Bytes received; True when the response is complete."""
        if self._state == _HEAD:
            if self._buf:
                data = self._buf + data
                self._buf = b""
            elif (
                len(data) == self._prev_size
                and data.startswith(self._prev)
                and not self._head_request
            ):  # the whole response in one read, with the same head as the last one
                self.status = self._prev_status
                self.keep_alive = self._prev_keep_alive
                self.body_bytes = self._prev_length
                self._state = _DONE
                return True
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
        self.body_bytes = 0
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > _MAX_HEAD:
                    raise ResponseError(f"response header block over {_MAX_HEAD} bytes")
                if data[:5] not in (b"HTTP/"[: len(data)], b"HTTP/"):
                    raise ResponseError(f"not an HTTP response: {data[:30]!r}")
                self._buf = data
                return False
            head = data[:end]
            framing = _MEMO.get(head)
            if framing is None:
                framing = _framing(head)
                if len(_MEMO) >= _MEMO_SIZE:
                    _MEMO.clear()
                _MEMO[head] = framing
            status, keep_alive, length = framing
            if status >= 200:
                break
            data = data[end + 4 :]  # an interim 1xx response: the real one follows
            if not data:
                self._buf = b""
                return False
        self.status = status
        self.keep_alive = keep_alive
        rest = data[end + 4 :]
        if self._head_request or status in (204, 304):
            self._state = _DONE
            return self._finish(rest)
        if length >= 0:
            if len(rest) == length:  # the usual case: all of it in one read
                self.body_bytes = length
                self._state = _DONE
                self._prev = data[: end + 4]
                self._prev_size = end + 4 + length
                self._prev_status = status
                self._prev_keep_alive = keep_alive
                self._prev_length = length
                return True
            self._reader().fixed(length)
            self._state = _BODY
        elif length == _CHUNKED:
            self._reader().chunked()
            self._state = _BODY
        else:
            self._state = _UNTIL_CLOSE
        return self._body(rest)

    def _finish(self, rest: bytes) -> bool:
        if rest:
            raise ResponseError(f"{len(rest)} unexpected bytes after the response")
        return True

    def _reader(self) -> BodyReader:
        reader = self._body_reader
        if reader is None:
            reader = self._body_reader = BodyReader(_NO_LIMIT, _MAX_HEAD)
        return reader

    def _body(self, data: bytes) -> bool:
        state = self._state
        if state == _UNTIL_CLOSE:
            self.body_bytes += len(data)
            return False
        if state != _BODY:
            raise ResponseError(f"{len(data)} bytes received with no request outstanding")
        if self._buf:
            data = self._buf + data
            self._buf = b""
        reader = self._reader()
        try:
            pos = reader.read(data, 0)
        except BodyError as e:
            raise ResponseError(e.reason) from None
        self.body_bytes = reader.total
        if not reader.done:
            if pos < len(data):
                self._buf = data[pos:]
            return False
        self._state = _DONE
        return self._finish(data[pos:])
