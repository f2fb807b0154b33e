"""The backend's MQTT side: the article's ping/pong server, spoken in MQTT 3.1.1 and 5.

Not a broker: nothing is routed between clients. A PUBLISH to ``ping/...`` is answered,
on the same connection, by a PUBLISH of ``pong`` followed by the request's payload (so a
load client gets its sequence number and send time back) to the client's reply topic:
``pong/<client id>``, or the MQTT 5 response topic (with its correlation data) when the
request gives one. The reply has the request's QoS.

``sleep`` and ``times`` work as in HTTP: MQTT 5 user properties ``sleep``/``times``, or a
topic suffix ``/sleep=N/times=K`` for 3.1.1 clients. ``sleep: N`` waits a random whole
number of milliseconds in [0, N+1] before the pong; ``times: K`` sends K more pongs, each
after its own pause. Publishes elsewhere are acknowledged (QoS 1 and 2) and dropped.
SUBSCRIBE gets the QoS it asks for, UNSUBSCRIBE its UNSUBACK, PINGREQ its PINGRESP.

Keepalive is enforced: a session silent for 1.5 times its keepalive is closed. A broken
packet gets a DISCONNECT with the reason code (MQTT 5) or a plain close (3.1.1, whose
DISCONNECT goes from client to server only); an unknown protocol level gets the CONNACK
that says so.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Final, cast

from tippingpoint.wire import mqtt as m
from tippingpoint.wire.http1 import MAX_SLEEP_MS, MAX_TIMES

if TYPE_CHECKING:
    from tippingpoint.server.protocol import Worker

__all__ = ["MQTTProtocol", "parse_ping"]

_NEVER: Final = 1 << 62
_PONG: Final = b"pong"
_CONNACK_OK: Final = {4: m.encode_connack(False, 0, 4), 5: m.encode_connack(False, 0, 5)}
_CONNACK_BAD_VERSION: Final = b"\x20\x02\x00\x01"
"""3.1.1's "unacceptable protocol version": what a client of an unknown level can read."""
_PUBACK: Final = m.PUBACK << 4
_PUBREC: Final = m.PUBREC << 4
_PUBCOMP: Final = m.PUBCOMP << 4
_PUBREL: Final = (m.PUBREL << 4) | 2


def parse_ping(topic: str, props: m.Properties) -> tuple[int | None, int] | str:
    """``(sleep ms or None, times)`` for a ping, or why its values are unusable."""
    sleep: int | None = None
    times = 0
    values: list[tuple[str, str]] = list(props.get(m.USER_PROPERTY, ()))
    for level in topic.split("/")[1:]:
        name, sep, value = level.partition("=")
        if sep and name in ("sleep", "times"):
            values.append((name, value))
    for name, value in values:
        if name not in ("sleep", "times"):
            continue
        cap = MAX_SLEEP_MS if name == "sleep" else MAX_TIMES
        if not value.isdigit():
            return f"{name} must be a whole number >= 0, got {value[:40]!r}"
        number = int(value)
        if number > cap:
            return f"{name} must be <= {cap}, got {number}"
        if name == "sleep":
            sleep = number
        else:
            times = number
    if times and sleep is None:
        sleep = 0
    return sleep, times


