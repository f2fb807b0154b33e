"""Sans-io HTTP/1.x request reader for the backend server.

Bytes go in with :meth:`RequestReader.feed`; complete requests come out of
:meth:`RequestReader.next_request`. Request bodies (``Content-Length`` or chunked)
are read and discarded: the backend only needs to know where one request ends and
the next begins. Nothing here touches a socket or an event loop.

Two kinds of failure:

* a framing error (the next request cannot be found reliably) raises
  :class:`ProtocolError`; the caller answers with its status and closes;
* a well-framed request with a bad ``sleep``/``times`` value comes back as a
  :class:`Request` whose ``error`` is set; the connection can go on.

The parser is strict where being lenient invites request smuggling: header names
must be tokens directly followed by ``:``, obsolete line folding is refused, a
request with both ``Content-Length`` and ``Transfer-Encoding`` is refused, and
``Content-Length`` must be plain decimal digits. Lines end with CRLF; up to a
few empty lines before a request line are skipped (RFC 9112, 2.2).
"""

from __future__ import annotations

import re
from typing import Final

from tippingpoint.wire.body import BodyError, BodyReader
from tippingpoint.wire.ws import MAX_SLEEP_MS, MAX_TIMES, Handshake, read_handshake

__all__ = [
    "CONTINUE",
    "MAX_SLEEP_MS",
    "MAX_TIMES",
    "ProtocolError",
    "Request",
    "RequestReader",
]

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_METHOD_START = re.compile(rb"[\r\n]*(?:" + _TOKEN + rb")?(?: |$)")
"""What a request's first bytes can be: a method, or what leads up to one."""
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") [^\x00-\x20\x7f]+ HTTP/([0-9])\.([0-9])\r\n")
# The whole head: request line, header lines, the empty line. One pass validates it all.
_HEAD_RE = re.compile(
    rb"(" + _TOKEN + rb") [^\x00-\x20\x7f]+ HTTP/([0-9])\.([0-9])\r\n"
    rb"(?:" + _TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*\r\n"
)
# Any header the backend acts on (searched in the lower-cased header block).
_SPECIAL = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection|sleep|times|expect|upgrade):"
)

_CL: Final = b"\r\ncontent-length:"
_TE: Final = b"\r\ntransfer-encoding:"
_CONN: Final = b"\r\nconnection:"
_SLEEP: Final = b"\r\nsleep:"
_TIMES: Final = b"\r\ntimes:"
_EXPECT: Final = b"\r\nexpect:"

# Reader states.
_HEAD: Final = 0
_BODY: Final = 1

_MAX_LEADING_CRLF: Final = 8


