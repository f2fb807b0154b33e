"""The backend's WebSocket side (``serve --ws``): ping in, pong out, over RFC 6455.

An HTTP connection that asks for ``Upgrade: websocket`` gets ``101 Switching
Protocols`` and this protocol takes the connection over. Each message, text or binary,
is answered with ``pong`` in the same kind of message. Words after the first set a delay
as the HTTP headers do: ``ping sleep=300 times=2`` waits a random whole number of
milliseconds in [0, 301] before the pong, then sends 2 more pongs, each after its own
pause. A value that cannot be used is answered with ``error: <why>`` and the connection
goes on. A ping frame gets its pong frame; a close frame gets its close frame back, then
the server closes. A frame RFC 6455 forbids fails the connection with the close code it
asks for (:mod:`tippingpoint.wire.ws`).

With ``Sec-WebSocket-Protocol: mqtt`` the connection speaks MQTT in binary messages: the
MQTT ping/pong backend (:mod:`tippingpoint.server.mqtt`) runs on a transport that frames
what it writes (:class:`MessageTransport`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from tippingpoint.server.mqtt import MQTTProtocol
from tippingpoint.wire import ws

if TYPE_CHECKING:
    from tippingpoint.server.protocol import Conn, Worker

__all__ = ["MessageTransport", "WsProtocol", "upgrade"]

_NEVER: Final = 1 << 62
_MAX_DELAYED: Final = 1024
"""Delayed answers under way on one connection before it is closed (1008)."""
_PONG: Final = {
    ws.TEXT: ws.server_frame(ws.TEXT, b"pong"),
    ws.BINARY: ws.server_frame(ws.BINARY, b"pong"),
}
_GOING_AWAY: Final = ws.server_frame(
    ws.CLOSE, ws.close_payload(ws.GOING_AWAY, "server shutting down")
)
_IDLE: Final = ws.server_frame(ws.CLOSE, ws.close_payload(ws.GOING_AWAY, "idle too long"))


class WsProtocol(asyncio.Protocol):
    """One upgraded connection. Swept with the HTTP connections (``deadline``,
    ``expire``, ``shutdown``)."""

    __slots__ = ("_w", "_transport", "_reader", "_delayed", "_closing", "_app", "deadline")

    def __init__(self, worker: Worker, transport: asyncio.Transport) -> None:
        self._w = worker
        self._transport: asyncio.Transport | None = transport
        self._reader = ws.FrameReader(server=True, max_message=worker.config.max_body)
        self._delayed: set[asyncio.TimerHandle] = set()
        self._closing = False
        self._app: MessageTransport | None = None
        self.deadline = worker.idle_deadline
        worker.stats.ws_upgrades += 1

    def speak_mqtt(self) -> None:
        """Carry MQTT in binary messages from now on: the MQTT protocol counts and
        sweeps the connection (its keepalive rules it) in this one's place."""
        w = self._w
        self._app = MessageTransport(self)
        protocol = MQTTProtocol(w)
        self._app.protocol = protocol
        w.conns.discard(self)
        w.stats.accepted -= 1  # counted once, as the HTTP connection it was
        protocol.connection_made(self._app)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._cancel()
        if self._app is not None:
            self._app.lost(exc)
        else:
            self._w.closed(self, exc)

    def data_received(self, data: bytes) -> None:
        w = self._w
        w.stats.bytes_in += len(data)
        if self._closing:
            return
        reader = self._reader
        reader.feed(data)
        self.deadline = w.idle_deadline
        try:
            while (event := reader.next()) is not None:
                opcode, payload = event
                if opcode < ws.CLOSE:
                    self._message(opcode, payload)
                elif not self._control(opcode, payload):
                    return
        except ws.WsError as e:
            w.stats.ws_protocol_errors += 1
            self._fail(e.code, e.reason)

    def eof_received(self) -> bool | None:
        return None

    def _message(self, opcode: int, payload: bytes) -> None:
        w = self._w
        stats = w.stats
        stats.ws_messages_in += 1
        if self._app is not None:
            if opcode != ws.BINARY:
                raise ws.WsError(ws.UNSUPPORTED_DATA, "MQTT over WebSocket is sent in binary")
            self._app.deliver(payload)
            return
        if len(payload) <= 4:  # "ping": the fast path
            self._write(_PONG[opcode])
            stats.ws_pongs += 1
            return
        parsed = ws.parse_ping(payload)
        if isinstance(parsed, str):
            self._write(ws.server_frame(ws.TEXT, b"error: " + parsed.encode()))
            return
        sleep, times = parsed
        if not sleep and not times:
            self._write(_PONG[opcode])
            stats.ws_pongs += 1
            return
        if len(self._delayed) >= _MAX_DELAYED:
            raise ws.WsError(ws.POLICY, f"over {_MAX_DELAYED} delayed answers under way")
        self._later(sleep, opcode, times)

    def _later(self, sleep: int, opcode: int, left: int) -> None:
        w = self._w
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._delayed.discard(handle)
            if self._transport is None or self._closing:
                return
            self._write(_PONG[opcode])
            w.stats.ws_pongs += 1
            if left:
                self._later(sleep, opcode, left - 1)

        handle = w.loop.call_later(w.random_ms(sleep), fire)
        self._delayed.add(handle)

    def _control(self, opcode: int, payload: bytes) -> bool:
        """Answer a control frame; False when the connection is closing."""
        if opcode == ws.PING:
            self._w.stats.ws_pings += 1
            self._write(ws.server_frame(ws.PONG, payload))
        elif opcode == ws.CLOSE:
            code, _ = ws.check_close(payload)
            echo = b"" if code == 1005 else code.to_bytes(2, "big")
            self._close_with(ws.server_frame(ws.CLOSE, echo))
            return False
        return True  # an unasked pong: nothing to do

    def _fail(self, code: int, reason: str) -> None:
        self._close_with(ws.server_frame(ws.CLOSE, ws.close_payload(code, reason)))

    def _close_with(self, frame: bytes) -> None:
        self._closing = True
        self._cancel()
        self.deadline = _NEVER
        transport = self._transport
        if transport is not None:
            self._write(frame)
            transport.close()

    def _cancel(self) -> None:
        for handle in self._delayed:
            handle.cancel()
        self._delayed.clear()

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None:
            self._w.stats.bytes_out += len(data)
            transport.write(data)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    # Called by the worker

    def expire(self) -> None:
        self._w.stats.idle_timeouts += 1
        self._close_with(_IDLE)

    def shutdown(self) -> None:
        self._close_with(_GOING_AWAY)