class MQTTProtocol(asyncio.Protocol):
    """One MQTT session. Shares the worker's connection set, capacity switch and
    deadline sweep with the HTTP connections (``deadline``, ``expire``, ``shutdown``)."""

    __slots__ = (
        "_keep_ticks",
        "_next_id",
        "_qos2",
        "_reader",
        "_reply_head",
        "_timers",
        "_transport",
        "_w",
        "client_id",
        "deadline",
        "version",
    )

    def __init__(self, worker: Worker) -> None:
        self._w = worker
        self._transport: asyncio.Transport | None = None
        self._reader = m.Reader(0, worker.config.mqtt_max_packet)
        self.deadline = 0
        self.version = 0
        self.client_id = ""
        self._keep_ticks = 0
        self._next_id = 0
        self._reply_head = b""
        self._qos2: set[int] | None = None
        self._timers: set[asyncio.TimerHandle] | None = None

    # Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.deadline = self._w.header_deadline  # CONNECT must come within --header-timeout
        self._w.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timers:
            for timer in self._timers:
                timer.cancel()
            self._timers = None
        self._w.closed(self, exc)

    def data_received(self, data: bytes) -> None:
        w = self._w
        stats = w.stats
        stats.bytes_in += len(data)
        reader = self._reader
        packets = reader.feed(data)
        out: list[bytes] = []
        for packet in packets:
            if self._transport is None:
                return
            self._handle(packet, out)
        if reader.error is not None:
            self._refuse(reader.error, out)
            return
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            stats.bytes_out += len(data)
            self._transport.write(data)  # type: ignore[union-attr]
        if self._keep_ticks:
            self.deadline = w.tick + self._keep_ticks

    # Packets

    def _handle(self, p: m.Packet, out: list[bytes]) -> None:
        kind = p.type
        stats = self._w.stats
        if kind == m.PUBLISH:
            assert isinstance(p, m.Publish)
            stats.mqtt_publish_in += 1
            qos = p.qos
            if qos == 1:
                out.append(bytes((_PUBACK, 2)) + p.packet_id.to_bytes(2, "big"))
            elif qos == 2:
                out.append(bytes((_PUBREC, 2)) + p.packet_id.to_bytes(2, "big"))
                seen = self._qos2
                if seen is None:
                    seen = self._qos2 = set()
                if p.packet_id in seen:
                    return  # a resent QoS 2 message: acknowledged, not answered twice
                seen.add(p.packet_id)
            if p.topic.startswith("ping/"):
                self._ping(p, out)
        elif kind == m.PINGREQ:
            stats.mqtt_pings += 1
            out.append(m.PINGRESP_BYTES)
        elif kind == m.PUBREL:
            assert isinstance(p, m.Ack)
            if self._qos2 is not None:
                self._qos2.discard(p.packet_id)
            out.append(bytes((_PUBCOMP, 2)) + p.packet_id.to_bytes(2, "big"))
        elif kind == m.PUBREC:  # of a pong sent at QoS 2
            assert isinstance(p, m.Ack)
            out.append(bytes((_PUBREL, 2)) + p.packet_id.to_bytes(2, "big"))
        elif kind in (m.PUBACK, m.PUBCOMP):
            pass  # the client has a pong
        elif kind == m.CONNECT:
            assert isinstance(p, m.Connect)
            self._connect(p, out)
        elif kind == m.SUBSCRIBE:
            assert isinstance(p, m.Subscribe)
            stats.mqtt_subscribes += 1
            out.append(m.encode_suback(p.packet_id, [o & 3 for _, o in p.topics], self.version))
        elif kind == m.UNSUBSCRIBE:
            assert isinstance(p, m.Unsubscribe)
            out.append(m.encode_unsuback(p.packet_id, [0] * len(p.topics), self.version))
        elif kind == m.DISCONNECT:
            self._flush(out)
            self._close()
        else:  # a server's packet (CONNACK, SUBACK...) or AUTH, which this server does not do
            self._refuse(m.ProtocolError(m.PROTOCOL_ERROR, f"{m.NAMES[kind]} from a client"), out)

    def _connect(self, p: m.Connect, out: list[bytes]) -> None:
        w = self._w
        w.stats.mqtt_connects += 1
        self.version = p.version
        props: m.Properties | None = None
        client_id = p.client_id
        if not client_id:
            if p.version == 4 and not p.clean:
                # 3.1.1: an empty client id needs a clean session (identifier rejected).
                out.append(b"\x20\x02\x00\x02")
                self._flush(out)
                self._close()
                return
            client_id = f"tippingpoint-{id(self):x}"
            if p.version == 5:
                props = {m.ASSIGNED_CLIENT_ID: client_id}
        self.client_id = client_id
        keepalive = p.keepalive or w.config.idle_timeout
        # Closed by the first sweep after tick + this: 1.5x to 1.5x + 1 s after the last packet.
        self._keep_ticks = math.ceil(keepalive * 1.5)
        out.append(
            _CONNACK_OK[p.version] if props is None else m.encode_connack(False, 0, 5, props)
        )

    def _ping(self, p: m.Publish, out: list[bytes]) -> None:
        props = p.properties
        plan = parse_ping(p.topic, props) if (props or "=" in p.topic) else (None, 0)
        if isinstance(plan, str):
            self._w.stats.mqtt_bad_pings += 1
            if self.version == 5:
                # A PUBLISH cannot carry a reason string: the reason goes in a user property.
                said = {m.USER_PROPERTY: [("error", plan)]}
                self._send_pong(p, out, _PONG + b" " + plan.encode(), said)
            return
        sleep, times = plan
        if sleep is None:
            self._send_pong(p, out, _PONG + p.payload)
            return
        self._later(sleep, p, times)

    def _later(self, sleep: int, p: m.Publish, left: int) -> None:
        timers = self._timers
        if timers is None:
            timers = self._timers = set()
        w = self._w
        handle: asyncio.TimerHandle

        def fire() -> None:
            timers.discard(handle)
            if self._transport is None:
                return
            out: list[bytes] = []
            self._send_pong(p, out, _PONG + p.payload)
            self._flush(out)
            if left:
                self._later(sleep, p, left - 1)

        handle = w.loop.call_later(w.random_ms(sleep), fire)
        timers.add(handle)

    def _send_pong(
        self, p: m.Publish, out: list[bytes], payload: bytes, extra: m.Properties | None = None
    ) -> None:
        self._w.stats.mqtt_pongs += 1
        qos = p.qos
        pid = b""
        if qos:
            self._next_id = self._next_id % 65535 + 1
            pid = self._next_id.to_bytes(2, "big")
        if self.version == 5:
            props = p.properties
            response = props.get(m.RESPONSE_TOPIC)
            if response is not None or extra:
                reply: m.Properties = dict(extra or {})
                if m.CORRELATION_DATA in props:
                    reply[m.CORRELATION_DATA] = props[m.CORRELATION_DATA]
                topic = response if response is not None else f"pong/{self.client_id}"
                out.append(
                    m.encode_publish(topic, payload, qos, self._next_id, 5, properties=reply)
                )
                return
            mid = b"\x00"
        else:
            mid = b""
        head = self._reply_head
        if not head:  # made at the first pong: an idle session does not keep it
            topic = f"pong/{self.client_id}".encode()
            head = self._reply_head = len(topic).to_bytes(2, "big") + topic
        length = len(head) + len(pid) + len(mid) + len(payload)
        out.append(
            bytes(((m.PUBLISH << 4) | (qos << 1),))
            + m.encode_varint(length)
            + head
            + pid
            + mid
            + payload
        )

    # Ending

    def _flush(self, out: list[bytes]) -> None:
        if out and self._transport is not None:
            data = b"".join(out)
            self._w.stats.bytes_out += len(data)
            self._transport.write(data)
            out.clear()

    def _refuse(self, error: m.ProtocolError, out: list[bytes]) -> None:
        """A broken or unexpected packet: what came before it is answered, then the
        DISCONNECT with its reason (MQTT 5), or the CONNACK for an unknown level."""
        self._w.stats.mqtt_protocol_errors += 1
        if error.reason == m.UNSUPPORTED_VERSION and not self.version:
            out.append(_CONNACK_BAD_VERSION)
        elif self.version == 5:
            out.append(m.encode_disconnect(5, error.reason, {m.REASON_STRING: error.message[:200]}))
        self._flush(out)
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.deadline = _NEVER

    # Called by the worker

    def expire(self) -> None:
        """Past the deadline: silent for 1.5x its keepalive, or no CONNECT in time."""
        if self._transport is None:
            return
        w = self._w
        if self.version:
            w.stats.mqtt_keepalive_timeouts += 1
            if self.version == 5:
                self._flush([m.encode_disconnect(5, 0x8D)])  # keep alive timeout
        else:
            w.stats.header_timeouts += 1
        self._close()

    def shutdown(self) -> None:
        if self.version == 5:
            self._flush([m.encode_disconnect(5, 0x8B)])  # server shutting down
        self._close()
