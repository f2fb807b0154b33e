"""Sans-io MQTT codec: 3.1.1 (protocol level 4) and 5.0 (level 5).

Bytes go in with :meth:`Reader.feed`, which returns the complete packets they finish.
Encoders return the bytes of one packet; :class:`PublishTemplate` pre-computes the
parts of a PUBLISH that repeat (fixed header, topic, properties) so that a publisher
adds only its packet id and payload per message. Nothing here touches a socket.

The reader is strict, and a broken packet is a protocol error, never an exception out
of :meth:`Reader.feed`: the reader sets :attr:`Reader.error` (a :class:`ProtocolError`
with the MQTT 5 reason code a server would send in its DISCONNECT) and stops reading.
Refused: a variable-length integer longer than 4 bytes, a field that runs past the end
of its packet, a packet longer than the reader's cap, invalid UTF-8 (or U+0000) in a
string, a reserved flag set, a packet id of 0, a wildcard in a PUBLISH topic, an
unknown or misplaced property, and a CONNECT with a protocol name other than ``MQTT``.
A CONNECT with an unknown protocol level is reported with reason 0x84 (unsupported
protocol version), which a server answers with a CONNACK rather than a DISCONNECT.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "AUTH",
    "CONNACK",
    "CONNECT",
    "DISCONNECT",
    "MAX_PACKET",
    "PINGREQ",
    "PINGREQ_BYTES",
    "PINGRESP",
    "PINGRESP_BYTES",
    "PUBACK",
    "PUBCOMP",
    "PUBLISH",
    "PUBREC",
    "PUBREL",
    "SUBACK",
    "SUBSCRIBE",
    "UNSUBACK",
    "UNSUBSCRIBE",
    "Ack",
    "Auth",
    "Connack",
    "Connect",
    "Disconnect",
    "Packet",
    "Ping",
    "ProtocolError",
    "Publish",
    "PublishTemplate",
    "Reader",
    "Suback",
    "Subscribe",
    "Unsuback",
    "Unsubscribe",
    "Will",
    "encode_ack",
    "encode_connack",
    "encode_connect",
    "encode_disconnect",
    "encode_properties",
    "encode_publish",
    "encode_suback",
    "encode_subscribe",
    "encode_unsuback",
    "encode_unsubscribe",
    "encode_varint",
]

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14
AUTH: Final = 15

NAMES: Final = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}

MAX_PACKET: Final = 268_435_455
"""The largest remaining length a 4-byte variable-length integer can say."""

# Reason codes (MQTT 5, 2.4) used by the reader.
MALFORMED: Final = 0x81
PROTOCOL_ERROR: Final = 0x82
UNSUPPORTED_VERSION: Final = 0x84
TOPIC_INVALID: Final = 0x90
TOO_LARGE: Final = 0x95

# Property identifiers (MQTT 5, 2.2.2.2).
PAYLOAD_FORMAT: Final = 0x01
MESSAGE_EXPIRY: Final = 0x02
CONTENT_TYPE: Final = 0x03
RESPONSE_TOPIC: Final = 0x08
CORRELATION_DATA: Final = 0x09
SUBSCRIPTION_ID: Final = 0x0B
SESSION_EXPIRY: Final = 0x11
ASSIGNED_CLIENT_ID: Final = 0x12
SERVER_KEEPALIVE: Final = 0x13
AUTH_METHOD: Final = 0x15
AUTH_DATA: Final = 0x16
REQUEST_PROBLEM_INFO: Final = 0x17
WILL_DELAY: Final = 0x18
REQUEST_RESPONSE_INFO: Final = 0x19
RESPONSE_INFO: Final = 0x1A
SERVER_REFERENCE: Final = 0x1C
REASON_STRING: Final = 0x1F
RECEIVE_MAXIMUM: Final = 0x21
TOPIC_ALIAS_MAXIMUM: Final = 0x22
TOPIC_ALIAS: Final = 0x23
MAXIMUM_QOS: Final = 0x24
RETAIN_AVAILABLE: Final = 0x25
USER_PROPERTY: Final = 0x26
MAXIMUM_PACKET_SIZE: Final = 0x27
WILDCARD_AVAILABLE: Final = 0x28
SUBSCRIPTION_ID_AVAILABLE: Final = 0x29
SHARED_AVAILABLE: Final = 0x2A

# Property value types.
_BYTE: Final = 0
_U16: Final = 1
_U32: Final = 2
_VARINT: Final = 3
_STR: Final = 4
_BIN: Final = 5
_PAIR: Final = 6

_WILL: Final = 100
"""Pseudo packet type for the will properties of a CONNECT."""

_P: Final = {
    # id: (type, packets it may appear in)
    PAYLOAD_FORMAT: (_BYTE, {PUBLISH, _WILL}),
    MESSAGE_EXPIRY: (_U32, {PUBLISH, _WILL}),
    CONTENT_TYPE: (_STR, {PUBLISH, _WILL}),
    RESPONSE_TOPIC: (_STR, {PUBLISH, _WILL}),
    CORRELATION_DATA: (_BIN, {PUBLISH, _WILL}),
    SUBSCRIPTION_ID: (_VARINT, {PUBLISH, SUBSCRIBE}),
    SESSION_EXPIRY: (_U32, {CONNECT, CONNACK, DISCONNECT}),
    ASSIGNED_CLIENT_ID: (_STR, {CONNACK}),
    SERVER_KEEPALIVE: (_U16, {CONNACK}),
    AUTH_METHOD: (_STR, {CONNECT, CONNACK, AUTH}),
    AUTH_DATA: (_BIN, {CONNECT, CONNACK, AUTH}),
    REQUEST_PROBLEM_INFO: (_BYTE, {CONNECT}),
    WILL_DELAY: (_U32, {_WILL}),
    REQUEST_RESPONSE_INFO: (_BYTE, {CONNECT}),
    RESPONSE_INFO: (_STR, {CONNACK}),
    SERVER_REFERENCE: (_STR, {CONNACK, DISCONNECT}),
    REASON_STRING: (
        _STR,
        {CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH},
    ),
    RECEIVE_MAXIMUM: (_U16, {CONNECT, CONNACK}),
    TOPIC_ALIAS_MAXIMUM: (_U16, {CONNECT, CONNACK}),
    TOPIC_ALIAS: (_U16, {PUBLISH}),
    MAXIMUM_QOS: (_BYTE, {CONNACK}),
    RETAIN_AVAILABLE: (_BYTE, {CONNACK}),
    USER_PROPERTY: (
        _PAIR,
        {
            CONNECT,
            CONNACK,
            PUBLISH,
            _WILL,
            PUBACK,
            PUBREC,
            PUBREL,
            PUBCOMP,
            SUBSCRIBE,
            SUBACK,
            UNSUBSCRIBE,
            UNSUBACK,
            DISCONNECT,
            AUTH,
        },
    ),
    MAXIMUM_PACKET_SIZE: (_U32, {CONNECT, CONNACK}),
    WILDCARD_AVAILABLE: (_BYTE, {CONNACK}),
    SUBSCRIPTION_ID_AVAILABLE: (_BYTE, {CONNACK}),
    SHARED_AVAILABLE: (_BYTE, {CONNACK}),
}
_REPEATABLE: Final = frozenset({USER_PROPERTY, SUBSCRIPTION_ID})
"""Properties that may occur more than once; their values are kept as lists."""

Properties = dict[int, Any]
"""Property id -> value; a list of values for user properties (name, value pairs) and
subscription identifiers."""


class ProtocolError:
    """Why the reader stopped: ``reason`` is the MQTT 5 reason code to send."""

    __slots__ = ("message", "reason")

    def __init__(self, reason: int, message: str) -> None:
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"ProtocolError(0x{self.reason:02x}, {self.message!r})"

    def __str__(self) -> str:
        return self.message


class _Bad(Exception):
    """Internal: raised while decoding, turned into :class:`ProtocolError` by the reader."""

    def __init__(self, message: str, reason: int = MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


# Packets. Plain slotted classes: one allocation per packet, no dicts.


class Will:
    __slots__ = ("payload", "properties", "qos", "retain", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties or {}


class Connect:
    type = CONNECT
    __slots__ = (
        "clean",
        "client_id",
        "keepalive",
        "password",
        "properties",
        "username",
        "version",
        "will",
    )

    def __init__(
        self,
        client_id: str,
        version: int = 4,
        keepalive: int = 60,
        clean: bool = True,
        username: str | None = None,
        password: bytes | None = None,
        will: Will | None = None,
        properties: Properties | None = None,
    ) -> None:
        self.client_id = client_id
        self.version = version
        self.keepalive = keepalive
        self.clean = clean
        self.username = username
        self.password = password
        self.will = will
        self.properties = properties or {}


class Connack:
    type = CONNACK
    __slots__ = ("properties", "reason", "session_present")

    def __init__(
        self, session_present: bool, reason: int, properties: Properties | None = None
    ) -> None:
        self.session_present = session_present
        self.reason = reason
        self.properties = properties or {}


class Publish:
    type = PUBLISH
    __slots__ = ("dup", "packet_id", "payload", "properties", "qos", "retain", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        dup: bool = False,
        packet_id: int = 0,
        properties: Properties | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties = properties if properties is not None else _NO_PROPS


class Ack:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (``type`` says which)."""

    __slots__ = ("packet_id", "properties", "reason", "type")

    def __init__(
        self, type: int, packet_id: int, reason: int = 0, properties: Properties | None = None
    ) -> None:
        self.type = type
        self.packet_id = packet_id
        self.reason = reason
        self.properties = properties if properties is not None else _NO_PROPS


