"""The backend's connection protocol: ping in, pong out.

Hot path: one ``data_received`` -> the sans-io reader -> a pre-encoded response ->
one ``transport.write``. No timer per connection: deadlines are whole-second ticks
checked by the worker's sweep (see :mod:`tippingpoint.server.worker`); the only
timer handle is the one of a delayed (``sleep``/``times``) response in progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, Protocol, cast

from tippingpoint.server.config import ServeConfig
from tippingpoint.server.responses import (
    CHUNK_PONG,
    CONTINUE_100,
    LAST_CHUNK,
    Responses,
    error_response,
)
from tippingpoint.server.stats import WorkerStats
from tippingpoint.wire.http1 import CONTINUE, ProtocolError, Request, RequestReader
from tippingpoint.wire.ws import Handshake

__all__ = ["BufferedPongProtocol", "Conn", "PongProtocol", "Worker"]


class Conn(Protocol):
    """What the worker's sweep and shutdown need of a connection, HTTP or MQTT."""

    deadline: int

    def expire(self) -> None: ...

    def shutdown(self) -> None: ...


class Worker(Protocol):
    """What a connection shares with its worker process (``server/worker.py``): the
    answers, the counters, the clock of deadlines and the accept switch."""

    config: ServeConfig
    loop: asyncio.AbstractEventLoop
    stats: WorkerStats
    responses: Responses
    conns: set[Conn]
    capacity: int
    resume_level: int
    paused: bool
    tick: int
    """Whole seconds since the worker started: the clock of the deadlines."""
    idle_deadline: int
    header_deadline: int
    read_buffer: memoryview
    random_ms: Callable[[int], float]
    upgrade: Callable[[Conn, asyncio.Transport, Handshake, bytes], None] | None
    """Takes a WebSocket upgrade over (``serve --ws``); None: upgrades are ignored."""

    def pause_accepting(self) -> None: ...

    def resume_accepting(self) -> None: ...

    def opened(self, conn: Conn) -> None: ...

    def closed(self, conn: Conn, exc: Exception | None) -> None: ...


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
        # Per-request state: the delayed response in progress, if any
        "_delayed",
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
        self._delayed: _Delayed | None = None

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self.deadline = self._w.idle_deadline
        self._w.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._delayed is not None:
            self._delayed.cancel()
            self._delayed = None
        self._w.closed(self, exc)

    def data_received(self, data: bytes) -> None:
        w = self._w
        stats = w.stats
        stats.bytes_in += len(data)
        reader = self._reader
        reader.feed(data)
        if self._delayed is not None or self._write_paused:
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
            self.deadline = w.idle_deadline
            return
        self._serve(req)

    def eof_received(self) -> bool | None:
        # Half-close from the client: finish what is in progress, then close.
        if self._delayed is None:
            return None
        self._eof = True
        return True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._delayed is None and self._transport is not None:
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
                if req.upgrade is not None and w.upgrade is not None:
                    if not req.upgrade.error:
                        if out:
                            self._write(transport, out)
                        self._transport = None  # the connection is the upgrade's now
                        w.upgrade(self, transport, req.upgrade, reader.take())
                        return
                    req = Request(False, req.http10, req.head, error=(400, req.upgrade.error))
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
                self.deadline = w.header_deadline
        else:
            self._idle = True
            self.deadline = w.idle_deadline

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
        self._delayed = _Delayed(self, req)
        self.deadline = _NEVER
        self._idle = False

    def _end_delayed(self, req: Request) -> None:
        """The delayed response has been written in full."""
        self._delayed = None
        transport = self._transport
        if transport is None:
            return
        if self._eof or not req.keep_alive or (req.http10 and req.times and not req.head):
            transport.close()
            return
        self._idle = True
        self.deadline = self._w.idle_deadline
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
        if self._delayed is not None:
            self._delayed.cancel()
            self._delayed = None
        if self._transport is not None:
            self._transport.close()


class _Delayed:
    """A response written after random pauses: the first pong, then ``times`` more.

    Allocated only for requests with ``sleep``/``times``, so idle connections do not
    carry this state.
    """

    __slots__ = ("conn", "left", "req", "started", "timer")

    def __init__(self, conn: PongProtocol, req: Request) -> None:
        self.conn = conn
        self.req = req
        self.left = 0 if req.head else req.times
        self.started = False
        self.timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        w = self.conn._w
        assert self.req.sleep is not None
        self.timer = w.loop.call_later(w.random_ms(self.req.sleep), self._pong)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _pong(self) -> None:
        self.timer = None
        conn = self.conn
        transport = conn._transport
        if transport is None:
            return
        req = self.req
        w = conn._w
        responses = w.responses
        last = self.left == 0
        if not self.started:
            self.started = True
            if last:
                data = responses.plain[req.kind]
            elif req.http10:
                data = responses.stream_close + b"pong"
            elif req.keep_alive:
                data = responses.chunked_keep_alive + CHUNK_PONG
            else:
                data = responses.chunked_close + CHUNK_PONG
        else:
            self.left -= 1
            last = self.left == 0
            if req.http10:
                data = b"pong"
            else:
                data = CHUNK_PONG + LAST_CHUNK if last else CHUNK_PONG
        w.stats.bytes_out += len(data)
        transport.write(data)
        if last:
            w.stats.req_200 += 1
            conn._end_delayed(req)
        else:
            self._arm()


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
