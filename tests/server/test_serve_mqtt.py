"""`serve --mqtt`: the ping/pong backend over MQTT, checked with paho-mqtt and raw packets."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from tests.conftest import HOST, Server, free_ports, recv_until_closed
from tippingpoint.wire import mqtt as m

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402


def start(serve: Any, *args: str, processes: int = 1) -> tuple[Server, int]:
    port = free_ports(1)[0]
    return serve("--mqtt", str(port), *args, processes=processes), port


class Paho:
    """A paho-mqtt client that collects what it receives."""

    def __init__(self, port: int, version: int, client_id: str = "dev-1") -> None:
        protocol = paho.MQTTv5 if version == 5 else paho.MQTTv311
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        self.got: list[tuple[str, bytes, int, Any, float]] = []
        self.lock = threading.Lock()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            with self.lock:
                self.got.append(
                    (
                        msg.topic,
                        msg.payload,
                        msg.qos,
                        getattr(msg, "properties", None),
                        time.monotonic(),
                    )
                )

        self.client.on_message = on_message
        self.client.connect(HOST, port, keepalive=30)
        self.client.loop_start()

    def wait(self, n: int, timeout: float = 10) -> list[tuple[str, bytes, int, Any, float]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= n:
                    return list(self.got)
            time.sleep(0.01)
        return list(self.got)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("version", [4, 5])
def test_ping_is_answered_with_pong_on_the_reply_topic_at_each_qos(
    serve: Any, version: int
) -> None:
    server, port = start(serve)
    client = Paho(port, version)
    try:
        for qos in (0, 1, 2):
            client.client.publish("ping/room", f"q{qos}".encode(), qos)
        got = client.wait(3)
    finally:
        client.close()
    assert sorted((t, p, q) for t, p, q, _, _ in got) == [
        ("pong/dev-1", b"pongq0", 0),
        ("pong/dev-1", b"pongq1", 1),
        ("pong/dev-1", b"pongq2", 2),
    ]
    metrics = server.metrics()
    assert metrics["tippingpoint_serve_mqtt_pongs_total"] == 3
    assert metrics["tippingpoint_serve_mqtt_connects_total"] == 1


def test_mqtt5_response_topic_correlation_and_sleep_times_properties(serve: Any) -> None:
    _, port = start(serve)
    client = Paho(port, 5)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "replies/abc"
    props.CorrelationData = b"\x07\x08"
    props.UserProperty = [("sleep", "100"), ("times", "2")]
    try:
        t0 = time.monotonic()
        client.client.publish("ping/x", b"!", 1, properties=props)
        got = client.wait(3)
        time.sleep(0.3)
    finally:
        client.close()
    assert len(client.got) == 3  # the first pong and two more, no extra
    assert all(t == "replies/abc" and p == b"pong!" for t, p, _, _, _ in got)
    assert all(pr.CorrelationData == b"\x07\x08" for _, _, _, pr, _ in got)
    assert got[-1][4] - t0 <= 3 * 0.102 + 0.5


def test_topic_suffix_sleep_and_times_for_mqtt311(serve: Any) -> None:
    _, port = start(serve)
    client = Paho(port, 4)
    try:
        client.client.publish("ping/x/sleep=20/times=3", b"", 0)
        got = client.wait(4)
        time.sleep(0.2)
    finally:
        client.close()
    assert len(client.got) == 4
    assert {p for _, p, _, _, _ in got} == {b"pong"}


def test_bad_sleep_value_is_said_in_mqtt5_and_counted(serve: Any) -> None:
    server, port = start(serve)
    client = Paho(port, 5)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("sleep", "-3")]
    try:
        client.client.publish("ping/x", b"", 0, properties=props)
        got = client.wait(1)
    finally:
        client.close()
    assert got and got[0][1].startswith(b"pong sleep must be a whole number")
    assert got[0][3].UserProperty[0][0] == "error"
    assert got[0][3].UserProperty[0][1].startswith("sleep must be")
    assert server.metrics()["tippingpoint_serve_mqtt_bad_ping_total"] == 1


def _session(port: int, version: int, keepalive: int = 60, client_id: str = "raw") -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.sendall(m.encode_connect(m.Connect(client_id, version, keepalive)))
    reader = m.Reader(version)
    packets = reader.feed(sock.recv(1024))
    assert packets and isinstance(packets[0], m.Connack) and packets[0].reason == 0
    return sock


def test_qos2_exchange_and_a_resent_message_answered_once(serve: Any) -> None:
    _, port = start(serve)
    sock = _session(port, 4)
    publish = m.encode_publish("ping/a", b"1", 2, 10, 4)
    sock.sendall(publish + m.encode_publish("ping/a", b"1", 2, 10, 4, dup=True))
    sock.sendall(m.encode_ack(m.PUBREL, 10, 4))
    reader = m.Reader(4)
    packets: list[m.Packet] = []
    deadline = time.monotonic() + 3
    while len(packets) < 4 and time.monotonic() < deadline:
        packets += reader.feed(sock.recv(4096))
    kinds = [(p.type, getattr(p, "packet_id", 0)) for p in packets]
    assert kinds.count((m.PUBREC, 10)) == 2
    assert (m.PUBCOMP, 10) in kinds
    pongs = [p for p in packets if isinstance(p, m.Publish)]
    assert len(pongs) == 1 and pongs[0].qos == 2 and pongs[0].payload == b"pong1"
    # Our side of the pong's QoS 2 flow: PUBREC gets PUBREL.
    sock.sendall(m.encode_ack(m.PUBREC, pongs[0].packet_id, 4))
    time.sleep(0.1)
    more = reader.feed(sock.recv(4096))
    assert any(isinstance(p, m.Ack) and p.type == m.PUBREL for p in more)
    sock.close()


@pytest.mark.parametrize("version", [4, 5])
def test_keepalive_is_enforced_at_one_and_a_half_times(serve: Any, version: int) -> None:
    server, port = start(serve)
    sock = _session(port, version, keepalive=1)
    sock.sendall(m.PINGREQ_BYTES)
    assert sock.recv(16) == m.PINGRESP_BYTES
    t0 = time.monotonic()
    data = recv_until_closed(sock, timeout=6)
    waited = time.monotonic() - t0
    assert 1.4 <= waited <= 3.6
    if version == 5:
        packets = m.Reader(5).feed(data)
        assert isinstance(packets[0], m.Disconnect) and packets[0].reason == 0x8D
    else:
        assert data == b""
    assert server.metrics()["tippingpoint_serve_mqtt_keepalive_timeouts_total"] == 1


# The reason is the one MQTT 5 gives (a 3.1.1 session is just closed).
BROKEN = [
    pytest.param(b"\x30\xff\xff\xff\xff\x7f", m.MALFORMED, id="varint-5-bytes"),
    pytest.param(b"\x30\x04\x00\x09ab", m.MALFORMED, id="length-past-packet"),
    pytest.param(b"\x30\x05\x00\x02\xc3\x28X", m.MALFORMED, id="bad-utf8"),
    pytest.param(b"\x62\x02\x00\x00", m.PROTOCOL_ERROR, id="packet-id-0"),
    pytest.param(b"\x41\x02\x00\x01", m.MALFORMED, id="reserved-flags"),
    pytest.param(b"\x36\x05\x00\x01a\x00\x01", m.MALFORMED, id="qos-3"),
    pytest.param(b"\x82\x03\x00\x01\x00", m.PROTOCOL_ERROR, id="subscribe-empty"),
    pytest.param(b"\x30\x04\x00\x01#X", m.TOPIC_INVALID, id="wildcard-topic"),
    pytest.param(b"\x20\x03\x00\x00\x00", m.PROTOCOL_ERROR, id="connack-from-client"),
    pytest.param(m.encode_connect(m.Connect("again", 5)), m.PROTOCOL_ERROR, id="second-connect"),
    pytest.param(b"\x30\x80\x80\x80\x01", m.TOO_LARGE, id="over-the-cap"),
]


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize(("data", "reason"), BROKEN)
def test_broken_packets_get_disconnect_or_close_and_the_server_lives(
    serve: Any, data: bytes, reason: int, version: int
) -> None:
    server, port = start(serve, "--mqtt-max-packet", "65536")
    sock = _session(port, version)
    sock.sendall(data)
    answer = recv_until_closed(sock)
    if version == 5:
        packets = m.Reader(5).feed(answer)
        assert len(packets) == 1 and isinstance(packets[0], m.Disconnect)
        assert packets[0].reason == reason
        assert packets[0].properties[m.REASON_STRING]
    else:
        assert answer == b""
    sock = _session(port, version)  # still serving
    sock.close()
    assert server.metrics()["tippingpoint_serve_mqtt_protocol_errors_total"] == 1


def test_unknown_protocol_level_gets_its_connack(serve: Any) -> None:
    _, port = start(serve)
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.sendall(b"\x10\x0c\x00\x04MQTT\x06\x02\x00\x3c\x00\x00")
    assert recv_until_closed(sock) == b"\x20\x02\x00\x01"


def test_every_process_answers_many_sessions(serve: Any) -> None:
    server, port = start(serve, processes=2)
    socks = [_session(port, 4, client_id=f"c{i}") for i in range(40)]
    for i, sock in enumerate(socks):
        sock.sendall(m.encode_publish("ping/z", str(i).encode(), 1, 1, 4))
    for i, sock in enumerate(socks):
        reader = m.Reader(4)
        packets: list[m.Packet] = []
        while len(packets) < 2:
            packets += reader.feed(sock.recv(4096))
        pong = next(p for p in packets if isinstance(p, m.Publish))
        assert (pong.topic, pong.payload) == (f"pong/c{i}", b"pong" + str(i).encode())
        sock.close()
    text = server.metrics()
    served = [v for k, v in text.items() if k.startswith("tippingpoint_serve_process_connections")]
    assert len(served) == 2
    assert text["tippingpoint_serve_mqtt_connects_total"] == 40
