"""The client's WebSocket layer: a connection that upgrades, then carries messages.

It sits above TCP or TLS (:class:`WsTLSConn` puts it above the one memory-BIO pump
of ``engine/tls.py``) and below the engine, which sees what it sees of an HTTP
connection: ``send`` one message, ``on_response`` when its answer is complete. A
message ``ping sleep=N times=K`` is complete with its K+1 pongs; an empty message is
sent as a ping *frame* and is complete with its pong frame (what a hold sends to keep
a connection alive). Latency runs from the intended send time to the last pong.
"""

from __future__ import annotations

import asyncio
from time import monotonic_ns
from typing import Final

from tippingpoint.engine.client import ClientConn, ConnOwner, Pool
from tippingpoint.engine.tls import TLSClientConn
from tippingpoint.targets import Target
from tippingpoint.wire import ws

__all__ = ["UpgradeRefused", "WsClosed", "WsConn", "WsTLSConn", "encode_message"]

_MAX_ANSWER_HEAD: Final = 16 * 1024
_MAX_MESSAGE: Final = 16 * 1024 * 1024


class WsClosed(ConnectionError):
    """The server closed the WebSocket while an answer was awaited."""

    kind = "ws-closed"


class _Malformed(ConnectionError):
    """The server broke RFC 6455 (a connection error: the engine counts it as one)."""

    kind = "malformed"


class UpgradeRefused(ConnectionError):
    """The server did not take the upgrade (its answer is not a valid 101)."""

    kind = "upgrade-refused"


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

    __slots__ = ("answer", "frames", "got", "head", "key", "nbytes", "status", "upgraded", "want")

    def __init__(self) -> None:
        self.frames = ws.FrameReader(server=False, max_message=_MAX_MESSAGE)
        self.key = ws.new_key()
        self.upgraded: asyncio.Future[None] | None = None
        self.head = b""
        self.want = 0  # answers the message in flight waits for; 0: a ping frame's pong
        self.got = 0
        self.nbytes = 0
        self.status = 200
        self.answer = b""


class WsConn(ClientConn):
    """A WebSocket client connection over plain TCP."""

    __slots__ = ()

    def __init__(self, owner: ConnOwner, pool: Pool) -> None:
        super().__init__(owner, pool)
        self._app = _State()

    async def ready(self) -> None:
        """The layers below, then the opening handshake (raises what made it fail)."""
        await super().ready()
        st: _State = self._app
        st.upgraded = asyncio.get_running_loop().create_future()
        pool = self._pool
        self._out(ws.upgrade_request(pool.host_header, pool.path, st.key))
        await st.upgraded

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
        parsed = ws.parse_ping(request) if len(request) > 4 else (0, 0)
        st.want = 1 + parsed[1] if isinstance(parsed, tuple) else 1
        self._out(ws.client_frame(ws.TEXT, request))

    def data_received(self, data: bytes) -> None:
        st: _State = self._app
        if st.upgraded is not None:
            data = self._answer_head(st, data)
            if not data:
                return
        frames = st.frames
        frames.feed(data)
        try:
            while (event := frames.next()) is not None:
                opcode, payload = event
                if opcode < ws.CLOSE:
                    self._message(st, payload)
                elif opcode == ws.PONG:
                    if self.busy and st.want == 0:
                        self._done(st)
                elif opcode == ws.PING:
                    self._out(ws.client_frame(ws.PONG, payload))
                else:
                    self._closed(payload)
                    return
        except ws.WsError as e:
            self._out(ws.client_frame(ws.CLOSE, ws.close_payload(e.code, e.reason)))
            self._fail(_Malformed(f"the server broke RFC 6455: {e.reason} (close {e.code})"))

    def _answer_head(self, st: _State, data: bytes) -> bytes:
        """Read the answer to the upgrade; the bytes after it."""
        upgraded = st.upgraded
        assert upgraded is not None
        head = st.head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            st.head = head
            if len(head) > _MAX_ANSWER_HEAD:
                self._refused(upgraded, "the answer to the upgrade has no end")
            return b""
        st.head = b""
        st.upgraded = None
        error = ws.read_answer(head[: end + 4], st.key)
        if error:
            self._refused(upgraded, error)
            return b""
        if not upgraded.done():
            upgraded.set_result(None)
        return head[end + 4 :]

    def _refused(self, upgraded: asyncio.Future[None], error: str) -> None:
        if not upgraded.done():
            upgraded.set_exception(UpgradeRefused(error))
        self.abort()

    def _message(self, st: _State, payload: bytes) -> None:
        now = monotonic_ns()
        if not self.busy or st.want == 0:
            self._fail(_Malformed(f"a {len(payload)}-byte message with none awaited"))
            return
        if self.first_byte_ns == 0:
            self.first_byte_ns = now
        st.got += 1
        st.nbytes += len(payload)
        if payload.startswith(b"error:"):
            st.status = 400
            st.answer = payload
            self._done(st)
        elif st.got >= st.want:
            self._done(st)

    def _done(self, st: _State) -> None:
        now = monotonic_ns()
        if self.first_byte_ns == 0:
            self.first_byte_ns = now
        self.busy = False
        self._owner.on_response(self, now, st.status, st.nbytes, True)

    def _closed(self, payload: bytes) -> None:
        """The server's close frame: answer it, and fail what was awaited."""
        try:
            code, reason = ws.check_close(payload)
        except ws.WsError as e:
            code, reason = e.code, e.reason
        self._out(ws.client_frame(ws.CLOSE, payload[:2]))
        self.eof = True
        self.open = False
        self._fail(WsClosed(f"the server closed the WebSocket: {code} {reason}".rstrip()))

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
