"""WebSocket (RFC 6455) without I/O: the opening handshake and the framing.

The server side and the client side share one :class:`FrameReader`; what differs is
the direction of masking (a client masks every frame, a server never does). The
reader fails the connection the way RFC 6455 asks, by raising :class:`WsError` with
the close code to send: 1002 for a framing error (an unmasked client frame, a reserved
bit or opcode, a control frame over 125 bytes or fragmented, a continuation without a
start, a data frame inside a fragmented message, a non-minimal length, a bad close
code), 1007 for text that is not UTF-8, 1009 for a message over the limit.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
from typing import Final

__all__ = [
    "BINARY",
    "CLOSE",
    "MAX_SLEEP_MS",
    "MAX_TIMES",
    "PING",
    "PONG",
    "TEXT",
    "FrameReader",
    "Handshake",
    "WsError",
    "accept_key",
    "check_close",
    "client_frame",
    "close_payload",
    "new_key",
    "parse_ping",
    "read_answer",
    "server_frame",
    "upgrade_request",
]

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA
_KNOWN: Final = frozenset((CONT, TEXT, BINARY, CLOSE, PING, PONG))

NORMAL: Final = 1000
GOING_AWAY: Final = 1001
PROTOCOL_ERROR: Final = 1002
UNSUPPORTED_DATA: Final = 1003
INVALID_DATA: Final = 1007
POLICY: Final = 1008
TOO_BIG: Final = 1009

_getrandbits = random.getrandbits


class WsError(Exception):
    """The peer broke RFC 6455: close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def new_key() -> bytes:
    """A ``Sec-WebSocket-Key``: 16 random bytes, base64."""
    return base64.b64encode(_getrandbits(128).to_bytes(16, "big"))


def mask(payload: bytes, key: int) -> bytes:
    """``payload`` XOR the 4-byte ``key`` repeated (masking and unmasking alike)."""
    n = len(payload)
    if n == 0:
        return payload
    keys = key.to_bytes(4, "big") * ((n + 3) >> 2)
    value = int.from_bytes(payload, "big") ^ int.from_bytes(keys[:n], "big")
    return value.to_bytes(n, "big")


def _header(opcode: int, n: int, fin: bool, masked: int) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        return bytes((first, masked | n))
    if n < 65536:
        return bytes((first, masked | 126)) + n.to_bytes(2, "big")
    return bytes((first, masked | 127)) + n.to_bytes(8, "big")


def server_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A frame as a server sends it: unmasked."""
    return _header(opcode, len(payload), fin, 0) + payload


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A frame as a client sends it: masked with a fresh key (RFC 6455 5.3)."""
    key = _getrandbits(32)
    n = len(payload)
    if 0 < n < 126 and fin:
        # Header, key and masked payload as one integer: one bytes object made.
        keys = int.from_bytes(key.to_bytes(4, "big") * ((n + 3) >> 2), "big") >> ((-n & 3) << 3)
        head = ((0x80 | opcode) << 8 | 0x80 | n) << 32 | key
        return (head << (n << 3) | (int.from_bytes(payload, "big") ^ keys)).to_bytes(n + 6, "big")
    return _header(opcode, n, fin, 0x80) + key.to_bytes(4, "big") + mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()[:123]


