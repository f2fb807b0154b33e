"""The sans-io request reader, driven with plain bytes."""

from __future__ import annotations

import pytest

from tippingpoint.wire.http1 import (
    CONTINUE,
    MAX_SLEEP_MS,
    MAX_TIMES,
    ProtocolError,
    Request,
    RequestReader,
)

GET = b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\n"


def read_all(data: bytes, reader: RequestReader | None = None) -> list[Request]:
    reader = reader or RequestReader()
    reader.feed(data)
    out = []
    while (req := reader.next_request()) is not None:
        out.append(req)
    return out


def test_plain_get_is_fast_and_consumes_everything() -> None:
    reader = RequestReader()
    [req] = read_all(GET, reader)
    assert req.fast and req.keep_alive and not req.http10 and not req.head
    assert req.sleep is None and req.error is None
    assert reader.buffer == b"" and not reader.in_request


@pytest.mark.parametrize(
    ("data", "keep_alive", "http10", "head"),
    [
        (b"GET / HTTP/1.0\r\n\r\n", False, True, False),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True, True, False),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False, False, False),
        (b"GET / HTTP/1.1\r\nConnection: upgrade, Close\r\n\r\n", False, False, False),
        (b"HEAD / HTTP/1.1\r\n\r\n", True, False, True),
        (b"POST /x?y=1 HTTP/1.1\r\nHOST: a\r\n\r\n", True, False, False),
    ],
)
def test_connection_semantics(data: bytes, keep_alive: bool, http10: bool, head: bool) -> None:
    [req] = read_all(data)
    assert (req.keep_alive, req.http10, req.head) == (keep_alive, http10, head)
    assert req.kind == (keep_alive << 2) | (http10 << 1) | head


def test_pipelined_requests_come_out_in_order() -> None:
    data = (
        GET + b"GET / HTTP/1.1\r\nsleep: 5\r\n\r\n" + b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    reqs = read_all(data)
    assert [r.sleep for r in reqs] == [None, 5, None]
    assert [r.keep_alive for r in reqs] == [True, True, False]


def test_byte_by_byte_feeding_gives_the_same_requests() -> None:
    body = b"hello world"
    data = (
        b"POST / HTTP/1.1\r\nContent-Length: 11\r\nsleep: 3\r\ntimes: 2\r\n\r\n"
        + body
        + b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
        + GET
    )
    reader = RequestReader()
    out = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        while (req := reader.next_request()) is not None:
            out.append(req)
    assert [(r.sleep, r.times) for r in out] == [(3, 2), (None, 0), (None, 0)]
    assert reader.buffer == b""


def test_content_length_body_is_discarded_across_feeds() -> None:
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345")
    assert reader.next_request() is None
    assert reader.in_request and reader.reading_body
    reader.feed(b"67890" + GET)
    assert reader.next_request() is not None
    assert reader.next_request() is not None
    assert reader.next_request() is None


def test_sleep_and_times_values() -> None:
    [req] = read_all(b"GET / HTTP/1.1\r\nSleep:  1000 \r\nTIMES: 2\r\n\r\n")
    assert (req.sleep, req.times, req.error, req.fast) == (1000, 2, None, False)
    [req] = read_all(b"GET / HTTP/1.1\r\ntimes: 3\r\n\r\n")
    assert (req.sleep, req.times) == (0, 3)
    [req] = read_all(f"GET / HTTP/1.1\r\nsleep: {MAX_SLEEP_MS}\r\n\r\n".encode())
    assert req.sleep == MAX_SLEEP_MS


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"sleep: -1", "sleep must be a whole number"),
        (b"sleep: abc", "sleep must be a whole number"),
        (b"sleep: 1.5", "sleep must be a whole number"),
        (b"sleep:", "sleep must be a whole number"),
        (f"sleep: {MAX_SLEEP_MS + 1}".encode(), f"sleep must be <= {MAX_SLEEP_MS}"),
        (f"times: {MAX_TIMES + 1}".encode(), f"times must be <= {MAX_TIMES}"),
        (b"times: -3", "times must be a whole number"),
        (b"sleep: 1\r\nsleep: 2", "sleep header given more than once"),
    ],
)
def test_bad_sleep_times_is_a_400_that_keeps_the_connection(header: bytes, reason: str) -> None:
    reader = RequestReader()
    reqs = read_all(b"GET / HTTP/1.1\r\n" + header + b"\r\n\r\n" + GET, reader)
    assert len(reqs) == 2
    assert reqs[0].error is not None
    assert reqs[0].error[0] == 400 and reason in reqs[0].error[1]
    assert reqs[0].keep_alive and reqs[1].fast


def test_expect_continue_comes_before_the_body() -> None:
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert reader.next_request() is CONTINUE
    assert reader.next_request() is None
    reader.feed(b"abc")
    req = reader.next_request()
    assert req is not None and req.fast


def test_leading_empty_lines_are_skipped() -> None:
    [req] = read_all(b"\r\n\r\n" + GET)
    assert req.fast


MALFORMED = [
    (b"GET /\r\n\r\n", 400, "request line"),
    (b"GET  / HTTP/1.1\r\n\r\n", 400, "request line"),
    (b"G(T / HTTP/1.1\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/2.0\r\n\r\n", 505, "HTTP/1.0"),
    (b"GET / FTP/1.1\r\n\r\n", 400, "request line"),
    (b"GET /a\x00b HTTP/1.1\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "header line"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400, "header line"),
    (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, "header line"),
    (b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400, "header line"),
    (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400, "header line"),
    (b"GET / HTTP/1.1\nHost: a\n\n", 400, "CRLF"),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400, "Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400, "Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "conflicting"),
    (b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", 400, "conflicting"),
    (
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "both",
    ),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "chunked"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501, "chunked"),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "chunk size"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400, "chunk size"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", 400, "CRLF"),
    (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
        400,
        "trailer",
    ),
]


@pytest.mark.parametrize(("data", "status", "reason"), MALFORMED)
def test_malformed_requests_raise_protocol_errors(data: bytes, status: int, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        read_all(data)
    assert info.value.status == status
    assert reason in info.value.reason


def test_header_cap_gives_431_complete_or_not() -> None:
    big = b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n"
    with pytest.raises(ProtocolError) as info:
        read_all(big, RequestReader(max_header=1024))
    assert info.value.status == 431
    with pytest.raises(ProtocolError) as info:
        read_all(big[:1500], RequestReader(max_header=1024))
    assert info.value.status == 431


def test_body_cap_gives_413_for_both_framings() -> None:
    with pytest.raises(ProtocolError) as info:
        read_all(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", RequestReader(max_body=100))
    assert info.value.status == 413
    chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"40\r\n" + b"x" * 64
    with pytest.raises(ProtocolError) as info:
        read_all(chunked + b"\r\n40\r\n", RequestReader(max_body=100))
    assert info.value.status == 413
