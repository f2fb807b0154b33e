"""wire/ws.py: RFC 6455 framing and handshake, without I/O.

The frames the reader must take are built by the `websockets` library's own framing
code where it can build them (an independent encoder); the broken ones by hand.
"""

from __future__ import annotations

import struct

import pytest
from websockets.frames import Close, Frame, Opcode

from tippingpoint.wire import ws


def masked(frame: Frame) -> bytes:
    return frame.serialize(mask=True)


def read_all(reader: ws.FrameReader, data: bytes) -> list[tuple[int, bytes]]:
    reader.feed(data)
    out = []
    while (event := reader.next()) is not None:
        out.append(event)
    return out


def raw(first: int, payload: bytes, key: bytes = b"\x01\x02\x03\x04", length: bytes = b"") -> bytes:
    """A masked frame as written, broken however the caller likes."""
    n = len(payload)
    if not length:
        length = bytes((0x80 | n,)) if n < 126 else b"\xfe" + struct.pack("!H", n)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((first,)) + length + key + body


def code_of(data: bytes, server: bool = True) -> int:
    with pytest.raises(ws.WsError) as info:
        read_all(ws.FrameReader(server=server, max_message=1000), data)
    return info.value.code


def test_the_accept_key_of_rfc_6455() -> None:
    assert ws.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_masked_frames_from_an_independent_encoder_are_read() -> None:
    reader = ws.FrameReader(server=True)
    data = (
        masked(Frame(Opcode.TEXT, "héllo".encode()))
        + masked(Frame(Opcode.BINARY, bytes(range(256)) * 300))  # 64-bit length
        + masked(Frame(Opcode.TEXT, b"x" * 200))  # 16-bit length
        + masked(Frame(Opcode.PING, b"p"))
    )
    events = []
    for i in range(0, len(data), 7):  # fed in pieces
        events += read_all(reader, data[i : i + 7])
    assert events == [
        (ws.TEXT, "héllo".encode()),
        (ws.BINARY, bytes(range(256)) * 300),
        (ws.TEXT, b"x" * 200),
        (ws.PING, b"p"),
    ]


def test_fragments_are_joined_and_control_frames_pass_between_them() -> None:
    reader = ws.FrameReader(server=True)
    data = (
        masked(Frame(Opcode.TEXT, b"pi", fin=False))
        + masked(Frame(Opcode.PING, b""))
        + masked(Frame(Opcode.CONT, b"n", fin=False))
        + masked(Frame(Opcode.CONT, b"g"))
    )
    assert read_all(reader, data) == [(ws.PING, b""), (ws.TEXT, b"ping")]


