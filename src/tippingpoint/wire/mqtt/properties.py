"""MQTT 5 properties (2.2.2), one table: each property's value type and the packets it
may appear in. A value type is a pair of functions, one per direction, so that neither
decoding nor encoding branches on the type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from tippingpoint.wire.mqtt.codes import (
    ASSIGNED_CLIENT_ID,
    AUTH,
    AUTH_DATA,
    AUTH_METHOD,
    CONNACK,
    CONNECT,
    CONTENT_TYPE,
    CORRELATION_DATA,
    DISCONNECT,
    MAXIMUM_PACKET_SIZE,
    MAXIMUM_QOS,
    MESSAGE_EXPIRY,
    NAMES,
    PAYLOAD_FORMAT,
    PROTOCOL_ERROR,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    REQUEST_PROBLEM_INFO,
    REQUEST_RESPONSE_INFO,
    RESPONSE_INFO,
    RESPONSE_TOPIC,
    RETAIN_AVAILABLE,
    SERVER_KEEPALIVE,
    SERVER_REFERENCE,
    SESSION_EXPIRY,
    SHARED_AVAILABLE,
    SUBACK,
    SUBSCRIBE,
    SUBSCRIPTION_ID,
    SUBSCRIPTION_ID_AVAILABLE,
    TOPIC_ALIAS,
    TOPIC_ALIAS_MAXIMUM,
    UNSUBACK,
    UNSUBSCRIBE,
    USER_PROPERTY,
    WILDCARD_AVAILABLE,
    WILL_DELAY,
)
from tippingpoint.wire.mqtt.fields import (
    Bad,
    bin_,
    enc_bin,
    enc_str,
    encode_varint,
    str_,
    u16,
    u32,
    varint,
)
from tippingpoint.wire.mqtt.packets import Properties

__all__ = ["WILL", "decode_properties", "encode_properties"]

WILL: Final = 100
"""Pseudo packet type for the will properties of a CONNECT."""


class ValueType(NamedTuple):
    decode: Callable[[bytes, int], tuple[Any, int]]
    encode: Callable[[Any], bytes]


def _byte(b: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(b):
        raise Bad("a property runs past the end of its section")
    return b[pos], pos + 1


def _pair(b: bytes, pos: int) -> tuple[tuple[str, str], int]:
    name, pos = str_(b, pos)
    text, pos = str_(b, pos)
    return (name, text), pos


_BYTE: Final = ValueType(_byte, lambda v: bytes((v,)))
_U16: Final = ValueType(u16, lambda v: v.to_bytes(2, "big"))
_U32: Final = ValueType(u32, lambda v: v.to_bytes(4, "big"))
_VARINT: Final = ValueType(varint, encode_varint)
_STR: Final = ValueType(str_, enc_str)
_BIN: Final = ValueType(bin_, enc_bin)
_PAIR: Final = ValueType(_pair, lambda v: enc_str(v[0]) + enc_str(v[1]))

_EVERY: Final = frozenset(
    {CONNECT, CONNACK, PUBLISH, WILL, PUBACK, PUBREC, PUBREL, PUBCOMP}
    | {SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH}
)

_TABLE: Final[dict[int, tuple[ValueType, frozenset[int]]]] = {
    # id: (value type, packets it may appear in)
    PAYLOAD_FORMAT: (_BYTE, frozenset({PUBLISH, WILL})),
    MESSAGE_EXPIRY: (_U32, frozenset({PUBLISH, WILL})),
    CONTENT_TYPE: (_STR, frozenset({PUBLISH, WILL})),
    RESPONSE_TOPIC: (_STR, frozenset({PUBLISH, WILL})),
    CORRELATION_DATA: (_BIN, frozenset({PUBLISH, WILL})),
    SUBSCRIPTION_ID: (_VARINT, frozenset({PUBLISH, SUBSCRIBE})),
    SESSION_EXPIRY: (_U32, frozenset({CONNECT, CONNACK, DISCONNECT})),
    ASSIGNED_CLIENT_ID: (_STR, frozenset({CONNACK})),
    SERVER_KEEPALIVE: (_U16, frozenset({CONNACK})),
    AUTH_METHOD: (_STR, frozenset({CONNECT, CONNACK, AUTH})),
    AUTH_DATA: (_BIN, frozenset({CONNECT, CONNACK, AUTH})),
    REQUEST_PROBLEM_INFO: (_BYTE, frozenset({CONNECT})),
    WILL_DELAY: (_U32, frozenset({WILL})),
    REQUEST_RESPONSE_INFO: (_BYTE, frozenset({CONNECT})),
    RESPONSE_INFO: (_STR, frozenset({CONNACK})),
    SERVER_REFERENCE: (_STR, frozenset({CONNACK, DISCONNECT})),
    REASON_STRING: (
        _STR,
        frozenset({CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH}),
    ),
    RECEIVE_MAXIMUM: (_U16, frozenset({CONNECT, CONNACK})),
    TOPIC_ALIAS_MAXIMUM: (_U16, frozenset({CONNECT, CONNACK})),
    TOPIC_ALIAS: (_U16, frozenset({PUBLISH})),
    MAXIMUM_QOS: (_BYTE, frozenset({CONNACK})),
    RETAIN_AVAILABLE: (_BYTE, frozenset({CONNACK})),
    USER_PROPERTY: (_PAIR, _EVERY),
    MAXIMUM_PACKET_SIZE: (_U32, frozenset({CONNECT, CONNACK})),
    WILDCARD_AVAILABLE: (_BYTE, frozenset({CONNACK})),
    SUBSCRIPTION_ID_AVAILABLE: (_BYTE, frozenset({CONNACK})),
    SHARED_AVAILABLE: (_BYTE, frozenset({CONNACK})),
}
_REPEATABLE: Final = frozenset({USER_PROPERTY, SUBSCRIPTION_ID})
"""Properties that may occur more than once; their values are kept as lists."""


def decode_properties(b: bytes, pos: int, where: int) -> tuple[Properties, int]:
    """The property section at ``pos`` of a ``where`` packet (a packet type, or
    :data:`WILL`), and the position after it."""
    length, pos = varint(b, pos)
    end = pos + length
    if end > len(b):
        raise Bad("the properties run past the end of the packet")
    if not length:
        return {}, pos
    out: Properties = {}
    section = b[:end]
    while pos < end:
        pid, pos = varint(section, pos)
        spec = _TABLE.get(pid)
        if spec is None:
            raise Bad(f"unknown property 0x{pid:02x}")
        value_type, allowed = spec
        if where not in allowed:
            raise Bad(f"property 0x{pid:02x} is not allowed in {NAMES.get(where, 'a will')}")
        value, pos = value_type.decode(section, pos)
        if pid in _REPEATABLE:
            if value == 0 and pid == SUBSCRIPTION_ID:
                raise Bad("a subscription identifier of 0", PROTOCOL_ERROR)
            out.setdefault(pid, []).append(value)
        elif pid in out:
            raise Bad(f"property 0x{pid:02x} given twice", PROTOCOL_ERROR)
        else:
            out[pid] = value
    return out, pos


def encode_properties(props: Properties | None) -> bytes:
    """An MQTT 5 property section, length included."""
    parts = []
    for pid, value in (props or {}).items():
        encode = _TABLE[pid][0].encode
        for v in value if pid in _REPEATABLE else (value,):
            parts.append(encode_varint(pid))
            parts.append(encode(v))
    section = b"".join(parts)
    return encode_varint(len(section)) + section
