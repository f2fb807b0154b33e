"""The fields packets are made of, both ways: integers, strings, binary data, topic
filters. A decoder takes ``(body, pos)`` and returns ``(value, new pos)``; running past
the end of the body raises :class:`Bad`, which the reader turns into a protocol error."""

from __future__ import annotations

from tippingpoint.wire.mqtt.codes import MALFORMED, MAX_PACKET, PROTOCOL_ERROR

__all__ = [
    "Bad",
    "bin_",
    "check_filter",
    "enc_bin",
    "enc_str",
    "encode_varint",
    "end",
    "has_wildcard",
    "packet_id",
    "str_",
    "u16",
    "u32",
    "varint",
]


class Bad(Exception):
    """Raised while decoding, turned into a ``ProtocolError`` by the reader."""

    def __init__(self, message: str, reason: int = MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


def u16(b: bytes, pos: int) -> tuple[int, int]:
    if pos + 2 > len(b):
        raise Bad("a two-byte integer runs past the end of the packet")
    return (b[pos] << 8) | b[pos + 1], pos + 2


def u32(b: bytes, pos: int) -> tuple[int, int]:
    if pos + 4 > len(b):
        raise Bad("a four-byte integer runs past the end of the packet")
    return int.from_bytes(b[pos : pos + 4], "big"), pos + 4


def varint(b: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(4):
        if pos >= len(b):
            raise Bad("a variable-length integer runs past the end of the packet")
        byte = b[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise Bad("a variable-length integer longer than 4 bytes")


def bin_(b: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = u16(b, pos)
    if pos + n > len(b):
        raise Bad("a length runs past the end of the packet")
    return b[pos : pos + n], pos + n


def str_(b: bytes, pos: int) -> tuple[str, int]:
    raw, pos = bin_(b, pos)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Bad("invalid UTF-8 in a string") from None
    if "\x00" in text:
        raise Bad("U+0000 in a string")
    return text, pos


def packet_id(b: bytes, pos: int) -> tuple[int, int]:
    pid, pos = u16(b, pos)
    if pid == 0:
        raise Bad("a packet id of 0", PROTOCOL_ERROR)
    return pid, pos


def end(b: bytes, pos: int) -> None:
    if pos != len(b):
        raise Bad(f"{len(b) - pos} bytes after the end of the packet's fields")


def has_wildcard(topic: str) -> bool:
    return "+" in topic or "#" in topic


def check_filter(topic: str) -> None:
    if not topic:
        raise Bad("an empty topic filter", PROTOCOL_ERROR)
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise Bad(f"a misplaced '#' in the topic filter {topic!r}", PROTOCOL_ERROR)
        if "+" in level and level != "+":
            raise Bad(f"a misplaced '+' in the topic filter {topic!r}", PROTOCOL_ERROR)


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


def enc_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("a string longer than 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def enc_bin(raw: bytes) -> bytes:
    if len(raw) > 0xFFFF:
        raise ValueError("binary data longer than 65,535 bytes")
    return len(raw).to_bytes(2, "big") + raw
