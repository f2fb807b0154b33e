"""The backend's connection protocol: ping in, pong out.

Hot path: one ``data_received`` -> the sans-io reader -> a pre-encoded response ->
one ``transport.write``. No timer per connection: deadlines are whole-second ticks
checked by the worker's sweep (see :mod:`tippingpoint.server.worker`); the only
timer handle is the one of a delayed (``sleep``/``times``) response in progress.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, cast

from tippingpoint.server.responses import (
    CHUNK_PONG,
    CONTINUE_100,
    LAST_CHUNK,
    error_response,
)
from tippingpoint.wire.http1 import CONTINUE, ProtocolError, Request, RequestReader

if TYPE_CHECKING:
    from tippingpoint.server.worker import Worker

__all__ = ["BufferedPongProtocol", "PongProtocol"]

# Stop reading from a client that keeps pipelining while a response is delayed.
_PAUSE_BUFFERED: Final = 256 * 1024
_NEVER: Final = 1 << 62


class PongProtocol(asyncio.Protocol):
    __slots__ = (
        # Global state
        "_w",
        "_transport",
        "_reader",
        # Per-connection state
        "deadline",
        "_idle",
        "_read_paused",
        "_write_paused",
        "_eof",
        # Per-request state (delayed responses)
        "_busy",
        "_req",
        "_left",
        "_started",
        "_timer",
    )

    def __init__(self, worker: Worker) -> None:
        self._w = worker
        self._transport: asyncio.Transport | None = None
        self._reader = RequestReader(worker.config.max_header, worker.config.max_body)
        self.deadline = 0
        self._idle = True
        self._read_paused = False
        self._write_paused = False
        self._eof = False
        self._busy = False
        self._req: Request | None = None
        self._left = 0
        self._started = False
        self._timer: asyncio.TimerHandle | None = None

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        w = self._w
        w.stats.accepted += 1
        w.conns.add(self)
        self.deadline = w.tick + w.idle_ticks
        if len(w.conns) >= w.capacity:
            w.pause_accepting()

    def connection_lost(self, exc: Exception | None) -> None:
        w = self._w
        w.stats.closed += 1
        if exc is not None:
            w.stats.conn_errors += 1
        w.conns.discard(self)
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if w.paused and len(w.conns) <= w.resume_level:
            w.resume_accepting()

    def data_received(self, data: bytes) -> None:
        w = self._w
        stats = w.stats
        stats.bytes_in += len(data)
        reader = self._reader
        reader.feed(data)
        if self._busy or self._write_paused:
            if reader.buffered > _PAUSE_BUFFERED and not self._read_paused:
                self._pause_reading()
            return
        try:
            req = reader.next_request()
        except ProtocolError as e:
            self._fail(e, [])
            return
        if req is not None and req.fast and not reader.buffer:
            # The fast path: one plain request, nothing after it.
            data = w.responses.plain[req.kind]
            stats.req_200 += 1
            stats.bytes_out += len(data)
            self._transport.write(data)  # type: ignore[union-attr]
            self._idle = True
            self.deadline = w.tick + w.idle_ticks
            return
        self._serve(req)

    def eof_received(self) -> bool | None:
        # Half-close from the client: finish what is in progress, then close.
        if not self._busy:
            return None
        self._eof = True
        return True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._busy and self._transport is not None:
            self._resume_reading()
            self._continue_serving()

    # Serving

    def _serve(self, req: Request | None) -> None:
        """Answer ``req`` and every further complete request buffered, in order."""
        transport = self._transport
        if transport is None:
            return
        w = self._w
        stats = w.stats
        reader = self._reader
        plain = w.responses.plain
        out: list[bytes] = []
        try:
            while req is not None:
                if req.sleep is None and req.error is None:
                    if req is CONTINUE:
                        out.append(CONTINUE_100)
                    else:
                        out.append(plain[req.kind])
                        stats.req_200 += 1
                        if not req.keep_alive:
                            self._write(transport, out)
                            transport.close()
                            return
                elif req.error is not None:
                    status, reason = req.error
                    out.append(error_response(status, reason, req.keep_alive, w.responses.date))
                    stats.req_400 += 1
                    if not req.keep_alive:
                        self._write(transport, out)
                        transport.close()
                        return
                else:
                    if out:
                        self._write(transport, out)
                    self._start_delayed(req)
                    return
                if self._write_paused:
                    break
                req = reader.next_request()
        except ProtocolError as e:
            self._fail(e, out)
            return
        if out:
            self._write(transport, out)
        if self._write_paused:
            self._pause_reading()
        elif reader.in_request:
            if self._idle or reader.reading_body:
                # The header timeout runs from a request's first byte (and between
                # reads of its body); dribbling more header bytes does not extend it.
                self._idle = False
                self.deadline = w.tick + w.header_ticks
        else:
            self._idle = True
            self.deadline = w.tick + w.idle_ticks

    def _fail(self, error: ProtocolError, out: list[bytes]) -> None:
        """Answer a framing error and close: the next request cannot be found."""
        transport = self._transport
        if transport is None:
            return
        w = self._w
        out.append(error_response(error.status, error.reason, False, w.responses.date))
        w.stats.count_status(error.status)
        self._write(transport, out)
        transport.close()

    def _continue_serving(self) -> None:
        try:
            req = self._reader.next_request()
        except ProtocolError as e:
            self._fail(e, [])
            return
        self._serve(req)

    def _write(self, transport: asyncio.Transport, out: list[bytes]) -> None:
        data = out[0] if len(out) == 1 else b"".join(out)
        self._w.stats.bytes_out += len(data)
        transport.write(data)
        out.clear()

    def _start_delayed(self, req: Request) -> None:
        self._busy = True
        self._req = req
        self._left = 0 if req.head else req.times
        self._started = False
        self.deadline = _NEVER
        self._idle = False
        self._arm()

    def _arm(self) -> None:
        req = self._req
        assert req is not None and req.sleep is not None
        self._timer = self._w.loop.call_later(self._w.random_ms(req.sleep), self._pong)

    def _pong(self) -> None:
        self._timer = None
        transport = self._transport
        req = self._req
        if transport is None or req is None:
            return
        w = self._w
        responses = w.responses
        if not self._started:
            self._started = True
            if self._left == 0:
                data = responses.plain[req.kind]
            elif req.http10:
                data = responses.stream_close + b"pong"
            elif req.keep_alive:
                data = responses.chunked_keep_alive + CHUNK_PONG
            else:
                data = responses.chunked_close + CHUNK_PONG
            if self._left == 0:
                self._end(transport, req, data)
                return
        else:
            data = b"pong" if req.http10 else CHUNK_PONG
            self._left -= 1
            if self._left == 0:
                self._end(transport, req, data if req.http10 else data + LAST_CHUNK)
                return
        w.stats.bytes_out += len(data)
        transport.write(data)
        self._arm()

    def _end(self, transport: asyncio.Transport, req: Request, data: bytes) -> None:
        w = self._w
        w.stats.bytes_out += len(data)
        w.stats.req_200 += 1
        transport.write(data)
        self._req = None
        self._busy = False
        if self._eof or not req.keep_alive or (req.http10 and req.times and not req.head):
            transport.close()
            return
        self._idle = True
        self.deadline = w.tick + w.idle_ticks
        self._resume_reading()
        if self._reader.buffered:
            self._continue_serving()

    # Flow control

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()

    # Called by the worker

    def expire(self) -> None:
        """The connection's deadline has passed: 408 if a request was under way, then close."""
        transport = self._transport
        if transport is None:
            return
        w = self._w
        if self._idle:
            w.stats.idle_timeouts += 1
        else:
            w.stats.header_timeouts += 1
            w.stats.req_408 += 1
            data = error_response(408, "request not received in time", False, w.responses.date)
            w.stats.bytes_out += len(data)
            transport.write(data)
        transport.close()
        self.deadline = _NEVER

    def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()


class BufferedPongProtocol(PongProtocol, asyncio.BufferedProtocol):
    """The same protocol reading into one buffer shared by the worker's connections.

    Plain asyncio allocates a fresh 256 KiB buffer per read for a ``Protocol``; with a
    ``BufferedProtocol`` reads land in the worker's buffer and only the bytes read are
    copied out. Used when uvloop is not available.
    """

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._w.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._w.read_buffer[:nbytes]))