def _valid_code(code: int) -> bool:
    """Close codes a peer may send (RFC 6455 7.4 and the IANA registry)."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


def check_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a received close frame (1005: none given)."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise WsError(PROTOCOL_ERROR, "a close frame's payload cannot be 1 byte")
    code = int.from_bytes(payload[:2], "big")
    if not _valid_code(code):
        raise WsError(PROTOCOL_ERROR, f"close code {code} is not one a peer may send")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise WsError(INVALID_DATA, "the close reason is not UTF-8") from None
    return code, reason


class FrameReader:
    """Incremental frame reader: :meth:`next` gives whole messages and control frames.

    ``server`` is True for the server's reader (frames must be masked), False for the
    client's (frames must not be). Fragments are joined; control frames may come
    between them and are given out at once.
    """

    __slots__ = ("_buf", "_parts", "_pos", "_size", "_started", "max_message", "server")

    def __init__(self, server: bool, max_message: int = 1 << 20) -> None:
        self.server = server
        self.max_message = max_message
        self._buf = b""
        self._pos = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._started = 0  # opcode of the fragmented message under way, 0: none

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def whole(self, data: bytes) -> bool:
        """``data`` is exactly one final TEXT or BINARY frame, unmasked, under 126 bytes,
        with nothing buffered or under way: a client may take it as it is. (A masked
        frame's second byte is 128 or more: it is left to :meth:`next` to refuse.)"""
        return (
            len(data) >= 2
            and (data[0] == 0x81 or data[0] == 0x82)
            and data[1] < 126
            and data[1] <= self.max_message
            and data[1] + 2 == len(data)
            and not self._started
            and self._pos >= len(self._buf)
        )

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self._buf):
            self._buf = data
        else:
            self._buf = self._buf[self._pos :] + data
        self._pos = 0

    def take(self) -> bytes:
        """The bytes not read yet (for a protocol that takes the connection over)."""
        rest = self._buf[self._pos :]
        self._buf = b""
        self._pos = 0
        return rest

    def next(self) -> tuple[int, bytes] | None:
        """``(opcode, payload)`` of the next message or control frame, None for more bytes."""
        while True:
            frame = self._frame()
            if frame is None:
                return None
            fin, opcode, payload = frame
            if opcode >= CLOSE:
                return opcode, payload
            message = self._message(fin, opcode, payload)
            if message is not None:
                return message

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        pos = self._pos
        have = len(buf) - pos
        if have < 2:
            return None
        b0 = buf[pos]
        b1 = buf[pos + 1]
        opcode = b0 & 0x0F
        if b0 & 0x70:
            raise WsError(PROTOCOL_ERROR, "a reserved bit is set and no extension was agreed")
        if opcode not in _KNOWN:
            raise WsError(PROTOCOL_ERROR, f"opcode {opcode:#x} is reserved")
        masked = b1 & 0x80
        if bool(masked) != self.server:
            raise WsError(
                PROTOCOL_ERROR,
                "a client frame must be masked" if self.server else "a server frame is masked",
            )
        n = b1 & 0x7F
        head = 2
        if n >= 126:
            if opcode >= CLOSE:
                raise WsError(PROTOCOL_ERROR, "a control frame's payload is over 125 bytes")
            head = 4 if n == 126 else 10
            if have < head:
                return None
            n = int.from_bytes(buf[pos + 2 : pos + head], "big")
            if n < (126 if head == 4 else 65536) or n >> 63:
                raise WsError(PROTOCOL_ERROR, "a payload length is not in its shortest form")
        fin = bool(b0 & 0x80)
        if opcode >= CLOSE and not fin:
            raise WsError(PROTOCOL_ERROR, "a control frame is fragmented")
        if self._size + n > self.max_message:
            raise WsError(TOO_BIG, f"a message is over {self.max_message} bytes")
        end = pos + head + (4 if masked else 0) + n
        if len(buf) < end:
            return None
        if masked:
            key = int.from_bytes(buf[pos + head : pos + head + 4], "big")
            payload = mask(buf[end - n : end], key)
        else:
            payload = buf[end - n : end]
        self._pos = end
        return fin, opcode, payload

    def _message(self, fin: bool, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode == CONT:
            if not self._started:
                raise WsError(PROTOCOL_ERROR, "a continuation frame with no message to continue")
        elif self._started:
            raise WsError(PROTOCOL_ERROR, "a new message began inside a fragmented one")
        elif fin:
            if opcode == TEXT:
                _utf8(payload)
            return opcode, payload
        else:
            self._started = opcode
        self._parts.append(payload)
        self._size += len(payload)
        if not fin:
            return None
        opcode = self._started
        whole = b"".join(self._parts)
        self._parts = []
        self._size = 0
        self._started = 0
        if opcode == TEXT:
            _utf8(whole)
        return opcode, whole


def _utf8(payload: bytes) -> None:
    try:
        payload.decode()
    except UnicodeDecodeError:
        raise WsError(INVALID_DATA, "a text message is not UTF-8") from None


# The messages of ``serve --ws``

MAX_SLEEP_MS: Final = 3_600_000
"""Largest accepted ``sleep`` (HTTP header, MQTT property, WebSocket word): one hour, in ms."""
MAX_TIMES: Final = 100_000
"""Largest accepted ``times``."""


def parse_ping(message: bytes) -> tuple[int, int] | str:
    """``(sleep ms, times)`` of a message (``ping sleep=N times=K``: the words after the
    first), or why its values cannot be used. Unknown words are ignored."""
    sleep = times = 0
    for word in message.split()[1:]:
        name, sep, value = word.partition(b"=")
        if not sep or name not in (b"sleep", b"times"):
            continue
        cap = MAX_SLEEP_MS if name == b"sleep" else MAX_TIMES
        if not value.isdigit() or int(value) > cap:
            shown = value[:40].decode("utf-8", "replace")
            return f"{name.decode()} must be a whole number from 0 to {cap}, got {shown!r}"
        if name == b"sleep":
            sleep = int(value)
        else:
            times = int(value)
    return sleep, times


# The opening handshake

_KEY_RE: Final = re.compile(rb"[A-Za-z0-9+/]{22}==")


class Handshake:
    """What a server needs of an upgrade request (read by ``wire/http1.py``)."""

    __slots__ = ("error", "key", "protocols")

    def __init__(self, key: bytes, protocols: tuple[bytes, ...], error: str = "") -> None:
        self.key = key
        self.protocols = protocols
        self.error = error
        """Why the upgrade cannot be taken (answered with 400 or 426), or empty."""

    def response(self, protocol: bytes = b"") -> bytes:
        """The 101 answer, choosing ``protocol`` if given."""
        lines = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + accept_key(self.key),
        ]
        if protocol:
            lines.append(b"Sec-WebSocket-Protocol: " + protocol)
        return b"\r\n".join(lines) + b"\r\n\r\n"