class Subscribe:
    type = SUBSCRIBE
    __slots__ = ("packet_id", "properties", "topics")

    def __init__(
        self,
        packet_id: int,
        topics: list[tuple[str, int]],
        properties: Properties | None = None,
    ) -> None:
        self.packet_id = packet_id
        self.topics = topics
        """(filter, options): options carry the QoS in bits 0-1, and in MQTT 5 no-local
        (bit 2), retain-as-published (bit 3) and retain handling (bits 4-5)."""
        self.properties = properties or {}


class Suback:
    type = SUBACK
    __slots__ = ("codes", "packet_id", "properties")

    def __init__(
        self, packet_id: int, codes: list[int], properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.codes = codes
        self.properties = properties or {}


class Unsubscribe:
    type = UNSUBSCRIBE
    __slots__ = ("packet_id", "properties", "topics")

    def __init__(
        self, packet_id: int, topics: list[str], properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.topics = topics
        self.properties = properties or {}


class Unsuback:
    type = UNSUBACK
    __slots__ = ("codes", "packet_id", "properties")

    def __init__(
        self, packet_id: int, codes: list[int], properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.codes = codes
        """Empty in MQTT 3.1.1 (its UNSUBACK has none)."""
        self.properties = properties or {}


class Ping:
    """PINGREQ or PINGRESP."""

    __slots__ = ("type",)

    def __init__(self, type: int) -> None:
        self.type = type


class Disconnect:
    type = DISCONNECT
    __slots__ = ("properties", "reason")

    def __init__(self, reason: int = 0, properties: Properties | None = None) -> None:
        self.reason = reason
        self.properties = properties or {}


class Auth:
    type = AUTH
    __slots__ = ("properties", "reason")

    def __init__(self, reason: int = 0, properties: Properties | None = None) -> None:
        self.reason = reason
        self.properties = properties or {}


Packet = (
    Connect
    | Connack
    | Publish
    | Ack
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Ping
    | Disconnect
    | Auth
)

_NO_PROPS: Final[Properties] = {}
_PINGREQ: Final = Ping(PINGREQ)
_PINGRESP: Final = Ping(PINGRESP)
PINGREQ_BYTES: Final = b"\xc0\x00"
PINGRESP_BYTES: Final = b"\xd0\x00"

# Fixed-header flags each type must carry (PUBLISH's are its own).
_FLAGS: Final = {
    CONNECT: 0,
    CONNACK: 0,
    PUBACK: 0,
    PUBREC: 0,
    PUBREL: 2,
    PUBCOMP: 0,
    SUBSCRIBE: 2,
    SUBACK: 0,
    UNSUBSCRIBE: 2,
    UNSUBACK: 0,
    PINGREQ: 0,
    PINGRESP: 0,
    DISCONNECT: 0,
    AUTH: 0,
}


# Decoding helpers. Each takes (body, pos) and returns (value, new pos); running past
# the end of the body raises _Bad.


def _u16(b: bytes, pos: int) -> tuple[int, int]:
    if pos + 2 > len(b):
        raise _Bad("a two-byte integer runs past the end of the packet")
    return (b[pos] << 8) | b[pos + 1], pos + 2


def _u32(b: bytes, pos: int) -> tuple[int, int]:
    if pos + 4 > len(b):
        raise _Bad("a four-byte integer runs past the end of the packet")
    return int.from_bytes(b[pos : pos + 4], "big"), pos + 4


def _varint(b: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(4):
        if pos >= len(b):
            raise _Bad("a variable-length integer runs past the end of the packet")
        byte = b[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise _Bad("a variable-length integer longer than 4 bytes")


def _bin(b: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _u16(b, pos)
    if pos + n > len(b):
        raise _Bad("a length runs past the end of the packet")
    return b[pos : pos + n], pos + n


def _str(b: bytes, pos: int) -> tuple[str, int]:
    raw, pos = _bin(b, pos)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("invalid UTF-8 in a string") from None
    if "\x00" in text:
        raise _Bad("U+0000 in a string")
    return text, pos


def _props(b: bytes, pos: int, where: int) -> tuple[Properties, int]:
    length, pos = _varint(b, pos)
    end = pos + length
    if end > len(b):
        raise _Bad("the properties run past the end of the packet")
    if not length:
        return {}, pos
    out: Properties = {}
    section = b[:end]
    while pos < end:
        pid, pos = _varint(section, pos)
        spec = _P.get(pid)
        if spec is None:
            raise _Bad(f"unknown property 0x{pid:02x}")
        kind, allowed = spec
        if where not in allowed:
            raise _Bad(f"property 0x{pid:02x} is not allowed in {NAMES.get(where, 'a will')}")
        value: Any
        if kind == _BYTE:
            if pos >= end:
                raise _Bad("a property runs past the end of its section")
            value = section[pos]
            pos += 1
        elif kind == _U16:
            value, pos = _u16(section, pos)
        elif kind == _U32:
            value, pos = _u32(section, pos)
        elif kind == _VARINT:
            value, pos = _varint(section, pos)
            if value == 0 and pid == SUBSCRIPTION_ID:
                raise _Bad("a subscription identifier of 0", PROTOCOL_ERROR)
        elif kind == _STR:
            value, pos = _str(section, pos)
        elif kind == _BIN:
            value, pos = _bin(section, pos)
        else:
            name, pos = _str(section, pos)
            text, pos = _str(section, pos)
            value = (name, text)
        if pid in _REPEATABLE:
            out.setdefault(pid, []).append(value)
        elif pid in out:
            raise _Bad(f"property 0x{pid:02x} given twice", PROTOCOL_ERROR)
        else:
            out[pid] = value
    return out, pos


def _packet_id(b: bytes, pos: int) -> tuple[int, int]:
    pid, pos = _u16(b, pos)
    if pid == 0:
        raise _Bad("a packet id of 0", PROTOCOL_ERROR)
    return pid, pos


def _end(b: bytes, pos: int) -> None:
    if pos != len(b):
        raise _Bad(f"{len(b) - pos} bytes after the end of the packet's fields")


def _has_wildcard(topic: str) -> bool:
    return "+" in topic or "#" in topic


def _check_filter(topic: str) -> None:
    if not topic:
        raise _Bad("an empty topic filter", PROTOCOL_ERROR)
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise _Bad(f"a misplaced '#' in the topic filter {topic!r}", PROTOCOL_ERROR)
        if "+" in level and level != "+":
            raise _Bad(f"a misplaced '+' in the topic filter {topic!r}", PROTOCOL_ERROR)


class Reader:
    """Incremental packet reader for one connection.

    ``version`` is the protocol level (4 or 5). A server's reader starts at 0 and learns
    it from the CONNECT, which must come first. ``max_size`` caps a packet's remaining
    length (reason 0x95 beyond it).
    """

    __slots__ = ("_buf", "error", "max_size", "version")

    def __init__(self, version: int = 0, max_size: int = MAX_PACKET) -> None:
        self.version = version
        self.max_size = max_size
        self.error: ProtocolError | None = None
        self._buf = b""

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet held back."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        """The packets ``data`` completes, in order. On a broken packet, the ones before it,
        with :attr:`error` set; nothing more is read after that."""
        out: list[Packet] = []
        if self.error is not None:
            return out
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos = 0
        n = len(data)
        while pos < n:
            start = pos
            first = data[pos]
            # Remaining length: 1 to 4 bytes, 7 bits each.
            length = 0
            shift = 0
            pos += 1
            while True:
                if pos >= n:
                    self._buf = data[start:]
                    return out
                byte = data[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift >= 28:
                    self._fail(MALFORMED, "a remaining length longer than 4 bytes")
                    return out
            if length > self.max_size:
                self._fail(
                    TOO_LARGE, f"a packet of {length:,} bytes, above the cap of {self.max_size:,}"
                )
                return out
            end = pos + length
            if end > n:
                self._buf = data[start:]
                return out
            try:
                out.append(self._decode(first, data[pos:end]))
            except _Bad as e:
                self._fail(e.reason, str(e))
                return out
            pos = end
        return out

    def _fail(self, reason: int, message: str) -> None:
        self.error = ProtocolError(reason, message)
        self._buf = b""

    def _decode(self, first: int, body: bytes) -> Packet:
        kind = first >> 4
        flags = first & 0x0F
        if kind == PUBLISH:
            return self._publish(flags, body)
        if kind == 0:
            raise _Bad("packet type 0 is reserved")
        if flags != _FLAGS[kind]:
            raise _Bad(f"reserved flags 0x{flags:x} set in {NAMES[kind]}")
        version = self.version
        if kind == CONNECT:
            if version:
                raise _Bad("a second CONNECT", PROTOCOL_ERROR)
            packet = _connect(body)
            self.version = packet.version
            return packet
        if not version:
            raise _Bad(f"{NAMES[kind]} before CONNECT", PROTOCOL_ERROR)
        v5 = version == 5
        if PUBACK <= kind <= PUBCOMP:
            return _ack(kind, body, v5)
        if kind in (PINGREQ, PINGRESP):
            if body:
                raise _Bad(f"{NAMES[kind]} with a body")
            return _PINGREQ if kind == PINGREQ else _PINGRESP
        if kind == CONNACK:
            return _connack(body, v5)
        if kind == SUBSCRIBE:
            return _subscribe(body, v5)
        if kind == SUBACK:
            return _suback(body, v5)
        if kind == UNSUBSCRIBE:
            return _unsubscribe(body, v5)
        if kind == UNSUBACK:
            return _unsuback(body, v5)
        if kind == DISCONNECT:
            return _disconnect(body, v5)
        return _auth(body, v5)

    def _publish(self, flags: int, body: bytes) -> Publish:
        if not self.version:
            raise _Bad("PUBLISH before CONNECT", PROTOCOL_ERROR)
        qos = (flags >> 1) & 3
        if qos == 3:
            raise _Bad("PUBLISH with QoS 3")
        dup = bool(flags & 8)
        if dup and not qos:
            raise _Bad("PUBLISH with DUP set at QoS 0")
        topic, pos = _str(body, 0)
        if _has_wildcard(topic):
            raise _Bad(f"a wildcard in the PUBLISH topic {topic!r}", TOPIC_INVALID)
        pid = 0
        if qos:
            pid, pos = _packet_id(body, pos)
        props = _NO_PROPS
        if self.version == 5:
            props, pos = _props(body, pos, PUBLISH)
            if not topic and TOPIC_ALIAS not in props:
                raise _Bad("an empty PUBLISH topic without a topic alias", PROTOCOL_ERROR)
        elif not topic:
            raise _Bad("an empty PUBLISH topic", PROTOCOL_ERROR)
        return Publish(topic, body[pos:], qos, bool(flags & 1), dup, pid, props)


def _connect(body: bytes) -> Connect:
    name, pos = _str(body, 0)
    if name != "MQTT":
        raise _Bad(f"protocol name {name[:20]!r}, not 'MQTT'", PROTOCOL_ERROR)
    if pos >= len(body):
        raise _Bad("CONNECT ends before its protocol level")
    level = body[pos]
    pos += 1
    if level not in (4, 5):
        raise _Bad(
            f"protocol level {level}: this server speaks 4 (3.1.1) and 5", UNSUPPORTED_VERSION
        )
    if pos >= len(body):
        raise _Bad("CONNECT ends before its flags")
    flags = body[pos]
    pos += 1
    if flags & 1:
        raise _Bad("the reserved CONNECT flag is set")
    keepalive, pos = _u16(body, pos)
    props: Properties = {}
    if level == 5:
        props, pos = _props(body, pos, CONNECT)
    client_id, pos = _str(body, pos)
    will = None
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if will_flag:
        if will_qos == 3:
            raise _Bad("will QoS 3")
        will_props: Properties = {}
        if level == 5:
            will_props, pos = _props(body, pos, _WILL)
        topic, pos = _str(body, pos)
        if not topic or _has_wildcard(topic):
            raise _Bad(f"bad will topic {topic!r}", TOPIC_INVALID)
        payload, pos = _bin(body, pos)
        will = Will(topic, payload, will_qos, will_retain, will_props)
    elif will_qos or will_retain:
        raise _Bad("will QoS or retain set without a will")
    username = None
    password = None
    if flags & 0x80:
        username, pos = _str(body, pos)
    if flags & 0x40:
        if level == 4 and not flags & 0x80:
            raise _Bad("a password without a user name")
        password, pos = _bin(body, pos)
    _end(body, pos)
    return Connect(client_id, level, keepalive, bool(flags & 2), username, password, will, props)


def _ack(kind: int, body: bytes, v5: bool) -> Ack:
    """PUBACK, PUBREC, PUBREL or PUBCOMP."""
    pid, pos = _packet_id(body, 0)
    if not v5 or pos == len(body):
        _end(body, pos)
        return Ack(kind, pid)
    reason = body[pos]
    pos += 1
    props = _NO_PROPS
    if pos < len(body):
        props, pos = _props(body, pos, kind)
    _end(body, pos)
    return Ack(kind, pid, reason, props)


def _id_and_props(body: bytes, v5: bool, kind: int) -> tuple[int, Properties, int]:
    """The packet id, and in MQTT 5 the properties, that open a (UN)SUBSCRIBE or a
    SUBACK: ``(packet id, properties, position after them)``."""
    pid, pos = _packet_id(body, 0)
    props: Properties = {}
    if v5:
        props, pos = _props(body, pos, kind)
    return pid, props, pos


def _reason_and_props(body: bytes, kind: int) -> tuple[int, Properties]:
    """An MQTT 5 DISCONNECT's or AUTH's reason code and properties (the body is not
    empty); the body must end with them."""
    props, pos = _props(body, 1, kind) if len(body) > 1 else ({}, 1)
    _end(body, pos)
    return body[0], props


def _suback(body: bytes, v5: bool) -> Suback:
    pid, props, pos = _id_and_props(body, v5, SUBACK)
    if pos >= len(body):
        raise _Bad("SUBACK without reason codes", PROTOCOL_ERROR)
    return Suback(pid, list(body[pos:]), props)


def _unsubscribe(body: bytes, v5: bool) -> Unsubscribe:
    pid, props, pos = _id_and_props(body, v5, UNSUBSCRIBE)
    topics = []
    while pos < len(body):
        topic, pos = _str(body, pos)
        _check_filter(topic)
        topics.append(topic)
    if not topics:
        raise _Bad("UNSUBSCRIBE without topic filters", PROTOCOL_ERROR)
    return Unsubscribe(pid, topics, props)


def _unsuback(body: bytes, v5: bool) -> Unsuback:
    pid, pos = _packet_id(body, 0)
    if not v5:
        _end(body, pos)
        return Unsuback(pid, [])
    props, pos = _props(body, pos, UNSUBACK)
    return Unsuback(pid, list(body[pos:]), props)


def _disconnect(body: bytes, v5: bool) -> Disconnect:
    if not body:
        return Disconnect()
    if not v5:
        raise _Bad("DISCONNECT with a body")
    return Disconnect(*_reason_and_props(body, DISCONNECT))


def _auth(body: bytes, v5: bool) -> Auth:
    if not v5:
        raise _Bad("AUTH is an MQTT 5 packet", PROTOCOL_ERROR)
    if not body:
        return Auth()
    return Auth(*_reason_and_props(body, AUTH))


def _connack(body: bytes, v5: bool) -> Connack:
    if len(body) < 2:
        raise _Bad("CONNACK shorter than 2 bytes")
    if body[0] & 0xFE:
        raise _Bad("reserved CONNACK acknowledge flags set")
    props: Properties = {}
    pos = 2
    if v5:
        props, pos = _props(body, 2, CONNACK)
    _end(body, pos)
    return Connack(bool(body[0] & 1), body[1], props)


def _subscribe(body: bytes, v5: bool) -> Subscribe:
    pid, props, pos = _id_and_props(body, v5, SUBSCRIBE)
    topics = []
    while pos < len(body):
        topic, pos = _str(body, pos)
        _check_filter(topic)
        if pos >= len(body):
            raise _Bad("a topic filter without its options")
        options = body[pos]
        pos += 1
        if options & 3 == 3:
            raise _Bad("subscription with QoS 3")
        if options & (0xC0 if v5 else 0xFC) or (v5 and (options >> 4) & 3 == 3):
            raise _Bad("reserved subscription option bits set")
        topics.append((topic, options))
    if not topics:
        raise _Bad("SUBSCRIBE without topic filters", PROTOCOL_ERROR)
    return Subscribe(pid, topics, props)


# Encoding.


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_PACKET:
        raise ValueError(f"{value} does not fit a variable-length integer")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _enc_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("a string longer than 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _enc_bin(raw: bytes) -> bytes:
    if len(raw) > 0xFFFF:
        raise ValueError("binary data longer than 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def encode_properties(props: Properties | None) -> bytes:
    """An MQTT 5 property section, length included."""
    parts = []
    for pid, value in (props or {}).items():
        kind = _P[pid][0]
        for v in value if pid in _REPEATABLE else (value,):
            parts.append(encode_varint(pid))
            if kind == _BYTE:
                parts.append(bytes((v,)))
            elif kind == _U16:
                parts.append(v.to_bytes(2, "big"))
            elif kind == _U32:
                parts.append(v.to_bytes(4, "big"))
            elif kind == _VARINT:
                parts.append(encode_varint(v))
            elif kind == _STR:
                parts.append(_enc_str(v))
            elif kind == _BIN:
                parts.append(_enc_bin(v))
            else:
                parts.append(_enc_str(v[0]) + _enc_str(v[1]))
    section = b"".join(parts)
    return encode_varint(len(section)) + section


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_connect(packet: Connect) -> bytes:
    v5 = packet.version == 5
    flags = 0x02 if packet.clean else 0
    will = packet.will
    parts = [_enc_str("MQTT"), bytes((packet.version,)), b"", packet.keepalive.to_bytes(2, "big")]
    if v5:
        parts.append(encode_properties(packet.properties))
    parts.append(_enc_str(packet.client_id))
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        if v5:
            parts.append(encode_properties(will.properties))
        parts += [_enc_str(will.topic), _enc_bin(will.payload)]
    if packet.username is not None:
        flags |= 0x80
        parts.append(_enc_str(packet.username))
    if packet.password is not None:
        flags |= 0x40
        parts.append(_enc_bin(packet.password))
    parts[2] = bytes((flags,))
    return _packet(CONNECT << 4, b"".join(parts))


def encode_connack(
    session_present: bool, reason: int, version: int, properties: Properties | None = None
) -> bytes:
    body = bytes((1 if session_present else 0, reason))
    if version == 5:
        body += encode_properties(properties)
    return _packet(CONNACK << 4, body)


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    packet_id: int = 0,
    version: int = 4,
    retain: bool = False,
    dup: bool = False,
    properties: Properties | None = None,
) -> bytes:
    first = (PUBLISH << 4) | (8 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _enc_str(topic)
    if qos:
        body += packet_id.to_bytes(2, "big")
    if version == 5:
        body += encode_properties(properties)
    return _packet(first, body + payload)


class PublishTemplate:
    """The bytes of PUBLISHes that differ only in packet id and payload (of one size).

    ``head`` is everything before the packet id (fixed header with its remaining
    length, topic), ``mid`` everything between it and the payload (MQTT 5
    properties). A message is ``head + pid + mid + payload``; at QoS 0 there is no
    packet id and ``mid`` follows ``head`` directly."""

    __slots__ = ("head", "mid", "payload_size", "qos")

    def __init__(
        self,
        topic: str,
        payload_size: int,
        qos: int = 0,
        version: int = 4,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        topic_bytes = _enc_str(topic)
        self.mid = encode_properties(properties) if version == 5 else b""
        length = len(topic_bytes) + (2 if qos else 0) + len(self.mid) + payload_size
        first = (PUBLISH << 4) | (qos << 1) | (1 if retain else 0)
        self.head = bytes((first,)) + encode_varint(length) + topic_bytes
        self.payload_size = payload_size
        self.qos = qos

    def encode(self, payload: bytes, packet_id: int = 0) -> bytes:
        if self.qos:
            return self.head + packet_id.to_bytes(2, "big") + self.mid + payload
        return self.head + self.mid + payload


def encode_ack(
    type: int,
    packet_id: int,
    version: int = 4,
    reason: int = 0,
    properties: Properties | None = None,
) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP. In MQTT 5 a success without properties is the
    short form, as brokers send it."""
    first = (type << 4) | (2 if type == PUBREL else 0)
    if version == 5 and (reason or properties):
        body = packet_id.to_bytes(2, "big") + bytes((reason,))
        if properties:
            body += encode_properties(properties)
        return _packet(first, body)
    return bytes((first, 2)) + packet_id.to_bytes(2, "big")


def encode_subscribe(
    packet_id: int,
    topics: list[tuple[str, int]],
    version: int = 4,
    properties: Properties | None = None,
) -> bytes:
    body = packet_id.to_bytes(2, "big")
    if version == 5:
        body += encode_properties(properties)
    body += b"".join(_enc_str(topic) + bytes((options,)) for topic, options in topics)
    return _packet((SUBSCRIBE << 4) | 2, body)


def encode_suback(
    packet_id: int, codes: list[int], version: int = 4, properties: Properties | None = None
) -> bytes:
    body = packet_id.to_bytes(2, "big")
    if version == 5:
        body += encode_properties(properties)
    return _packet(SUBACK << 4, body + bytes(codes))


def encode_unsubscribe(
    packet_id: int, topics: list[str], version: int = 4, properties: Properties | None = None
) -> bytes:
    body = packet_id.to_bytes(2, "big")
    if version == 5:
        body += encode_properties(properties)
    body += b"".join(_enc_str(topic) for topic in topics)
    return _packet((UNSUBSCRIBE << 4) | 2, body)


def encode_unsuback(
    packet_id: int, codes: list[int], version: int = 4, properties: Properties | None = None
) -> bytes:
    body = packet_id.to_bytes(2, "big")
    if version == 5:
        body += encode_properties(properties) + bytes(codes)
    return _packet(UNSUBACK << 4, body)


def encode_disconnect(
    version: int = 4, reason: int = 0, properties: Properties | None = None
) -> bytes:
    if version != 5 or (not reason and not properties):
        return b"\xe0\x00"
    body = bytes((reason,))
    if properties:
        body += encode_properties(properties)
    return _packet(DISCONNECT << 4, body)
