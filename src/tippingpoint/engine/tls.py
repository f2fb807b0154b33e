"""TLS spoken by the connection itself: an ``ssl.SSLObject`` between two ``MemoryBIO``s
over a plain TCP transport.

Two users need it. With ``--tls-resume`` the attack offers each new connection the
pool's last session that carries a ticket, as a browser or a pooled client would;
asyncio's TLS transport cannot be handed a saved session. A hold keeps every
connection it opens, and this costs less memory per connection than the event
loop's TLS transport (34 KB against 44 KB per held connection, process baselines
included: that transport's 256 KiB read buffer and protocol objects). Without
``--tls-resume`` the attack uses the event loop's own TLS (full handshakes).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from time import monotonic_ns
from typing import Any, Protocol

from tippingpoint.engine.client import TLS_HELLO, ClientConn, ConnOwner, Pool, answered
from tippingpoint.engine.fdpoll import FdPoller, FdTransport
from tippingpoint.model import TLSOptions

__all__ = [
    "TLSClientConn",
    "TLSPipe",
    "check_tls_files",
    "make_ssl_context",
    "open_conn",
]

_READ_SIZE = 65536
_SESSION_EVERY_NS = 1_000_000_000


def make_ssl_context(tls: TLSOptions) -> ssl.SSLContext:
    """The client TLS context: verification unless --insecure, CA, client cert, ALPN.

    Trusted certificates are loaded into memory once. OpenSSL's default verify paths
    include a hashed directory (/etc/ssl/certs), searched on disk at every handshake,
    which cost the client a quarter of its CPU per new connection with --insecure (where
    nothing is verified, but the chain is still built)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if tls.cacert:
            ctx.load_verify_locations(cafile=tls.cacert)
    elif tls.cacert:
        ctx.load_verify_locations(cafile=tls.cacert)
    else:
        bundle = ssl.get_default_verify_paths().cafile
        if bundle and os.path.isfile(bundle):
            ctx.load_verify_locations(cafile=bundle)
        else:
            ctx.load_default_certs()
    if tls.cert:
        ctx.load_cert_chain(tls.cert, tls.key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def check_tls_files(tls: TLSOptions) -> None:
    """Load ``--cacert``, ``--cert`` and ``--key`` once, before any process starts, so
    that a wrong file is one line that names it (ValueError), not a traceback per process."""
    if tls.key and not tls.cert:
        raise ValueError("--key needs --cert: give the client certificate it goes with")
    if tls.cacert:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=tls.cacert)
        except FileNotFoundError:
            raise ValueError(f"--cacert {tls.cacert}: no such file") from None
        except (ssl.SSLError, OSError, ValueError) as e:
            raise ValueError(
                f"--cacert {tls.cacert}: no PEM certificate in it ({_why(e)}); give the CA "
                "that signed the server's certificate, in PEM"
            ) from None
    if tls.cert:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(tls.cert, tls.key)
        except FileNotFoundError as e:
            raise ValueError(f"{e.filename or tls.cert}: no such file (--cert/--key)") from None
        except (ssl.SSLError, OSError, ValueError) as e:
            which = f"--cert {tls.cert}" + (f" --key {tls.key}" if tls.key else "")
            hint = "" if tls.key else "; give --key FILE if the key is in a file of its own"
            raise ValueError(
                f"{which}: not a PEM certificate and its private key ({_why(e)}){hint}"
            ) from None


