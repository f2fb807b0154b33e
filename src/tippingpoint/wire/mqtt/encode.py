"""Writing MQTT: each encoder returns the bytes of one packet.

:class:`PublishTemplate` pre-computes the parts of a PUBLISH that repeat (fixed header,
topic, properties) so that a publisher adds only its packet id and payload per
message."""

from __future__ import annotations

from tippingpoint.wire.mqtt.codes import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PUBLISH,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
)
from tippingpoint.wire.mqtt.fields import enc_bin, enc_str, encode_varint
from tippingpoint.wire.mqtt.packets import Connect, Properties
from tippingpoint.wire.mqtt.properties import encode_properties

__all__ = [
    "PublishTemplate",
    "encode_ack",
    "encode_connack",
    "encode_connect",
    "encode_disconnect",
    "encode_publish",
    "encode_suback",
    "encode_subscribe",
    "encode_unsuback",
    "encode_unsubscribe",
]


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_connect(packet: Connect) -> bytes:
    v5 = packet.version == 5
    flags = 0x02 if packet.clean else 0
    will = packet.will
    parts = [enc_str("MQTT"), bytes((packet.version,)), b"", packet.keepalive.to_bytes(2, "big")]
    if v5:
        parts.append(encode_properties(packet.properties))
    parts.append(enc_str(packet.client_id))
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        if v5:
            parts.append(encode_properties(will.properties))
        parts += [enc_str(will.topic), enc_bin(will.payload)]
    if packet.username is not None:
        flags |= 0x80
        parts.append(enc_str(packet.username))
    if packet.password is not None:
        flags |= 0x40
        parts.append(enc_bin(packet.password))
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
    body = enc_str(topic)
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
        topic_bytes = enc_str(topic)
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
    body += b"".join(enc_str(topic) + bytes((options,)) for topic, options in topics)
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
    body += b"".join(enc_str(topic) for topic in topics)
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
