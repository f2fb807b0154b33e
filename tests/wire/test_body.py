"""The shared body reader, against h11 as the oracle: same body sizes, same ends."""

from __future__ import annotations

import random

import h11
import pytest

from tippingpoint.wire.body import BodyError, BodyReader


def h11_body(head: bytes, body: bytes) -> tuple[int, int]:
    """(body bytes, bytes h11 left unread) of one request with ``head``."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head + body + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    size = 0
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            size += len(event.data)
        if isinstance(event, h11.EndOfMessage):
            return size, len(conn.trailing_data[0])


def read_split(reader: BodyReader, data: bytes, cuts: list[int]) -> int:
    """Feed ``data`` in pieces cut at ``cuts``, as a caller keeping the unread rest would."""
    buf = b""
    pos_in_data = 0
    for cut in [*cuts, len(data)]:
        buf += data[pos_in_data:cut]
        pos_in_data = cut
        pos = reader.read(buf, 0)
        buf = buf[pos:]
        if reader.done:
            return len(buf) + len(data) - pos_in_data
    raise AssertionError("body never ended")


def chunked(rng: random.Random) -> bytes:
    out = b""
    for _ in range(rng.randrange(0, 6)):
        size = rng.randrange(1, 300)
        ext = b";name=value" if rng.random() < 0.3 else b""
        out += f"{size:x}".encode() + ext + b"\r\n" + b"x" * size + b"\r\n"
    out += b"0\r\n"
    if rng.random() < 0.5:
        out += b"Trailer-One: a\r\nTrailer-Two: b\r\n"
    return out + b"\r\n"


@pytest.mark.parametrize("seed", range(40))
def test_chunked_bodies_agree_with_h11_however_split(seed: int) -> None:
    rng = random.Random(seed)
    body = chunked(rng)
    expected, _ = h11_body(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", body
    )
    tail = b"NEXT"
    cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randrange(0, 12))))
    reader = BodyReader(1 << 20, 4096)
    reader.chunked()
    left = read_split(reader, body + tail, cuts)
    assert reader.total == expected
    assert left == len(tail)


def test_fixed_length_ends_exactly() -> None:
    expected, _ = h11_body(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", b"y" * 10)
    reader = BodyReader(1 << 20, 4096)
    reader.fixed(10)
    assert reader.read(b"yyyy", 0) == 4 and not reader.done
    assert reader.read(b"yyyyyyNEXT", 0) == 6 and reader.done
    assert reader.total == expected == 10


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"zz\r\n", 400, "chunk size"),
        (b"1" * 1100, 400, "too long"),
        (b"2\r\nabXY", 400, "CRLF"),
        (b"0\r\nbad trailer\r\n\r\n", 400, "trailer"),
        (b"0\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431, "trailer"),
        (b"200\r\n", 413, "exceeds"),
    ],
)
def test_errors_say_what_and_which_status(data: bytes, status: int, reason: str) -> None:
    reader = BodyReader(256, 4096)
    reader.chunked()
    with pytest.raises(BodyError) as info:
        reader.read(data, 0)
    assert info.value.status == status
    assert reason in info.value.reason