def _why(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
    return str(reason).lower().replace("_", " ")


class TLSPipe:
    """TLS between two memory BIOs, without I/O: network bytes go in with :meth:`feed`,
    plaintext comes out of :meth:`read`, and :meth:`outgoing` is what to send. Shared by
    the attack's connections (which need sessions) and held connections (which need
    less memory than the event loop's TLS transport)."""

    __slots__ = ("_in", "_out", "closed", "sslobj")

    def __init__(
        self,
        context: ssl.SSLContext,
        hostname: str | None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(
            self._in, self._out, server_hostname=hostname, session=session
        )
        self.closed = False
        """The peer sent close_notify."""

    def feed(self, data: bytes) -> None:
        self._in.write(data)

    def handshake(self) -> bool:
        """Advance the handshake with what was fed: True once it is done. Raises
        ``ssl.SSLError`` (certificate errors included) when it fails."""
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def read(self) -> list[bytes]:
        """The plaintext the fed bytes complete (sets :attr:`closed` on close_notify).
        Raises ``ssl.SSLError`` on a broken record."""
        plain: list[bytes] = []
        sslobj = self.sslobj
        incoming = self._in
        while True:
            try:
                chunk = sslobj.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                return plain
            except ssl.SSLZeroReturnError:
                self.closed = True
                return plain
            if not chunk:
                return plain
            plain.append(chunk)
            if not incoming.pending and not sslobj.pending():
                # All fed bytes are used: another read would only raise SSLWantReadError,
                # an exception per response (the usual case: one record per response).
                return plain

    def outgoing(self) -> bytes:
        out = self._out
        return out.read() if out.pending else b""

    # The pump between these BIOs and a transport: one copy for every protocol above TLS.

    def flush(self, transport: _Writer | None) -> None:
        """Send what TLS has to send (records, alerts, key updates) on ``transport``."""
        data = self.outgoing()
        if data and transport is not None:
            transport.write(data)

    def send(self, data: bytes, transport: _Writer | None) -> None:
        """Encrypt ``data`` and send it."""
        self.sslobj.write(data)
        self.flush(transport)

    def advance(self, waiter: asyncio.Future[Any], transport: _Writer | None) -> bool:
        """Advance the handshake with what was fed and send what it answers; ``waiter``
        gets its result when the handshake is done. True once done. Raises
        ``ssl.SSLError`` when it failed (``waiter`` holds the error too): the caller
        aborts the connection."""
        try:
            done = self.handshake()
        except ssl.SSLError as e:  # certificate errors included
            self.flush(transport)
            if not waiter.done():
                waiter.set_exception(e)
            raise
        self.flush(transport)
        if done and not waiter.done():
            waiter.set_result(None)
        return done

    def plain(self, transport: _Writer | None) -> list[bytes]:
        """After the handshake: the plaintext the fed bytes complete, having sent what
        TLS answers. Raises ``ssl.SSLError`` on a broken record."""
        chunks = self.read()
        self.flush(transport)
        return chunks


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...


class TLSClientConn(ClientConn):
    """A client connection that speaks TLS over a :class:`TLSPipe`. ``handshake`` is
    a future that the opener awaits; it becomes None once the first bytes after the
    handshake arrive (a held connection keeps no finished future), so an opener that
    resumes late finds None: the handshake is done."""

    __slots__ = ("_kept", "_tls", "handshake", "resumed")

    def __init__(self, owner: ConnOwner[ClientConn], pool: Pool) -> None:
        super().__init__(owner, pool)
        assert pool.ssl is not None
        session = pool.session if pool.resume else None
        self._tls = TLSPipe(pool.ssl, pool.server_hostname, session)
        self.handshake: asyncio.Future[None] | None = asyncio.get_running_loop().create_future()
        self.resumed = False
        self._kept = False

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._out = self._write_tls
        self._do_handshake()

    def data_received(self, data: bytes) -> None:
        tls = self._tls
        tls.feed(data)
        handshake = self.handshake
        if handshake is not None:
            if not handshake.done():
                self._do_handshake()
                if not handshake.done():
                    return
            if handshake.cancelled() or handshake.exception() is not None:
                return  # the opener reports it; the connection is aborted
            self.handshake = None
        try:
            plain = tls.plain(self._transport)  # sends TLS 1.3 key updates and the like
        except ssl.SSLError as e:  # a broken record
            self._fail(e)
            return
        pool = self._pool
        if pool.resume and not self._kept:
            self._keep_session(pool)
        for chunk in plain:
            if self._transport is None:
                return
            super().data_received(chunk)
        if tls.closed:  # the server's close_notify
            self.eof_received()
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        handshake = self.handshake
        if handshake is not None and not handshake.done():
            handshake.set_exception(
                exc or ConnectionResetError("connection closed during the TLS handshake")
            )
        super().connection_lost(exc)

    async def ready(self) -> None:
        """Wait for the end of the handshake (raises what made it fail), then for the
        layers above TLS."""
        if self.handshake is not None:
            await answered(self.handshake, self._pool, TLS_HELLO)
        await super().ready()

    # TLS

    def _keep_session(self, pool: Pool) -> None:
        """Keep this connection's session for the pool's next connections, before the
        response is handed on (which may close the connection): in TLS 1.3 its ticket
        comes after the handshake. At most once a second per pool: Python's ``ssl``
        copies a TLS 1.3 session through DER (the peer certificate decoded again) each
        time it is read, a fifth of the client's CPU per connection if done for each;
        a ticket serves many connections until it expires (minutes)."""
        now = monotonic_ns()
        if pool.session is not None and now - pool.session_at < _SESSION_EVERY_NS:
            self._kept = True
            return
        session = self._tls.sslobj.session
        if session is not None and session.has_ticket:
            pool.session = session
            pool.session_at = now
            self._kept = True

    def _do_handshake(self) -> None:
        assert self.handshake is not None
        try:
            done = self._tls.advance(self.handshake, self._transport)
        except ssl.SSLError:  # the opener gets it from the future
            self.abort()
            return
        if done:
            self.resumed = self._tls.sslobj.session_reused

    def _write_tls(self, request: bytes) -> None:
        self._tls.send(request, self._transport)

    def close(self) -> None:
        if self._transport is not None:
            try:
                self._tls.sslobj.unwrap()
            except ssl.SSLError:
                pass
            self._tls.flush(self._transport)
        super().close()


async def open_conn(
    loop: asyncio.AbstractEventLoop,
    owner: ConnOwner[ClientConn],
    pool: Pool,
    sock: socket.socket,
    poller: FdPoller | None = None,
) -> ClientConn:
    """The pool's connection over ``sock`` (connected): plain, or TLS over memory BIOs
    with its handshake done. TLS this way rather than with the event loop's TLS
    transport: 12 % less client CPU per new connection, the same per request on an open
    one, less memory held, and sessions for ``--tls-resume``. Whatever fails, ``sock``
    is closed (or the transport that took it aborted). With a ``poller`` (a hold's), the
    socket joins its epoll set instead of getting a transport of the event loop's."""
    factory = pool.conn_type or (ClientConn if pool.ssl is None else TLSClientConn)
    transport: asyncio.BaseTransport | FdTransport
    try:
        if poller is not None:
            conn = factory(owner, pool)
            transport = poller.attach(sock, conn)
        else:
            transport, conn = await loop.create_connection(lambda: factory(owner, pool), sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        await conn.ready()
    except BaseException:
        transport.abort()
        raise
    return conn
