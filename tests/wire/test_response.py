"""Response framing for the client, driven with plain bytes."""

from __future__ import annotations

import pytest

from tippingpoint.wire.response import ResponseError, ResponseReader

PONG = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong"


def feed_all(data: bytes, step: int = 0, head: bool = False) -> ResponseReader:
    r = ResponseReader()
    r.start(head)
    chunks = [data] if not step else [data[i : i + step] for i in range(0, len(data), step)]
    done = False
    for chunk in chunks:
        assert not done, "complete before the end"
        done = r.feed(chunk)
    assert done
    return r


@pytest.mark.parametrize("step", [0, 1, 3, 7])
def test_content_length(step: int) -> None:
    r = feed_all(PONG, step)
    assert (r.status, r.body_bytes, r.keep_alive) == (200, 4, True)


@pytest.mark.parametrize("step", [0, 1, 5])
def test_chunked_with_trailers_and_lowercase_headers(step: int) -> None:
    data = (
        b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n"
        b"4\r\npong\r\na;x=y\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n"
    )
    r = feed_all(data, step)
    assert (r.status, r.body_bytes) == (201, 14)


def test_connection_semantics() -> None:
    assert not feed_all(PONG.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n")).keep_alive
    assert not feed_all(PONG.replace(b"HTTP/1.1", b"HTTP/1.0")).keep_alive
    assert feed_all(
        PONG.replace(b"HTTP/1.1", b"HTTP/1.0").replace(
            b"OK\r\n", b"OK\r\nConnection: keep-alive\r\n"
        )
    ).keep_alive


def test_interim_and_bodiless_responses() -> None:
    r = feed_all(b"HTTP/1.1 100 Continue\r\n\r\n" + PONG)
    assert r.status == 200 and r.body_bytes == 4
    assert feed_all(b"HTTP/1.1 204 No Content\r\n\r\n").status == 204
    r = feed_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", head=True)
    assert r.body_bytes == 0


def test_body_until_close() -> None:
    r = ResponseReader()
    r.start()
    assert not r.feed(b"HTTP/1.0 200 OK\r\n\r\npong")
    assert not r.feed(b"pong")
    assert r.feed_eof() and r.body_bytes == 8 and not r.keep_alive


def test_eof_before_the_end_is_incomplete() -> None:
    r = ResponseReader()
    r.start()
    assert not r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npong")
    assert not r.feed_eof()


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        PONG + b"extra",
    ],
)
def test_malformed(data: bytes) -> None:
    r = ResponseReader()
    r.start()
    with pytest.raises(ResponseError):
        r.feed(data)


def test_a_repeated_head_is_framed_by_comparison_and_stays_exact() -> None:
    r = ResponseReader()
    for _ in range(3):
        r.start()
        assert r.feed(PONG)
        assert (r.status, r.body_bytes, r.keep_alive) == (200, 4, True)
    # The same head with a body that does not match its length: framed the long way.
    r.start()
    assert not r.feed(PONG[:-2])
    assert r.feed(b"ng")
    assert r.body_bytes == 4
    r.start()
    with pytest.raises(ResponseError, match="unexpected bytes"):
        r.feed(PONG + b"extra")
    # A HEAD request: the same head has no body this time.
    r = ResponseReader()
    r.start()
    assert r.feed(PONG)
    r.start(head_request=True)
    assert r.feed(PONG[: PONG.index(b"pong")])
    assert r.body_bytes == 0
    # Another head after the remembered one: its own framing, not the remembered one's.
    r.start()
    closing = b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
    assert r.feed(closing)
    assert (r.status, r.body_bytes, r.keep_alive) == (503, 2, False)
    r.start()
    assert r.feed(PONG)
    assert (r.status, r.keep_alive) == (200, True)
