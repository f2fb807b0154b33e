"""The client's WebSocket layer: a connection that upgrades, then carries messages.

It sits above TCP or TLS (:class:`WsTLSConn` puts it above the one memory-BIO pump
of ``engine/tls.py``) and below the engine, which sees what it sees of an HTTP
connection: ``send`` one message, ``on_response`` when its answer is complete. A
message ``ping sleep=N times=K`` is complete with its K+1 pongs; an empty message is
sent as a ping *frame* and is complete with its pong frame (what a hold sends to keep
a connection alive). Latency runs from the intended send time to the last pong. The
WebSocket itself (upgrade, frames, control frames) is :class:`~tippingpoint.wire.ws.ClientWs`,
which MQTT sessions over WebSocket use too (``engine/mqtt.py``).
"""

from __future__ import annotations

import asyncio
from time import monotonic_ns

from tippingpoint.engine.client import WS_UPGRADE, ClientConn, ConnOwner, Pool, answered
from tippingpoint.engine.tls import TLSClientConn
from tippingpoint.targets import Target
from tippingpoint.wire import ws

__all__ = ["WsConn", "WsTLSConn", "encode_message"]


def encode_message(target: Target) -> bytes:
    """The message a hit sends: the target's body, else ``ping`` with the target's
    ``sleep``/``times`` headers as words (the HTTP headers' meaning, see ``serve --ws``)."""
    if target.body:
        return target.body
    words = ["ping"]
    for name, value in target.headers:
        if name.lower() in ("sleep", "times"):
            words.append(f"{name.lower()}={value}")
    return " ".join(words).encode()


class _State:
    """A WebSocket connection's own state (kept apart so that the TLS variant can
    inherit from both connection classes)."""

    __slots__ = ("got", "last", "last_want", "nbytes", "status", "upgraded", "want", "ws")

    def __init__(self) -> None:
        self.ws = ws.ClientWs()
        self.upgraded: asyncio.Future[None] | None = None
        self.want = 0  # answers the message in flight waits for; 0: a ping frame's pong
        self.last = b""
        self.last_want = 1
        """The last message sent and the answers it waits for: a target's message is one
        bytes object, so its words are read once, not at every send."""
        self.got = 0
        self.nbytes = 0
        self.status = 200


class WsConn(ClientConn):
    """A WebSocket client connection over plain TCP."""

    __slots__ = ()

    def __init__(self, owner: ConnOwner[ClientConn], pool: Pool) -> None:
        super().__init__(owner, pool)
        self._app = _State()

    async def ready(self) -> None:
        """The layers below, then the opening handshake (raises what made it fail)."""
        await super().ready()
        st: _State = self._app
        st.upgraded = asyncio.get_running_loop().create_future()
        pool = self._pool
        self._out(st.ws.request(pool.host_header, pool.path))
        await answered(st.upgraded, pool, WS_UPGRADE)

    def send(self, request: bytes, intended_ns: int, head: bool, now: int, ti: int) -> None:
        st: _State = self._app
        self.ti = ti
        self.intended_ns = intended_ns
        self.sent_ns = now
        self.first_byte_ns = 0
        self.busy = True
        st.got = st.nbytes = 0
        st.status = 200
        if not request:
            st.want = 0
            self._out(ws.client_frame(ws.PING))
            return
        if request is not st.last:
            parsed = ws.parse_ping(request) if len(request) > 4 else (0, 0)
            st.last = request
            st.last_want = 1 + parsed[1] if isinstance(parsed, tuple) else 1
        st.want = st.last_want
        self._out(ws.client_frame(ws.TEXT, request))

    def data_received(self, data: bytes) -> None:
        st: _State = self._app
        try:
            events = st.ws.feed(data)
        except ConnectionError as e:  # HandshakeRefused, PeerClosed, Broken
            self._reply(st)
            self._broken(st, e)
            return
        if st.ws.replies:
            self._reply(st)
        upgraded = st.upgraded
        if upgraded is not None and st.ws.upgraded:
            st.upgraded = None
            if not upgraded.done():
                upgraded.set_result(None)
        for opcode, payload in events:
            if opcode == ws.PONG:
                if self.busy and st.want == 0:
                    self._done(st)
            else:
                self._message(st, payload)
            if self._transport is None:
                return

    def _reply(self, st: _State) -> None:
        """Send what the server's frames asked for (pongs, the close reply)."""
        reply = st.ws.outgoing()
        if reply and self._transport is not None:
            self._out(reply)

    def _broken(self, st: _State, exc: ConnectionError) -> None:
        upgraded = st.upgraded
        if upgraded is not None and not upgraded.done():
            upgraded.set_exception(exc)
            self.abort()
            return
        if isinstance(exc, ws.PeerClosed):
            self.eof = True
            self.open = False
        self._fail(exc)

    def _message(self, st: _State, payload: bytes) -> None:
        if not self.busy or st.want == 0:
            self._fail(ws.Broken(f"a {len(payload)}-byte message with none awaited"))
            return
        if self.first_byte_ns == 0:
            self.first_byte_ns = monotonic_ns()
        st.got += 1
        st.nbytes += len(payload)
        if payload.startswith(b"error:"):
            st.status = 400
            self._done(st)
        elif st.got >= st.want:
            self._done(st)

    def _done(self, st: _State) -> None:
        now = monotonic_ns()
        if self.first_byte_ns == 0:
            self.first_byte_ns = now
        self.busy = False
        self._owner.on_response(self, now, st.status, st.nbytes, True)

    def eof_received(self) -> bool | None:
        self.eof = True
        self.open = False
        return None

    @property
    def reusable(self) -> bool:
        return self.open and self._transport is not None


class WsTLSConn(TLSClientConn, WsConn):
    """A WebSocket client connection over TLS (``wss://``): TLS decrypts, then the
    WebSocket layer reads frames."""

    __slots__ = ()