class MessageTransport(asyncio.Transport):
    """What a protocol above WebSocket writes to: each ``write`` is one binary message."""

    def __init__(self, conn: WsProtocol) -> None:
        super().__init__()
        self._conn = conn
        self.protocol: MQTTProtocol | None = None

    def deliver(self, payload: bytes) -> None:
        if self.protocol is not None:
            self.protocol.data_received(payload)

    def lost(self, exc: Exception | None) -> None:
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.connection_lost(exc)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._conn._write(ws.server_frame(ws.BINARY, bytes(data)))

    def close(self) -> None:
        self._conn._close_with(ws.server_frame(ws.CLOSE, ws.close_payload(ws.NORMAL)))

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._conn._closing or self._conn._transport is None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self._conn._transport
        return default if transport is None else transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        if self._conn._transport is not None:
            self._conn._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._conn._transport is not None:
            self._conn._transport.resume_reading()


def upgrade(
    worker: Worker, old: Conn, transport: asyncio.Transport, handshake: ws.Handshake, rest: bytes
) -> None:
    """Answer an upgrade with 101 and hand the connection (and the bytes after the
    request) to a :class:`WsProtocol`: MQTT in it when the client offers ``mqtt``."""
    mqtt = b"mqtt" in handshake.protocols
    data = handshake.response(b"mqtt" if mqtt else b"")
    worker.stats.bytes_out += len(data)
    transport.write(data)
    conn = WsProtocol(worker, transport)
    worker.conns.discard(old)
    worker.conns.add(conn)
    transport.set_protocol(conn)
    if mqtt:
        conn.speak_mqtt()
    if rest:
        conn.data_received(rest)