def _values(block: bytes, original: bytes, name: bytes) -> list[bytes]:
    """Every value of header ``name`` (with its case kept), split at commas."""
    key = b"\r\n" + name + b":"
    values: list[bytes] = []
    start = block.find(key)
    while start >= 0:
        start += len(key)
        stop = block.find(b"\r\n", start)
        values.extend(v.strip(b" \t") for v in original[start:stop].split(b","))
        start = block.find(key, stop)
    return [v for v in values if v]


def read_handshake(block: bytes, original: bytes, method_get: bool, http10: bool) -> Handshake:
    """The upgrade asked for by a request whose header block is ``original`` (``block``
    lower-cased). ``error`` is set when it cannot be taken."""
    connection = [v.lower() for v in _values(block, original, b"connection")]
    keys = _values(block, original, b"sec-websocket-key")
    versions = _values(block, original, b"sec-websocket-version")
    protocols = tuple(_values(block, original, b"sec-websocket-protocol"))
    key = keys[0] if len(keys) == 1 else b""
    error = ""
    if not method_get or http10:
        error = "a WebSocket upgrade must be an HTTP/1.1 GET"
    elif b"upgrade" not in connection:
        error = "a WebSocket upgrade needs 'Connection: Upgrade'"
    elif _KEY_RE.fullmatch(key) is None:
        error = "Sec-WebSocket-Key must be 16 bytes in base64, given once"
    elif versions != [b"13"]:
        error = "Sec-WebSocket-Version must be 13"
    return Handshake(key, protocols, error)


