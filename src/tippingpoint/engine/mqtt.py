"""The client side of one MQTT session: CONNECT/CONNACK, SUBSCRIBE, keepalive pings,
publishing with pre-encoded headers, and the QoS 1 and 2 flows in both directions.

A session speaks plain TCP or TLS (a :class:`~tippingpoint.engine.tls.TLSPipe` between
memory BIOs, as the HTTP client does). It reports to its owner: a hold's holder (pings
and their PINGRESP) or a publishing engine (acknowledgements and received messages).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from time import monotonic_ns
from typing import Any, Protocol, cast

from tippingpoint.engine.client import (
    CONNACK,
    SUBACK,
    TLS_HELLO,
    WS_UPGRADE,
    ConnOwner,
    Pool,
    answered,
)
from tippingpoint.engine.fdpoll import FdPoller, FdTransport
from tippingpoint.engine.tls import TLSPipe
from tippingpoint.wire import mqtt as m
from tippingpoint.wire import ws

__all__ = [
    "ConnackRefused",
    "MQTTProtocolError",
    "Session",
    "SessionOwner",
    "SubscribeRefused",
    "expand",
    "open_session",
    "parse_version",
]

CONNACK_REASONS = {
    # 3.1.1 return codes
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
    # MQTT 5 reason codes
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8B: "server shutting down",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x9F: "connection rate exceeded",
}


def reason_text(code: int) -> str:
    return f"0x{code:02x} {CONNACK_REASONS.get(code, 'reason')}"


class ConnackRefused(Exception):
    kind = "connack-refused"

    def __init__(self, reason: int) -> None:
        super().__init__(f"CONNACK refused the session: {reason_text(reason)}")
        self.reason = reason


class SubscribeRefused(Exception):
    kind = "subscribe-refused"

    def __init__(self, topic: str, reason: int) -> None:
        super().__init__(f"SUBACK refused {topic!r}: {reason_text(reason)}")
        self.reason = reason


class MQTTProtocolError(Exception):
    kind = "protocol"


def parse_version(text: str) -> int:
    """``"3.1.1"``/``"4"`` -> 4, ``"5"``/``"5.0"`` -> 5."""
    value = str(text).strip().lower().removeprefix("v")
    if value in ("3.1.1", "4", "311"):
        return 4
    if value in ("5", "5.0"):
        return 5
    raise ValueError(f"unknown MQTT version {text!r}: use 3.1.1 or 5")


def expand(pattern: str, index: int, process: int, client_id: str = "") -> str:
    """A client id or topic pattern for session ``index``: ``%i`` the session number,
    ``%p`` the process, ``%c`` the client id (topics only)."""
    out = pattern.replace("%i", str(index)).replace("%p", str(process))
    return out.replace("%c", client_id) if client_id else out


class SessionOwner(ConnOwner["Session"], Protocol):
    """What a session reports to: a connection's owner (``on_closed`` finds the
    broker's reason, if any, in ``conn.disconnect_reason``), and the acks and messages."""

    def on_ack(self, conn: Session, packet_id: int, now: int, reason: int) -> None:
        """PUBACK (QoS 1) or PUBCOMP (QoS 2) for a message this session published."""

    def on_message(self, conn: Session, packet: m.Publish, now: int) -> None:
        """A PUBLISH arrived (it is acknowledged by the session itself)."""


def _ack(kind: int, pid: int) -> bytes:
    return bytes(((kind << 4) | (2 if kind == m.PUBREL else 0), 2)) + pid.to_bytes(2, "big")