class ProtocolError(Exception):
    """A request that cannot be framed: answer ``status`` with ``reason``, then close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class Request:
    """What the backend needs to know about one complete request (body already consumed).

    ``sleep`` is None when the request had no ``sleep`` and no ``times`` header (the
    fast path). ``error`` holds ``(status, reason)`` for a well-framed request whose
    ``sleep``/``times`` value is unusable. ``kind`` is
    ``keep_alive << 2 | http10 << 1 | head`` and indexes pre-encoded responses;
    ``fast`` means: answer at once and keep the connection.
    """

    __slots__ = (
        "error",
        "fast",
        "head",
        "http10",
        "keep_alive",
        "kind",
        "sleep",
        "times",
        "upgrade",
    )

    def __init__(
        self,
        keep_alive: bool,
        http10: bool,
        head: bool,
        sleep: int | None = None,
        times: int = 0,
        error: tuple[int, str] | None = None,
    ) -> None:
        self.keep_alive = keep_alive
        self.http10 = http10
        self.head = head
        self.sleep = sleep
        self.times = times
        self.error = error
        self.kind = (keep_alive << 2) | (http10 << 1) | head
        self.fast = keep_alive and sleep is None and not times and error is None
        self.upgrade: Handshake | None = None
        """A WebSocket upgrade asked for (the server may take it or answer as usual)."""

    def __repr__(self) -> str:
        return (
            f"Request(keep_alive={self.keep_alive}, http10={self.http10}, head={self.head}, "
            f"sleep={self.sleep}, times={self.times}, error={self.error})"
        )


# Shared instances for the common requests without sleep/times/error: no allocation
# per request on the fast path. Index: keep_alive << 2 | http10 << 1 | head.
_PLAIN: Final = tuple(Request(bool(i & 4), bool(i & 2), bool(i & 1)) for i in range(8))

CONTINUE: Final = Request(True, False, False)
CONTINUE.fast = False
"""Returned once when a request asked for ``Expect: 100-continue`` and its body is still to come."""


def _header(block: bytes, key: bytes) -> bytes:
    """The value of header ``key`` in the lower-cased block; repeated headers are joined by ','."""
    start = block.find(key)
    values: list[bytes] = []
    while start >= 0:
        start += len(key)
        stop = block.find(b"\r\n", start)
        values.append(block[start:stop].strip(b" \t"))
        start = block.find(key, stop)
    return b",".join(values)


def _parse_ms(name: str, raw: bytes, cap: int) -> int | str:
    """An integer header value in [0, cap], or the reason it is not one."""
    if not raw.isdigit():
        return f"{name} must be a whole number >= 0, got {raw[:40].decode('latin-1')!r}"
    value = int(raw)
    if value > cap:
        return f"{name} must be <= {cap}, got {value}"
    return value


class RequestReader:
    """Incremental request reader. Not thread-safe; one per connection."""

    __slots__ = (
        "_body",
        "_continue",
        "_pending",
        "_pos",
        "_state",
        "buffer",
        "max_body",
        "max_header",
    )

    def __init__(self, max_header: int = 16384, max_body: int = 16 * 1024 * 1024) -> None:
        self.max_header = max_header
        self.max_body = max_body
        self.buffer = b""
        self._pos = 0
        self._state = _HEAD
        self._body = BodyReader(max_body, max_header)
        self._pending: Request | None = None
        self._continue = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self.buffer) - self._pos if self.buffer else 0

    @property
    def reading_body(self) -> bool:
        """True between the end of a request's headers and the end of its body."""
        return self._state != _HEAD

    @property
    def in_request(self) -> bool:
        """True when part of a request has arrived (headers or body still incomplete)."""
        return self._state != _HEAD or len(self.buffer) > self._pos

    def feed(self, data: bytes) -> None:
        """Add received bytes. ``buffer`` is empty when everything fed has been consumed."""
        if not self.buffer or self._pos >= len(self.buffer):
            self.buffer = data
        else:
            self.buffer = self.buffer[self._pos :] + data
        self._pos = 0

    def take(self) -> bytes:
        """The bytes not read yet, for a protocol that takes the connection over."""
        rest = self.buffer[self._pos :] if self.buffer else b""
        self.buffer = b""
        self._pos = 0
        return rest

    def next_request(self) -> Request | None:
        """The next complete request, :data:`CONTINUE`, or None when more bytes are needed."""
        if self._state != _HEAD:
            if self._continue:
                self._continue = False
                return CONTINUE
            return self._read_body()
        buf = self.buffer
        pos = self._pos
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            self._check_incomplete_head(buf, pos)
            return None
        if buf[pos] == 13:  # CR: empty lines before the request line
            skipped = 0
            while buf.startswith(b"\r\n", pos):
                pos += 2
                skipped += 1
                if skipped > _MAX_LEADING_CRLF:
                    raise ProtocolError(400, "too many empty lines before the request line")
            self._pos = pos
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                self._check_incomplete_head(buf, pos)
                return None
        if end + 4 - pos > self.max_header:
            raise ProtocolError(431, f"request header block exceeds {self.max_header} bytes")
        match = _HEAD_RE.fullmatch(buf, pos, end + 4)
        if match is None:
            raise self._head_error(buf, pos, end)
        if end + 4 == len(buf):
            self.buffer = b""
            self._pos = 0
        else:
            self._pos = end + 4
        method, major, minor = match.groups()
        if major != b"1":
            raise ProtocolError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        http10 = minor == b"0"
        head = method == b"HEAD"
        block = buf[match.end(3) : end + 2].lower()
        names = _SPECIAL.findall(block)
        if not names:
            # The fast path: no framing, connection or delay headers.
            return _PLAIN[((not http10) << 2) | (http10 << 1) | head]
        request = self._special(block, names, http10, head)
        if b"upgrade" in names and b"websocket" in _header(block, b"\r\nupgrade:"):
            original = buf[match.end(3) : end + 2]
            upgrade = read_handshake(block, original, method == b"GET", http10)
            if request is None or request is CONTINUE:
                raise ProtocolError(400, "a WebSocket upgrade cannot have a body")
            r = request
            request = Request(r.keep_alive, http10, head, r.sleep, r.times, r.error)
            request.upgrade = upgrade
            request.fast = False
        return request

    def _special(
        self, block: bytes, names: list[bytes], http10: bool, head: bool
    ) -> Request | None:
        """A request with a body, connection options or sleep/times headers."""
        keep_alive = not http10
        if b"connection" in names:
            tokens = [t.strip() for t in _header(block, _CONN).split(b",")]
            if b"close" in tokens:
                keep_alive = False
            elif http10 and b"keep-alive" in tokens:
                keep_alive = True

        body = 0
        chunked = False
        if b"transfer-encoding" in names:
            if http10:
                raise ProtocolError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
            if b"content-length" in names:
                raise ProtocolError(400, "both Content-Length and Transfer-Encoding are present")
            codings = [c.strip() for c in _header(block, _TE).split(b",")]
            if codings[-1] != b"chunked":
                raise ProtocolError(501, "only the chunked Transfer-Encoding is supported")
            chunked = True
        elif b"content-length" in names:
            values = set(v.strip() for v in _header(block, _CL).split(b","))
            if len(values) != 1:
                raise ProtocolError(400, "conflicting Content-Length values")
            raw = values.pop()
            if not raw.isdigit() or len(raw) > 18:
                raise ProtocolError(400, f"invalid Content-Length {raw[:40].decode('latin-1')!r}")
            body = int(raw)
            if body > self.max_body:
                raise ProtocolError(413, f"request body exceeds {self.max_body} bytes")

        has_sleep = b"sleep" in names
        has_times = b"times" in names
        request: Request
        if not (has_sleep or has_times):
            request = _PLAIN[(keep_alive << 2) | (http10 << 1) | head]
        else:
            request = self._delayed(block, keep_alive, http10, head, has_sleep, has_times)

        if not chunked and body == 0:
            return request
        self._pending = request
        self._state = _BODY
        if chunked:
            self._body.chunked()
        else:
            self._body.fixed(body)
        if not http10 and b"expect" in names and _header(block, _EXPECT) == b"100-continue":
            return CONTINUE
        return self._read_body()

    # Internals

    @staticmethod
    def _head_error(buf: bytes, pos: int, end: int) -> ProtocolError:
        if _REQUEST_LINE.match(buf, pos, end + 2) is None:
            return ProtocolError(400, "malformed request line")
        return ProtocolError(400, "malformed header line")

    def _check_incomplete_head(self, buf: bytes, pos: int) -> None:
        if len(buf) - pos > self.max_header:
            raise ProtocolError(431, f"request header block exceeds {self.max_header} bytes")
        if buf.find(b"\n\n", pos) >= 0:
            raise ProtocolError(400, "lines must end with CRLF")
        if _METHOD_START.match(buf, pos, pos + 24) is None:
            # Another protocol's greeting (a TLS ClientHello, an MQTT CONNECT): said at
            # once, not after the client's timeout.
            raise ProtocolError(400, "not an HTTP request")

    @staticmethod
    def _delayed(
        block: bytes, keep_alive: bool, http10: bool, head: bool, has_sleep: bool, has_times: bool
    ) -> Request:
        sleep: int | str = 0
        times: int | str = 0
        if has_sleep:
            raw = _header(block, _SLEEP)
            sleep = (
                _parse_ms("sleep", raw, MAX_SLEEP_MS)
                if b"," not in raw
                else ("sleep header given more than once")
            )
        if has_times:
            raw = _header(block, _TIMES)
            times = (
                _parse_ms("times", raw, MAX_TIMES)
                if b"," not in raw
                else ("times header given more than once")
            )
        if isinstance(sleep, str):
            return Request(keep_alive, http10, head, error=(400, sleep))
        if isinstance(times, str):
            return Request(keep_alive, http10, head, error=(400, times))
        return Request(keep_alive, http10, head, sleep, times)

    def _finish(self) -> Request:
        request = self._pending
        assert request is not None
        self._pending = None
        self._state = _HEAD
        if self._pos >= len(self.buffer):
            self.buffer = b""
            self._pos = 0
        return request

    def _read_body(self) -> Request | None:
        body = self._body
        try:
            self._pos = body.read(self.buffer, self._pos)
        except BodyError as e:
            raise ProtocolError(e.status, e.reason) from None
        return self._finish() if body.done else None