def upgrade_request(
    host: str, path: str, key: bytes, protocol: str = "", headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """A client's upgrade request."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_STATUS_RE: Final = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r\n")


def read_answer(head: bytes, key: bytes, protocol: str = "") -> str:
    """Check a server's answer to an upgrade (``head``: up to its empty line); the
    empty string when it is a valid 101, else what is wrong with it."""
    match = _STATUS_RE.match(head)
    if match is None:
        return "the answer to the upgrade is not HTTP/1.x"
    status = int(match.group(1))
    if status != 101:
        return f"the server answered the upgrade with {status}, not 101"
    block = head[match.end() - 2 :]
    lower = block.lower()
    if [v.lower() for v in _values(lower, block, b"upgrade")] != [b"websocket"]:
        return "the 101 answer lacks 'Upgrade: websocket'"
    if b"upgrade" not in [v.lower() for v in _values(lower, block, b"connection")]:
        return "the 101 answer lacks 'Connection: Upgrade'"
    if _values(lower, block, b"sec-websocket-accept") != [accept_key(key)]:
        return "the 101 answer's Sec-WebSocket-Accept does not match the key"
    chosen = _values(lower, block, b"sec-websocket-protocol")
    if chosen != ([protocol.encode()] if protocol else []):
        got = b",".join(chosen).decode("latin-1") or "none"
        return f"the server chose subprotocol {got}, asked for {protocol or 'none'}"
    return ""


# The client's side of one connection

_MAX_ANSWER_HEAD: Final = 16 * 1024


class HandshakeRefused(ConnectionError):
    """The server did not take the upgrade (its answer is not a valid 101)."""

    kind = "upgrade-refused"


class PeerClosed(ConnectionError):
    """The server sent a close frame (its code and reason are in the message)."""

    kind = "ws-closed"


class Broken(ConnectionError):
    """The server broke RFC 6455 (a close frame with the code has been queued)."""

    kind = "malformed"


class ClientWs:
    """A client's WebSocket without I/O, for any protocol above it: :meth:`request`
    is the upgrade to send, :meth:`feed` reads the 101 and then frames (ping frames are
    answered through :meth:`outgoing`), :meth:`frame` frames what goes out."""

    __slots__ = ("frames", "head", "key", "path", "protocol", "replies", "upgraded")

    def __init__(
        self, protocol: str = "", path: str = "/", max_message: int = 16 * 1024 * 1024
    ) -> None:
        self.protocol = protocol
        self.path = path
        self.frames = FrameReader(server=False, max_message=max_message)
        self.key = new_key()
        self.head = b""
        self.upgraded = False
        self.replies: list[bytes] = []
        """Frames the peer's frames asked for, not sent yet (:meth:`outgoing`)."""

    def request(self, host: str, path: str | None = None) -> bytes:
        return upgrade_request(host, path or self.path, self.key, self.protocol)

    def frame(self, payload: bytes, opcode: int = BINARY) -> bytes:
        return client_frame(opcode, payload)

    def outgoing(self) -> bytes:
        """Frames to send that the peer's frames asked for (pongs, the close reply)."""
        if not self.replies:
            return b""
        data = b"".join(self.replies)
        self.replies.clear()
        return data

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The messages (TEXT, BINARY) and pong frames ``data`` completes, in order.
        Raises :class:`HandshakeRefused`, :class:`PeerClosed` or :class:`Broken`."""
        if not self.upgraded:
            data = self._answer(data)
            if not data:
                return []
        frames = self.frames
        try:
            if frames.whole(data):
                # One whole, short, unfragmented data frame and nothing buffered: the
                # answer to one message, read without the general reader.
                payload = data[2:]
                if data[0] == 0x81:
                    _utf8(payload)
                return [(data[0] & 0x0F, payload)]
            events: list[tuple[int, bytes]] = []
            frames.feed(data)
            while (event := frames.next()) is not None:
                opcode = event[0]
                if opcode == PING:
                    self.replies.append(client_frame(PONG, event[1]))
                elif opcode == CLOSE:
                    self.replies.append(client_frame(CLOSE, event[1][:2]))
                    code, reason = check_close(event[1])
                    raise PeerClosed(f"the server closed the WebSocket: {code} {reason}".rstrip())
                else:
                    events.append(event)
        except WsError as e:
            self.replies.append(client_frame(CLOSE, close_payload(e.code, e.reason)))
            raise Broken(f"the server broke RFC 6455: {e.reason} (close {e.code})") from None
        return events

    def _answer(self, data: bytes) -> bytes:
        """Read the answer to the upgrade; the bytes after it."""
        head = self.head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            self.head = head
            if len(head) > _MAX_ANSWER_HEAD:
                raise HandshakeRefused("the answer to the upgrade has no end")
            return b""
        self.head = b""
        error = read_answer(head[: end + 4], self.key, self.protocol)
        if error:
            raise HandshakeRefused(error)
        self.upgraded = True
        return head[end + 4 :]