class Session(asyncio.Protocol):
    """One MQTT session over TCP (or TLS). Also the shape a hold expects of a
    connection: ``open``, ``busy``, ``sent_ns``, ``send`` (a ping), ``abort``."""

    __slots__ = (
        "_owner",
        "_pending",
        "_pool",
        "_reader",
        "_shaking",
        "_tls",
        "_transport",
        "_ws",
        "busy",
        "disconnect_reason",
        "index",
        "next_id",
        "open",
        "send_quota",
        "sent_ns",
    )

    def __init__(
        self,
        owner: SessionOwner,
        pool: Pool,
        version: int,
        index: int = 0,
        ws_path: str | None = None,
    ) -> None:
        self._owner = owner
        self._pool = pool
        self._reader = m.Reader(version)
        self._transport: asyncio.Transport | None = None
        self._tls: TLSPipe | None = None
        self._ws = ws.ClientWs("mqtt", ws_path) if ws_path is not None else None
        """MQTT over WebSocket: each packet one binary message."""
        self._shaking = False
        self._pending: asyncio.Future[Any] | None = None
        """The handshake, CONNACK or SUBACK being waited for while the session opens."""
        self.index = index
        self.open = False
        self.busy = False
        self.sent_ns = 0
        self.next_id = 0
        self.send_quota = 65535
        """QoS 1 and 2 messages the broker takes at once (its MQTT 5 receive maximum)."""
        self.disconnect_reason: int | None = None

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.open = True
        pool = self._pool
        if pool.ssl is None:
            return
        self._tls = TLSPipe(pool.ssl, pool.server_hostname)
        self._pending = asyncio.get_running_loop().create_future()
        self._shaking = True
        self._handshake()

    def data_received(self, data: bytes) -> None:
        tls = self._tls
        if tls is None:
            self._carried(data)
            return
        tls.feed(data)
        if self._shaking:
            self._handshake()
            if self._shaking or not self.open:  # more to come, or it failed
                return
        try:
            plain = tls.plain(self._transport)
        except ssl.SSLError as e:
            self._fail(e)
            return
        for chunk in plain:
            if self._transport is None:
                return
            self._carried(chunk)
        if tls.closed:
            self.close()

    def eof_received(self) -> bool | None:
        self.open = False
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.open = False
        pending = self._pending
        if pending is not None and not pending.done():
            reason = self.disconnect_reason
            pending.set_exception(
                exc
                or (
                    ConnackRefused(reason)
                    if reason is not None
                    else ConnectionResetError("connection closed while the session opened")
                )
            )
        self.busy = False
        self._owner.on_closed(self, self._pool)

    # Packets in

    def _carried(self, data: bytes) -> None:
        """Bytes from TCP or TLS: MQTT packets, or WebSocket frames that carry them."""
        wsock = self._ws
        if wsock is None:
            self._packets(data)
            return
        was = wsock.upgraded
        try:
            events = wsock.feed(data)
        except ConnectionError as e:  # refused upgrade, the server's close, a broken frame
            self._raw(wsock.outgoing())
            self._fail(e)
            return
        self._raw(wsock.outgoing())
        pending = self._pending
        if not was and wsock.upgraded and pending is not None and not pending.done():
            pending.set_result(None)
        for opcode, payload in events:
            if opcode == ws.BINARY:
                self._packets(payload)
            elif opcode == ws.TEXT:
                self._fail(ws.Broken("a text message: MQTT over WebSocket is binary"))
            if self._transport is None:
                return

    def _packets(self, data: bytes) -> None:
        reader = self._reader
        now = monotonic_ns()
        for p in reader.feed(data):
            kind = p.type
            if kind in (m.PUBACK, m.PUBCOMP):
                self._owner.on_ack(self, p.packet_id, now, p.reason)  # type: ignore[union-attr]
            elif kind == m.PUBLISH:
                assert isinstance(p, m.Publish)
                if p.qos == 1:
                    self.out(_ack(m.PUBACK, p.packet_id))
                elif p.qos == 2:
                    self.out(_ack(m.PUBREC, p.packet_id))
                self._owner.on_message(self, p, now)
            elif kind == m.PUBREC:
                assert isinstance(p, m.Ack)
                if p.reason >= 0x80:
                    self._owner.on_ack(self, p.packet_id, now, p.reason)
                else:
                    self.out(_ack(m.PUBREL, p.packet_id))
            elif kind == m.PUBREL:
                self.out(_ack(m.PUBCOMP, p.packet_id))  # type: ignore[union-attr]
            elif kind == m.PINGRESP:
                if self.busy:
                    self.busy = False
                    self._owner.on_response(self, now, 0, 0, True)
            elif kind in (m.CONNACK, m.SUBACK):
                pending = self._pending
                if pending is not None and not pending.done():
                    pending.set_result(p)
            elif kind == m.DISCONNECT:
                assert isinstance(p, m.Disconnect)
                self.disconnect_reason = p.reason
            # UNSUBACK and AUTH need nothing here
            if self._transport is None:
                return
        if reader.error is not None:
            if self._pending is not None and data.startswith(b"HTTP/"):  # no CONNACK yet
                error = MQTTProtocolError(
                    f"the peer answered in HTTP: is {self._pool.host_header} an MQTT broker?"
                )
            else:
                error = MQTTProtocolError(f"from the server: {reader.error.message}")
            self._fail(error)

    # Used by owners

    def out(self, data: bytes) -> None:
        """Send MQTT bytes: in a WebSocket message where there is one, then on the
        transport or through TLS. (A method, not a bound method kept per session: 64
        bytes less for each held session. Not a call to :meth:`_raw`: one more call per
        message cost QoS 0 publishing 5 % of its CPU.)"""
        wsock = self._ws
        if wsock is not None:
            data = wsock.frame(data)
        tls = self._tls
        if tls is not None:
            tls.send(data, self._transport)
            return
        transport = self._transport
        if transport is None:
            raise ConnectionError("MQTT packet sent on a closed session")
        transport.write(data)

    def _raw(self, data: bytes) -> None:
        """Send bytes below the WebSocket (its upgrade, the frames it answers with)."""
        if not data:
            return
        if self._tls is not None:
            self._tls.send(data, self._transport)
        elif self._transport is None:
            raise ConnectionError("MQTT packet sent on a closed session")
        else:
            self._transport.write(data)

    def send(self, request: bytes, intended_ns: int, head: bool, now: int, ti: int) -> None:
        """Send ``request`` (a ping: PINGREQ) and wait for its PINGRESP."""
        self.sent_ns = now
        self.busy = True
        self.out(request)

    def packet_id(self) -> int:
        self.next_id = self.next_id % 65535 + 1
        return self.next_id

    async def upgrade(self) -> None:
        """MQTT over WebSocket: the upgrade (subprotocol mqtt) at the pool's path."""
        wsock = self._ws
        if wsock is None:
            return
        self._pending = asyncio.get_running_loop().create_future()
        self._raw(wsock.request(self._pool.host_header))
        await answered(self._pending, self._pool, WS_UPGRADE)

    async def start(self, connect: bytes, subscribe: bytes | None) -> int:
        """CONNECT -> CONNACK, SUBSCRIBE -> SUBACK (after TLS's handshake and the
        WebSocket's upgrade). Returns when the CONNACK arrived (monotonic ns). Raises what
        refused or broke the session."""
        loop = asyncio.get_running_loop()
        self._pending = loop.create_future()
        self.out(connect)
        connack = await answered(self._pending, self._pool, CONNACK)
        t_connack = monotonic_ns()
        assert isinstance(connack, m.Connack)
        if connack.reason:
            raise ConnackRefused(connack.reason)
        self.send_quota = connack.properties.get(m.RECEIVE_MAXIMUM, 65535)
        if subscribe is not None:
            self._pending = loop.create_future()
            self.out(subscribe)
            suback = await answered(self._pending, self._pool, SUBACK)
            assert isinstance(suback, m.Suback)
            bad = [code for code in suback.codes if code >= 0x80]
            if bad:
                raise SubscribeRefused("subscription", bad[0])
        self._pending = None
        return t_connack

    def _fail(self, exc: BaseException) -> None:
        pending = self._pending
        if pending is not None and not pending.done():
            pending.set_exception(exc)
        elif self.open:
            self._owner.on_error(self, exc)
        self.abort()

    def close(self) -> None:
        if self._transport is not None:
            if self.open:
                self.out(b"\xe0\x00")  # DISCONNECT
            self._transport.close()

    def abort(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.abort()

    def _handshake(self) -> None:
        assert self._tls is not None and self._pending is not None
        try:
            self._shaking = not self._tls.advance(self._pending, self._transport)
        except ssl.SSLError:  # the opener gets it from the future
            self._shaking = False
            self.abort()


async def open_session(
    loop: asyncio.AbstractEventLoop,
    owner: SessionOwner,
    pool: Pool,
    sock: socket.socket,
    version: int,
    connect: bytes,
    subscribe: bytes | None = None,
    index: int = 0,
    poller: FdPoller | None = None,
    ws_path: str | None = None,
) -> tuple[Session, int, int]:
    """A session over ``sock`` (connected): TLS if the pool has it, a WebSocket upgraded
    at ``ws_path`` if given, CONNECT, CONNACK, and SUBSCRIBE if asked. Returns the
    session, when TLS finished and when CONNACK came (monotonic ns). Whatever fails,
    ``sock`` is closed or the transport aborted. With a ``poller`` (a hold's), the socket
    joins its epoll set instead of getting a transport of the event loop's."""
    transport: asyncio.BaseTransport | FdTransport
    try:
        if poller is not None:
            session = Session(owner, pool, version, index, ws_path)
            transport = poller.attach(sock, session)
        else:
            transport, session = await loop.create_connection(
                lambda: Session(owner, pool, version, index, ws_path), sock=sock
            )
    except BaseException:
        sock.close()
        raise
    try:
        if session._pending is not None:
            await answered(session._pending, pool, TLS_HELLO)
        t_tls = monotonic_ns()
        await session.upgrade()
        t_connack = await session.start(connect, subscribe)
    except BaseException:
        transport.abort()
        raise
    return session, t_tls, t_connack