def test_our_frames_are_read_by_the_independent_decoder() -> None:
    from websockets.streams import StreamReader

    # Every length of the one-integer short frame (1-125), and either side of it.
    lengths = [*range(0, 130), 70_000]
    for payload in (bytes(range(n % 256)) * (n // 256) + bytes(range(n % 256)) for n in lengths):
        stream = StreamReader()
        stream.feed_data(ws.client_frame(ws.BINARY, payload))
        frame = next_frame(stream, mask=True)
        assert frame.data == payload and frame.opcode == Opcode.BINARY and frame.fin
        stream = StreamReader()
        stream.feed_data(ws.server_frame(ws.TEXT, payload))
        assert next_frame(stream, mask=False).data == payload


def next_frame(stream, mask: bool) -> Frame:
    parser = Frame.parse(stream.read_exact, mask=mask, max_size=None, extensions=None)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")


def test_each_client_frame_has_its_own_masking_key() -> None:
    keys = {ws.client_frame(ws.TEXT, b"ping")[2:6] for _ in range(100)}
    assert len(keys) > 90


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (ws.server_frame(ws.TEXT, b"ping"), 1002),  # unmasked client frame
        (raw(0x81 | 0x40, b"ping"), 1002),  # RSV1 without an extension
        (raw(0x83, b"x"), 1002),  # reserved data opcode
        (raw(0x8B, b"x"), 1002),  # reserved control opcode
        (raw(0x89, b"x" * 126), 1002),  # control frame over 125 bytes
        (raw(0x09, b"x"), 1002),  # fragmented control frame
        (raw(0x80, b"x"), 1002),  # continuation with nothing to continue
        (raw(0x01, b"a") + raw(0x81, b"b"), 1002),  # data frame inside a fragmented one
        (raw(0x81, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (raw(0x01, b"\xc3") + raw(0x80, b"\x28"), 1007),  # not UTF-8 once joined
        (raw(0x88, b"\x03"), 1002),  # a 1-byte close payload
        (raw(0x88, struct.pack("!H", 1005)), 1002),  # a code no one may send
        (raw(0x88, struct.pack("!H", 999)), 1002),
        (raw(0x88, struct.pack("!H", 2000)), 1002),
        (raw(0x88, struct.pack("!H", 1000) + b"\xff"), 1007),  # reason not UTF-8
        (raw(0x82, b"x" * 2000), 1009),  # over the message limit
        (raw(0x82, b"x" * 10, length=b"\xfe\x00\x0a"), 1002),  # non-minimal length
    ],
)
def test_a_broken_frame_fails_with_the_code_rfc_6455_asks(data: bytes, code: int) -> None:
    reader = ws.FrameReader(server=True, max_message=1000)
    reader.feed(data)
    with pytest.raises(ws.WsError) as info:
        while (event := reader.next()) is not None:
            if event[0] == ws.CLOSE:  # given out whole; its payload is checked apart
                ws.check_close(event[1])
        raise AssertionError("no error")
    assert info.value.code == code


def test_a_client_reader_refuses_a_masked_frame() -> None:
    assert code_of(masked(Frame(Opcode.TEXT, b"x")), server=False) == 1002


def test_close_codes() -> None:
    assert ws.check_close(b"") == (1005, "")
    assert ws.check_close(Close(1000, "bye").serialize()) == (1000, "bye")
    assert ws.check_close(struct.pack("!H", 4000)) == (4000, "")


def test_handshake_is_read_and_answered() -> None:
    key = ws.new_key()
    request = ws.upgrade_request("127.0.0.1:80", "/chat", key, "mqtt")
    head, _, _ = request.partition(b"\r\n")
    block = request[len(head) : -2]
    hs = ws.read_handshake(block.lower(), block, True, False)
    assert hs.error == "" and hs.key == key and hs.protocols == (b"mqtt",)
    assert ws.read_answer(hs.response(b"mqtt"), key, "mqtt") == ""
    assert "subprotocol" in ws.read_answer(hs.response(), key, "mqtt")
    assert "Accept" in ws.read_answer(hs.response(), ws.new_key())
    assert "404" in ws.read_answer(b"HTTP/1.1 404 Not Found\r\n\r\n", key)


@pytest.mark.parametrize(
    ("block", "get", "error"),
    [
        (b"\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n", True, "Connection"),
        (b"\r\nconnection: upgrade\r\nsec-websocket-key: abc\r\n", True, "Key"),
        (
            b"\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"sec-websocket-version: 8\r\n",
            True,
            "Version must be 13",
        ),
        (b"\r\nconnection: upgrade\r\n", False, "GET"),
    ],
)
def test_a_bad_upgrade_says_why(block: bytes, get: bool, error: str) -> None:
    assert error in ws.read_handshake(block.lower(), block, get, False).error


def test_ping_words() -> None:
    assert ws.parse_ping(b"ping") == (0, 0)
    assert ws.parse_ping(b"ping sleep=300 times=2 other") == (300, 2)
    assert "sleep" in str(ws.parse_ping(b"ping sleep=-1"))
    assert "times" in str(ws.parse_ping(b"ping times=100001"))


def upgraded_client() -> ws.ClientWs:
    client = ws.ClientWs()
    client.upgraded = True
    return client


def test_a_client_reads_whole_short_frames_as_the_general_reader_does() -> None:
    """A frame that arrives whole and alone is read without the general reader; what
    the general reader would refuse is still refused."""
    client = upgraded_client()
    assert client.feed(ws.server_frame(ws.TEXT, b"pong")) == [(ws.TEXT, b"pong")]
    assert client.feed(ws.server_frame(ws.BINARY, b"")) == [(ws.BINARY, b"")]
    frame = ws.server_frame(ws.TEXT, b"pong")
    assert client.feed(frame[:3]) == []  # split: buffered, then read whole
    assert client.feed(frame[3:] + frame) == [(ws.TEXT, b"pong"), (ws.TEXT, b"pong")]
    with pytest.raises(ws.Broken, match="close 1007"):
        upgraded_client().feed(ws.server_frame(ws.TEXT, b"\xff\xfe"))
    # A masked frame padded to the length its second byte would give unmasked.
    sneaky = masked(Frame(Opcode.TEXT, b"x"))
    sneaky += bytes(sneaky[1] + 2 - len(sneaky))
    with pytest.raises(ws.Broken, match="close 1002"):
        upgraded_client().feed(sneaky)
    # A whole data frame while a fragmented message is under way.
    client = upgraded_client()
    assert client.feed(ws.server_frame(ws.TEXT, b"a", fin=False)) == []
    with pytest.raises(ws.Broken, match="close 1002"):
        client.feed(ws.server_frame(ws.TEXT, b"b"))
