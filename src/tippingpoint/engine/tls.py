"""TLS with session resumption: the client protocol over memory BIOs.

asyncio's TLS transport cannot be handed a saved session, so with ``--tls-resume``
the connection speaks TLS itself: an ``ssl.SSLObject`` between two ``MemoryBIO``s
over a plain TCP transport. Each pool keeps the last session that carries a ticket
and offers it on every new connection, as a browser or a pooled client would.
Without ``--tls-resume`` the engine uses the event loop's own TLS (full handshakes).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from tippingpoint.engine.client import ClientConn

if TYPE_CHECKING:
    from tippingpoint.engine.attack import Engine, Pool

__all__ = ["TLSClientConn"]

_READ_SIZE = 65536


class TLSClientConn(ClientConn):
    __slots__ = ("_incoming", "_outgoing", "_ssl", "handshake", "resumed")

    def __init__(self, engine: Engine, pool: Pool) -> None:
        super().__init__(engine, pool)
        assert pool.ssl is not None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = pool.ssl.wrap_bio(
            self._incoming,
            self._outgoing,
            server_hostname=pool.server_hostname,
            session=pool.session,
        )
        self.handshake: asyncio.Future[None] = engine.loop.create_future()
        self.resumed = False

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._out = self._write_tls
        self._do_handshake()

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        if not self.handshake.done():
            self._do_handshake()
            if not self.handshake.done():
                return
        plain: list[bytes] = []
        closed = False
        while True:
            try:
                chunk = self._ssl.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            except ssl.SSLError as e:
                self._fail(e)
                return
            if not chunk:
                break
            plain.append(chunk)
        # Keep the session before the response is handed on (which may close the
        # connection): in TLS 1.3 its ticket comes after the handshake.
        session = self._ssl.session
        if session is not None and session.has_ticket:
            self._pool.session = session
        self._flush()
        for chunk in plain:
            if self._transport is None:
                return
            super().data_received(chunk)
        if closed:  # the server's close_notify
            self.eof_received()
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(
                exc or ConnectionResetError("connection closed during the TLS handshake")
            )
        super().connection_lost(exc)

    # TLS

    def _do_handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError) as e:
            self._flush()
            if not self.handshake.done():
                self.handshake.set_exception(e)
            self.abort()
            return
        self._flush()
        self.resumed = self._ssl.session_reused
        if not self.handshake.done():
            self.handshake.set_result(None)

    def _write_tls(self, request: bytes) -> None:
        self._ssl.write(request)
        self._flush()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._transport is not None:
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                pass
            self._flush()
        super().close()
