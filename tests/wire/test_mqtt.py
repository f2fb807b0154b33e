"""The MQTT codec: strictness on broken packets, and paho-mqtt as the oracle for the bytes."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from tippingpoint.wire import mqtt as m
from tippingpoint.wire.mqtt.properties import decode_properties

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402


def _connected(version: int) -> m.Reader:
    r = m.Reader(version)
    return r


def _one(reader: m.Reader, data: bytes) -> m.Packet:
    packets = reader.feed(data)
    assert reader.error is None, reader.error
    assert len(packets) == 1
    return packets[0]


def test_round_trip_every_packet_both_versions() -> None:
    for v in (4, 5):
        props = {m.USER_PROPERTY: [("a", "1"), ("b", "2")]} if v == 5 else None
        server = m.Reader()
        c = _one(
            server,
            m.encode_connect(
                m.Connect(
                    "dev-1",
                    v,
                    30,
                    False,
                    "user",
                    b"pw",
                    m.Will("last/will", b"bye", 1, True),
                    {m.SESSION_EXPIRY: 60} if v == 5 else None,
                )
            ),
        )
        assert isinstance(c, m.Connect)
        assert (c.client_id, c.version, c.keepalive, c.clean) == ("dev-1", v, 30, False)
        assert (c.username, c.password) == ("user", b"pw")
        assert c.will is not None and (c.will.topic, c.will.payload, c.will.qos) == (
            "last/will",
            b"bye",
            1,
        )
        assert server.version == v
        client = m.Reader(v)
        ca = _one(client, m.encode_connack(True, 0, v, {m.RECEIVE_MAXIMUM: 10} if v == 5 else None))
        assert isinstance(ca, m.Connack) and ca.session_present and ca.reason == 0
        for qos in (0, 1, 2):
            raw = m.encode_publish("a/b", b"x" * 300, qos, 7 if qos else 0, v, True, False, props)
            p = _one(server, raw)
            assert isinstance(p, m.Publish)
            assert (p.topic, p.payload, p.qos, p.retain, p.packet_id) == (
                "a/b",
                b"x" * 300,
                qos,
                True,
                7 if qos else 0,
            )
            if v == 5:
                assert p.properties[m.USER_PROPERTY] == [("a", "1"), ("b", "2")]
            template = m.PublishTemplate("a/b", 300, qos, v, True, props)
            assert template.encode(b"x" * 300, 7) == raw
        for kind in (m.PUBACK, m.PUBREC, m.PUBCOMP):
            a = _one(client, m.encode_ack(kind, 9, v))
            assert isinstance(a, m.Ack) and (a.type, a.packet_id, a.reason) == (kind, 9, 0)
        a = _one(server, m.encode_ack(m.PUBREL, 9, v))
        assert isinstance(a, m.Ack) and a.type == m.PUBREL
        if v == 5:
            a = _one(client, m.encode_ack(m.PUBACK, 9, v, 0x10, {m.REASON_STRING: "none"}))
            assert isinstance(a, m.Ack) and a.reason == 0x10
            assert a.properties == {m.REASON_STRING: "none"}
        s = _one(server, m.encode_subscribe(3, [("a/+", 1), ("b/#", 2)], v))
        assert isinstance(s, m.Subscribe) and s.topics == [("a/+", 1), ("b/#", 2)]
        sa = _one(client, m.encode_suback(3, [1, 0x80], v))
        assert isinstance(sa, m.Suback) and sa.codes == [1, 0x80]
        u = _one(server, m.encode_unsubscribe(4, ["a/+"], v))
        assert isinstance(u, m.Unsubscribe) and u.topics == ["a/+"]
        ua = _one(client, m.encode_unsuback(4, [0] if v == 5 else [], v))
        assert isinstance(ua, m.Unsuback) and ua.packet_id == 4
        assert _one(server, m.PINGREQ_BYTES).type == m.PINGREQ
        assert _one(client, m.PINGRESP_BYTES).type == m.PINGRESP
        d = _one(client, m.encode_disconnect(v, 0x8E if v == 5 else 0))
        assert isinstance(d, m.Disconnect) and d.reason == (0x8E if v == 5 else 0)


def test_split_anywhere_and_many_per_read() -> None:
    stream = m.encode_connect(m.Connect("c", 5)) + b"".join(
        m.encode_publish(f"t/{i}", bytes(i * 40), 1, i + 1, 5) for i in range(20)
    )
    for cut in range(1, 40):
        r = m.Reader()
        got: list[m.Packet] = []
        for i in range(0, len(stream), cut):
            got += r.feed(stream[i : i + cut])
        assert r.error is None and r.buffered == 0
        assert len(got) == 21
        assert [p.packet_id for p in got[1:] if isinstance(p, m.Publish)] == list(range(1, 21))


CONNECT4 = m.encode_connect(m.Connect("c", 4))
CONNECT5 = m.encode_connect(m.Connect("c", 5))


@pytest.mark.parametrize(
    ("prefix", "data", "reason", "words"),
    [
        (b"", b"\x30\xff\xff\xff\xff\x7f", m.MALFORMED, "longer than 4"),
        (CONNECT4, b"\x40\x03\x00\x01\x00", m.MALFORMED, "after the end"),
        (CONNECT4, b"\x30\x04\x00\x09ab", m.MALFORMED, "past the end"),
        (CONNECT4, b"\x30\x05\x00\x02\xff\xfeX", m.MALFORMED, "UTF-8"),
        (CONNECT4, b"\x30\x05\x00\x02a\x00X", m.MALFORMED, "U+0000"),
        (CONNECT4, b"\x41\x02\x00\x01", m.MALFORMED, "reserved flags"),
        (CONNECT4, b"\x62\x02\x00\x00", m.PROTOCOL_ERROR, "packet id of 0"),
        (CONNECT4, b"\x36\x05\x00\x01a\x00\x01", m.MALFORMED, "QoS 3"),
        (CONNECT4, b"\x38\x04\x00\x01aX", m.MALFORMED, "DUP"),
        (CONNECT4, b"\x30\x04\x00\x01+X", m.TOPIC_INVALID, "wildcard"),
        (CONNECT4, b"\x82\x06\x00\x01\x00\x01a\x03", m.MALFORMED, "QoS 3"),
        (CONNECT4, b"\x82\x02\x00\x01", m.PROTOCOL_ERROR, "without topic"),
        (CONNECT4, b"\x82\x07\x00\x01\x00\x02a#\x00", m.PROTOCOL_ERROR, "misplaced"),
        (CONNECT4, b"\xc0\x01\x00", m.MALFORMED, "with a body"),
        (CONNECT4, CONNECT4, m.PROTOCOL_ERROR, "second CONNECT"),
        (b"", b"\x30\x03\x00\x01a", m.PROTOCOL_ERROR, "before CONNECT"),
        (b"", b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00", m.PROTOCOL_ERROR, "protocol name"),
        (b"", b"\x10\x0c\x00\x04MQTT\x03\x02\x00\x3c\x00\x00", m.UNSUPPORTED_VERSION, "level 3"),
        (b"", b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", m.MALFORMED, "reserved CONNECT"),
        (b"", b"\x00\x00", m.MALFORMED, "reserved"),
        (CONNECT4, b"\xf0\x00", m.PROTOCOL_ERROR, "MQTT 5"),
        (CONNECT5, b"\x30\x06\x00\x01a\x02\x7f\x00", m.MALFORMED, "unknown property"),
        (CONNECT5, b"\x30\x06\x00\x01a\x02\x11\x00", m.MALFORMED, "not allowed"),
        (CONNECT5, b"\x30\x0a\x00\x01a\x06\x23\x00\x01\x23\x00\x02", m.PROTOCOL_ERROR, "twice"),
        (CONNECT5, b"\x30\x05\x00\x01a\x09X", m.MALFORMED, "past the end"),
        (CONNECT5, b"\x30\x03\x00\x00\x00", m.PROTOCOL_ERROR, "empty PUBLISH topic"),
    ],
)
def test_broken_packets_are_protocol_errors(
    prefix: bytes, data: bytes, reason: int, words: str
) -> None:
    r = m.Reader()
    good = r.feed(prefix)
    assert r.error is None
    assert r.feed(data) == []
    assert r.error is not None
    assert r.error.reason == reason, r.error
    assert words in r.error.message
    assert r.feed(CONNECT4) == []  # stopped
    del good


def test_packet_size_cap() -> None:
    r = m.Reader(4, max_size=1000)
    assert r.feed(b"\x30\xe9\x07") == []  # 1001 announced: refused before it arrives
    assert r.error is not None and r.error.reason == m.TOO_LARGE


def test_fuzzed_bytes_never_raise() -> None:
    import random

    rnd = random.Random(7)
    valid = CONNECT5 + m.encode_publish("a/b", b"hello", 1, 3, 5, properties={m.TOPIC_ALIAS: 2})
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        r = m.Reader(max_size=4096)
        r.feed(bytes(data))  # any outcome but an exception


def test_properties_agree_with_paho() -> None:
    theirs = Properties(PacketTypes.PUBLISH)
    theirs.ResponseTopic = "pong/dev-1"
    theirs.CorrelationData = b"\x01\x02"
    theirs.MessageExpiryInterval = 5
    theirs.UserProperty = [("sleep", "10"), ("times", "2")]
    theirs.SubscriptionIdentifier = [300]
    packed = theirs.pack()
    ours, pos = decode_properties(packed, 0, m.PUBLISH)
    assert pos == len(packed)
    assert ours == {
        m.RESPONSE_TOPIC: "pong/dev-1",
        m.CORRELATION_DATA: b"\x01\x02",
        m.MESSAGE_EXPIRY: 5,
        m.USER_PROPERTY: [("sleep", "10"), ("times", "2")],
        m.SUBSCRIPTION_ID: [300],
    }
    back = Properties(PacketTypes.PUBLISH)
    back.unpack(m.encode_properties(ours))
    assert back.ResponseTopic == "pong/dev-1"
    assert back.UserProperty == [("sleep", "10"), ("times", "2")]
    assert back.SubscriptionIdentifier == [300]


class _PahoPeer:
    """A one-connection server that reads paho's packets with our reader and answers with
    our encoders: what paho sends must decode, what we send paho must understand."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.packets: list[m.Packet] = []
        self.error: m.ProtocolError | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        reader = m.Reader()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for p in reader.feed(data):
                    self.packets.append(p)
                    conn.sendall(self._answer(p, reader.version))
                if reader.error is not None:
                    self.error = reader.error
                    return

    def _answer(self, p: m.Packet, v: int) -> bytes:
        if isinstance(p, m.Connect):
            return m.encode_connack(False, 0, v)
        if isinstance(p, m.Subscribe):
            return m.encode_suback(p.packet_id, [o & 3 for _, o in p.topics], v) + b"".join(
                # one message back per QoS, as a broker delivers them
                m.encode_publish("down/" + str(q), b"to-paho", q, 100 + q, v)
                for q in (0, 1, 2)
            )
        if isinstance(p, m.Publish) and p.qos == 1:
            return m.encode_ack(m.PUBACK, p.packet_id, v)
        if isinstance(p, m.Publish) and p.qos == 2:
            return m.encode_ack(m.PUBREC, p.packet_id, v)
        if isinstance(p, m.Ack) and p.type == m.PUBREL:
            return m.encode_ack(m.PUBCOMP, p.packet_id, v)
        if isinstance(p, m.Ack) and p.type == m.PUBREC:
            return m.encode_ack(m.PUBREL, p.packet_id, v)
        if isinstance(p, m.Ping) and p.type == m.PINGREQ:
            return m.PINGRESP_BYTES
        if isinstance(p, m.Unsubscribe):
            return m.encode_unsuback(p.packet_id, [0] * len(p.topics), v)
        return b""


