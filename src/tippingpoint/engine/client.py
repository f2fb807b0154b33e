"""The client side of one connection: send a pre-encoded request, time the response.

A connection carries one request at a time. Times are ``time.monotonic_ns()``;
latency is measured from the hit's *intended* send time, so a server stall shows
in the percentiles instead of slowing the schedule down (coordinated omission).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from time import monotonic_ns
from typing import Any, Protocol, TypeVar, cast

from tippingpoint.targets import Origin
from tippingpoint.wire.response import ResponseError, ResponseReader

__all__ = [
    "CONNACK",
    "HANDSHAKE_S",
    "SUBACK",
    "TLS_HELLO",
    "WS_UPGRADE",
    "ClientConn",
    "ConnOwner",
    "NoAnswer",
    "Pool",
    "answered",
    "classify_error",
    "client_socket",
]

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

HANDSHAKE_S = 5.0
"""How long a layer's handshake (TLS, a WebSocket upgrade, MQTT's CONNACK) may go
unanswered, at most: past it the peer is not speaking that protocol, or too overloaded to
start a conversation, and waiting the whole --timeout would only hide that."""

_T = TypeVar("_T")

_NOT_TLS = (
    "WRONG_VERSION_NUMBER",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
    "HTTP_REQUEST",
)


class NoAnswer(TimeoutError):
    """A handshake the peer never answered: the target's failure, named after the phase."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


TLS_HELLO = ("tls", "answer to the TLS ClientHello", "speaking TLS")
WS_UPGRADE = ("upgrade", "answer to the WebSocket upgrade", "a WebSocket endpoint")
CONNACK = ("connack", "CONNACK", "an MQTT broker")
SUBACK = ("subscribe", "SUBACK", "an MQTT broker")
"""The phases of a connection's opening, for :func:`answered`: (error kind, what did not
come, what the peer should be)."""


async def answered(aw: Awaitable[_T], pool: Pool, phase: tuple[str, str, str]) -> _T:
    """``aw`` (one ``phase`` of a connection's opening), or :class:`NoAnswer` after the
    pool's handshake limit: ``no WHAT within 5 s: is HOST:PORT SPEAKS?``."""
    kind, what, speaks = phase
    limit = pool.handshake_s
    try:
        async with asyncio.timeout(limit):
            return await aw
    except TimeoutError:
        raise NoAnswer(
            kind, f"no {what} within {limit:g} s: is {pool.host_header} {speaks}?"
        ) from None


def client_socket(family: int, laddr: str | None) -> socket.socket:
    """A non-blocking TCP socket for an outgoing connection, bound to ``laddr`` if given.

    ``IP_BIND_ADDRESS_NO_PORT`` defers the choice of the source port to ``connect``, so
    that binding many sockets to one address does not use the port range up by itself."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if laddr is not None:
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((laddr, 0))
    except OSError:
        sock.close()
        raise
    return sock


def _not_connected(data: bytes) -> None:
    raise ConnectionError("request sent before the connection was made")


def classify_error(exc: BaseException) -> tuple[str, str]:
    """``(kind, message)`` for a failed connection or request."""
    message = f"{type(exc).__name__}: {exc}"
    kind = getattr(exc, "kind", None)
    if isinstance(kind, str):  # a protocol's own refusal (MQTT: connack-refused...)
        return kind, str(exc)
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        if getattr(exc, "reason", None) in _NOT_TLS:
            return "tls", f"TLS handshake failed: the peer is not speaking TLS ({exc.reason})"
        return "tls", message
    if isinstance(exc, ConnectionRefusedError):
        return "refused", message
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset", message
    if isinstance(exc, TimeoutError):
        return "timeout", message if str(exc) else "no answer within --timeout"
    if isinstance(exc, ResponseError):
        return "malformed", message
    if isinstance(exc, OSError):
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return "fd-limit", f"{message} (out of file descriptors: more --processes)"
        if exc.errno == errno.EADDRNOTAVAIL:
            return "no-ports", f"{message} (out of source ports: more --laddr addresses)"
        if exc.errno == errno.ECONNRESET:
            return "reset", message
    return "other", message


_C = TypeVar("_C", contravariant=True)


class ConnOwner(Protocol[_C]):
    """What a connection of type ``_C`` reports to: the attack's engine, a publisher,
    or a hold's holder."""

    def on_response(
        self, conn: _C, now: int, status: int, body_bytes: int, keep_alive: bool
    ) -> None:
        """A response completed (``now`` is when its last byte arrived): for MQTT, the
        PINGRESP to a ping."""

    def on_error(self, conn: _C, exc: BaseException) -> None:
        """The request in flight failed, or the connection broke (``exc`` says how, see
        :func:`classify_error`)."""

    def on_closed(self, conn: _C, pool: Pool) -> None:
        """The connection is gone."""


