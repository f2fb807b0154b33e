"""Reading MQTT: bytes in, complete packets out, never an exception.

The reader is strict, and a broken packet is a protocol error, never an exception out
of :meth:`Reader.feed`: the reader sets :attr:`Reader.error` (a :class:`ProtocolError`
with the MQTT 5 reason code a server would send in its DISCONNECT) and stops reading.
Each packet type is a row of :data:`_TABLE`: the flags its fixed header must carry and
its decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from tippingpoint.wire.mqtt.codes import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    MALFORMED,
    MAX_PACKET,
    NAMES,
    PINGREQ,
    PINGRESP,
    PROTOCOL_ERROR,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    TOO_LARGE,
    TOPIC_ALIAS,
    TOPIC_INVALID,
    UNSUBACK,
    UNSUBSCRIBE,
    UNSUPPORTED_VERSION,
)
from tippingpoint.wire.mqtt.fields import (
    Bad,
    bin_,
    check_filter,
    end,
    has_wildcard,
    packet_id,
    str_,
    u16,
)
from tippingpoint.wire.mqtt.packets import (
    Ack,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Ping,
    Properties,
    ProtocolError,
    Publish,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from tippingpoint.wire.mqtt.properties import WILL, decode_properties

__all__ = ["Reader"]

Decoder = Callable[[int, bytes, bool], Packet]
"""(the fixed header's flags, the body, MQTT 5?) -> the packet; raises Bad."""

_NO_PROPS: Final[Properties] = {}
"""What a PUBLISH without properties carries (never changed)."""


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
            except Bad as e:
                self._fail(e.reason, str(e))
                return out
            pos = end
        return out

    def _fail(self, reason: int, message: str) -> None:
        self.error = ProtocolError(reason, message)
        self._buf = b""

    def _decode(self, first: int, body: bytes) -> Packet:
        kind = first >> 4
        entry = _TABLE[kind]
        if entry is None:
            raise Bad("packet type 0 is reserved")
        flags = first & 0x0F
        want, decode = entry
        if want >= 0 and flags != want:
            raise Bad(f"reserved flags 0x{flags:x} set in {NAMES[kind]}")
        version = self.version
        if kind == CONNECT:  # the one packet that sets the reader's state
            if version:
                raise Bad("a second CONNECT", PROTOCOL_ERROR)
            packet = decode(flags, body, False)
            assert isinstance(packet, Connect)
            self.version = packet.version
            return packet
        if not version:
            raise Bad(f"{NAMES[kind]} before CONNECT", PROTOCOL_ERROR)
        return decode(flags, body, version == 5)


def _publish(flags: int, body: bytes, v5: bool) -> Publish:
    qos = (flags >> 1) & 3
    if qos == 3:
        raise Bad("PUBLISH with QoS 3")
    dup = bool(flags & 8)
    if dup and not qos:
        raise Bad("PUBLISH with DUP set at QoS 0")
    topic, pos = str_(body, 0)
    if has_wildcard(topic):
        raise Bad(f"a wildcard in the PUBLISH topic {topic!r}", TOPIC_INVALID)
    pid = 0
    if qos:
        pid, pos = packet_id(body, pos)
    props = _NO_PROPS
    if v5:
        props, pos = decode_properties(body, pos, PUBLISH)
        if not topic and TOPIC_ALIAS not in props:
            raise Bad("an empty PUBLISH topic without a topic alias", PROTOCOL_ERROR)
    elif not topic:
        raise Bad("an empty PUBLISH topic", PROTOCOL_ERROR)
    return Publish(topic, body[pos:], qos, bool(flags & 1), dup, pid, props)


def _connect(flags: int, body: bytes, v5: bool) -> Connect:
    del flags, v5  # the level says the version
    name, pos = str_(body, 0)
    if name != "MQTT":
        raise Bad(f"protocol name {name[:20]!r}, not 'MQTT'", PROTOCOL_ERROR)
    if pos >= len(body):
        raise Bad("CONNECT ends before its protocol level")
    level = body[pos]
    pos += 1
    if level not in (4, 5):
        raise Bad(
            f"protocol level {level}: this server speaks 4 (3.1.1) and 5", UNSUPPORTED_VERSION
        )
    if pos >= len(body):
        raise Bad("CONNECT ends before its flags")
    flags = body[pos]
    pos += 1
    if flags & 1:
        raise Bad("the reserved CONNECT flag is set")
    keepalive, pos = u16(body, pos)
    props: Properties = {}
    if level == 5:
        props, pos = decode_properties(body, pos, CONNECT)
    client_id, pos = str_(body, pos)
    will = None
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if will_flag:
        if will_qos == 3:
            raise Bad("will QoS 3")
        will_props: Properties = {}
        if level == 5:
            will_props, pos = decode_properties(body, pos, WILL)
        topic, pos = str_(body, pos)
        if not topic or has_wildcard(topic):
            raise Bad(f"bad will topic {topic!r}", TOPIC_INVALID)
        payload, pos = bin_(body, pos)
        will = Will(topic, payload, will_qos, will_retain, will_props)
    elif will_qos or will_retain:
        raise Bad("will QoS or retain set without a will")
    username = None
    password = None
    if flags & 0x80:
        username, pos = str_(body, pos)
    if flags & 0x40:
        if level == 4 and not flags & 0x80:
            raise Bad("a password without a user name")
        password, pos = bin_(body, pos)
    end(body, pos)
    return Connect(client_id, level, keepalive, bool(flags & 2), username, password, will, props)


def _id_and_props(body: bytes, v5: bool, kind: int) -> tuple[int, Properties, int]:
    """The packet id, and in MQTT 5 the properties, that open a (UN)SUBSCRIBE or a
    SUBACK: ``(packet id, properties, position after them)``."""
    pid, pos = packet_id(body, 0)
    props: Properties = {}
    if v5:
        props, pos = decode_properties(body, pos, kind)
    return pid, props, pos


def _reason_and_props(body: bytes, kind: int) -> tuple[int, Properties]:
    """An MQTT 5 DISCONNECT's or AUTH's reason code and properties (the body is not
    empty); the body must end with them."""
    props, pos = decode_properties(body, 1, kind) if len(body) > 1 else ({}, 1)
    end(body, pos)
    return body[0], props


def _suback(flags: int, body: bytes, v5: bool) -> Suback:
    pid, props, pos = _id_and_props(body, v5, SUBACK)
    if pos >= len(body):
        raise Bad("SUBACK without reason codes", PROTOCOL_ERROR)
    return Suback(pid, list(body[pos:]), props)


def _unsubscribe(flags: int, body: bytes, v5: bool) -> Unsubscribe:
    pid, props, pos = _id_and_props(body, v5, UNSUBSCRIBE)
    topics = []
    while pos < len(body):
        topic, pos = str_(body, pos)
        check_filter(topic)
        topics.append(topic)
    if not topics:
        raise Bad("UNSUBSCRIBE without topic filters", PROTOCOL_ERROR)
    return Unsubscribe(pid, topics, props)


def _unsuback(flags: int, body: bytes, v5: bool) -> Unsuback:
    pid, pos = packet_id(body, 0)
    if not v5:
        end(body, pos)
        return Unsuback(pid, [])
    props, pos = decode_properties(body, pos, UNSUBACK)
    return Unsuback(pid, list(body[pos:]), props)


def _disconnect(flags: int, body: bytes, v5: bool) -> Disconnect:
    if not body:
        return Disconnect()
    if not v5:
        raise Bad("DISCONNECT with a body")
    return Disconnect(*_reason_and_props(body, DISCONNECT))


def _auth(flags: int, body: bytes, v5: bool) -> Auth:
    if not v5:
        raise Bad("AUTH is an MQTT 5 packet", PROTOCOL_ERROR)
    if not body:
        return Auth()
    return Auth(*_reason_and_props(body, AUTH))


def _connack(flags: int, body: bytes, v5: bool) -> Connack:
    if len(body) < 2:
        raise Bad("CONNACK shorter than 2 bytes")
    if body[0] & 0xFE:
        raise Bad("reserved CONNACK acknowledge flags set")
    props: Properties = {}
    pos = 2
    if v5:
        props, pos = decode_properties(body, 2, CONNACK)
    end(body, pos)
    return Connack(bool(body[0] & 1), body[1], props)


def _subscribe(flags: int, body: bytes, v5: bool) -> Subscribe:
    pid, props, pos = _id_and_props(body, v5, SUBSCRIBE)
    topics = []
    while pos < len(body):
        topic, pos = str_(body, pos)
        check_filter(topic)
        if pos >= len(body):
            raise Bad("a topic filter without its options")
        options = body[pos]
        pos += 1
        if options & 3 == 3:
            raise Bad("subscription with QoS 3")
        if options & (0xC0 if v5 else 0xFC) or (v5 and (options >> 4) & 3 == 3):
            raise Bad("reserved subscription option bits set")
        topics.append((topic, options))
    if not topics:
        raise Bad("SUBSCRIBE without topic filters", PROTOCOL_ERROR)
    return Subscribe(pid, topics, props)


def _acks(kind: int) -> Decoder:
    """PUBACK, PUBREC, PUBREL or PUBCOMP."""

    def decode(flags: int, body: bytes, v5: bool) -> Ack:
        pid, pos = packet_id(body, 0)
        if not v5 or pos == len(body):
            end(body, pos)
            return Ack(kind, pid)
        reason = body[pos]
        pos += 1
        props = _NO_PROPS
        if pos < len(body):
            props, pos = decode_properties(body, pos, kind)
        end(body, pos)
        return Ack(kind, pid, reason, props)

    return decode


def _bodiless(packet: Ping) -> Decoder:
    """PINGREQ or PINGRESP: always the same packet."""

    def decode(flags: int, body: bytes, v5: bool) -> Ping:
        if body:
            raise Bad(f"{NAMES[packet.type]} with a body")
        return packet

    return decode


_TABLE: Final[list[tuple[int, Decoder] | None]] = [
    # by packet type: (the fixed header's flags it must carry, or -1: its own; decoder)
    None,
    (0, _connect),
    (0, _connack),
    (-1, _publish),
    (0, _acks(PUBACK)),
    (0, _acks(PUBREC)),
    (2, _acks(PUBREL)),
    (0, _acks(PUBCOMP)),
    (2, _subscribe),
    (0, _suback),
    (2, _unsubscribe),
    (0, _unsuback),
    (0, _bodiless(Ping(PINGREQ))),
    (0, _bodiless(Ping(PINGRESP))),
    (0, _disconnect),
    (0, _auth),
]
