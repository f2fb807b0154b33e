"""Pre-encoded responses of the backend, rebuilt once a second for the Date header."""

from __future__ import annotations

from email.utils import formatdate
from typing import Final

__all__ = ["Responses", "error_response"]

CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNK_PONG: Final = b"4\r\npong\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


def _date() -> str:
    return formatdate(usegmt=True)


class Responses:
    """The response bytes for one second (the Date header changes once a second).

    ``plain[kind]`` is the whole fast-path response, where ``kind`` is
    ``keep_alive << 2 | http10 << 1 | head`` (see :class:`tippingpoint.wire.http1.Request`).
    """

    __slots__ = ("chunked_close", "chunked_keep_alive", "date", "plain", "stream_close")

    def __init__(self, date: str | None = None) -> None:
        self.date = date or _date()
        common = f"HTTP/1.1 200 OK\r\nServer: tippingpoint\r\nDate: {self.date}\r\n"
        plain: list[bytes] = []
        for kind in range(8):
            keep_alive, http10, head = bool(kind & 4), bool(kind & 2), bool(kind & 1)
            conn = ""
            if not keep_alive:
                conn = "Connection: close\r\n"
            elif http10:
                conn = "Connection: keep-alive\r\n"
            text = f"{common}Content-Length: 4\r\n{conn}\r\n" + ("" if head else "pong")
            plain.append(text.encode())
        self.plain: tuple[bytes, ...] = tuple(plain)
        self.chunked_keep_alive = f"{common}Transfer-Encoding: chunked\r\n\r\n".encode()
        self.chunked_close = (
            f"{common}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        )
        # HTTP/1.0 has no chunked coding: the body ends when the connection closes.
        self.stream_close = f"{common}Connection: close\r\n\r\n".encode()

    def refreshed(self) -> Responses:
        """These responses, or new ones if the second has changed."""
        date = _date()
        return self if date == self.date else Responses(date)


def error_response(status: int, reason: str, keep_alive: bool, date: str) -> bytes:
    body = (reason + "\n").encode("utf-8", "replace")
    conn = "" if keep_alive else "Connection: close\r\n"
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nServer: tippingpoint\r\n"
        f"Date: {date}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{conn}\r\n"
    )
    return head.encode() + body