class Pool:
    """Connections to one origin, and what opening one needs: the address, TLS
    context and name, and the last TLS session (offered again with ``resume``)."""

    __slots__ = (
        "addr",
        "conn_type",
        "conns",
        "family",
        "handshake_s",
        "host_header",
        "idle",
        "origin",
        "path",
        "queue",
        "resume",
        "server_hostname",
        "session",
        "session_at",
        "ssl",
    )

    def __init__(
        self,
        origin: Origin,
        ctx: ssl.SSLContext | None,
        server_name: str | None,
        resume: bool = False,
        conn_type: type[ClientConn] | None = None,
        path: str = "/",
    ) -> None:
        self.origin = origin
        self.conn_type = conn_type
        """The class of its connections (its stack of layers); None: HTTP, over TLS
        where the origin's scheme says so."""
        self.path = path
        """Where a protocol that upgrades an HTTP connection asks for it."""
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        self.host_header = f"{host}:{origin.port}"
        infos = socket.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
        self.family: socket.AddressFamily = infos[0][0]
        self.addr: tuple[Any, ...] = infos[0][4]
        self.ssl = ctx if origin.tls else None
        self.server_hostname = (server_name or origin.host) if origin.tls else None
        self.idle: list[ClientConn] = []
        self.conns: set[ClientConn] = set()
        self.queue: deque[tuple[int, int, int]] = deque()
        """Hits waiting for a connection: (target index, intended ns, queued ns)."""
        self.session: ssl.SSLSession | None = None
        self.session_at = 0
        """When ``session`` was taken (monotonic ns)."""
        self.resume = resume
        self.handshake_s = HANDSHAKE_S
        """The longest a layer's handshake may go unanswered (:func:`answered`)."""


class ClientConn(asyncio.Protocol):
    __slots__ = (
        "_owner",
        "_pool",
        "_reader",
        "_transport",
        "busy",
        "eof",
        "first_byte_ns",
        "intended_ns",
        "open",
        "sent_ns",
        "ti",
        "_app",
        "_out",
    )

    def __init__(self, owner: ConnOwner[ClientConn], pool: Pool) -> None:
        self._owner = owner
        self._pool = pool
        self._reader = ResponseReader()
        self._transport: asyncio.Transport | None = None
        self.busy = False
        self.eof = False
        self.open = False
        """Connected, and the server has not closed its side."""
        self.intended_ns = 0
        self.sent_ns = 0
        self.first_byte_ns = 0
        self.ti = 0
        self._out: Callable[[bytes], None] = _not_connected
        self._app: Any = None
        """The state of a layer above this one (``engine/ws.py``)."""

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        # Where request bytes go: the transport itself, or TLS (see engine/tls.py).
        self._out = self._transport.write
        self.open = True

    def data_received(self, data: bytes) -> None:
        now = monotonic_ns()
        if not self.busy:
            self._fail(ResponseError(f"{len(data)} bytes received with no request outstanding"))
            return
        reader = self._reader
        if self.first_byte_ns == 0:
            self.first_byte_ns = now
        try:
            complete = reader.feed(data)
        except ResponseError as e:
            self._fail(e)
            return
        if complete:
            self.busy = False
            keep_alive = reader.keep_alive
            self._owner.on_response(self, now, reader.status, reader.body_bytes, keep_alive)
            if not keep_alive:
                self.close()

    def eof_received(self) -> bool | None:
        self.eof = True
        self.open = False
        if self.busy and self._reader.feed_eof():
            self.busy = False
            now = monotonic_ns()
            reader = self._reader
            self._owner.on_response(self, now, reader.status, reader.body_bytes, False)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.open = False
        if self.busy:
            self.busy = False
            if exc is None:
                exc = ConnectionResetError("connection closed before the response ended")
            self._owner.on_error(self, exc)
        self._owner.on_closed(self, self._pool)

    # Used by the engine

    async def ready(self) -> None:
        """Wait until the layers below the application are up (TLS's handshake, a
        WebSocket's upgrade); raises what made them fail. Plain TCP: at once."""

    @property
    def pool(self) -> Pool:
        return self._pool

    @property
    def reusable(self) -> bool:
        """The last response allows another request on this connection."""
        return self._reader.keep_alive and not self.eof and self._transport is not None

    def send(self, request: bytes, intended_ns: int, head: bool, now: int, ti: int) -> None:
        self.ti = ti
        self.intended_ns = intended_ns
        self.sent_ns = now
        self.first_byte_ns = 0
        self.busy = True
        self._reader.start(head)
        self._out(request)

    def _fail(self, exc: BaseException) -> None:
        if self.busy:
            self.busy = False
            self._owner.on_error(self, exc)
        self.abort()

    def timeout(self) -> None:
        self._fail(TimeoutError("no response within --timeout"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