@pytest.mark.parametrize("version", [4, 5])
def test_paho_client_against_our_codec(version: int) -> None:
    peer = _PahoPeer()
    api = paho.CallbackAPIVersion.VERSION2
    client = paho.Client(
        api, client_id="paho-1", protocol=paho.MQTTv5 if version == 5 else paho.MQTTv311
    )
    got: list[Any] = []
    acks: list[int] = []
    client.on_message = lambda c, u, msg: got.append((msg.topic, msg.payload, msg.qos))
    client.on_publish = lambda c, u, mid, rc, props: acks.append(mid)
    props = None
    if version == 5:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "pong/paho-1"
        props.UserProperty = [("sleep", "5")]
    client.connect("127.0.0.1", peer.port, keepalive=20)
    client.loop_start()
    try:
        client.subscribe([("down/#", 2), ("x/+/y", 1)])
        infos = [
            client.publish("ping/1", b"p" * 70_000, qos, properties=props) for qos in (0, 1, 2)
        ]
        deadline = time.monotonic() + 10
        while (len(got) < 3 or len(acks) < 3) and time.monotonic() < deadline:
            time.sleep(0.02)
        client.unsubscribe("down/#")
        time.sleep(0.2)
    finally:
        client.disconnect()
        client.loop_stop()
    peer.thread.join(5)
    assert peer.error is None, peer.error
    assert sorted(got) == [(f"down/{q}", b"to-paho", q) for q in (0, 1, 2)]
    assert sorted(acks) == sorted(i.mid for i in infos)
    kinds = [type(p).__name__ for p in peer.packets]
    connect = peer.packets[0]
    assert isinstance(connect, m.Connect)
    assert (connect.client_id, connect.version, connect.keepalive) == ("paho-1", version, 20)
    subscribe = next(p for p in peer.packets if isinstance(p, m.Subscribe))
    assert [(t, o & 3) for t, o in subscribe.topics] == [("down/#", 2), ("x/+/y", 1)]
    publishes = [p for p in peer.packets if isinstance(p, m.Publish)]
    assert [(p.topic, len(p.payload), p.qos) for p in publishes] == [
        ("ping/1", 70_000, q) for q in (0, 1, 2)
    ]
    if version == 5:
        assert publishes[0].properties[m.RESPONSE_TOPIC] == "pong/paho-1"
        assert publishes[0].properties[m.USER_PROPERTY] == [("sleep", "5")]
    assert "Unsubscribe" in kinds and kinds[-1] == "Disconnect"
