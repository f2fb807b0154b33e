"""MQTT's packets as plain slotted classes: one allocation per packet, no dicts."""

from __future__ import annotations

from typing import Any, Final

from tippingpoint.wire.mqtt.codes import (
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
)

__all__ = [
    "PINGREQ_BYTES",
    "PINGRESP_BYTES",
    "Ack",
    "Auth",
    "Connack",
    "Connect",
    "Disconnect",
    "Packet",
    "Ping",
    "Properties",
    "ProtocolError",
    "Publish",
    "Suback",
    "Subscribe",
    "Unsuback",
    "Unsubscribe",
    "Will",
]

Properties = dict[int, Any]
"""Property id -> value; a list of values for user properties (name, value pairs) and
subscription identifiers."""

_NO_PROPS: Final[Properties] = {}
"""Shared by the packets that carry no properties (never changed)."""


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

PINGREQ_BYTES: Final = b"\xc0\x00"
PINGRESP_BYTES: Final = b"\xd0\x00"
