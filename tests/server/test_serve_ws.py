"""`serve --ws`: WebSocket on the HTTP ports, against clients no one here wrote.

The `websockets` library is the oracle for the protocol, paho-mqtt's websockets
transport for MQTT over WebSocket; a corpus of broken frames goes over raw sockets.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import threading
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.frames import Close

from tests.conftest import HOST, read_response
from tippingpoint.wire import ws


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_websockets_client_gets_its_pongs(serve) -> None:
    server = serve("--ws")

    async def talk() -> None:
        async with connect(f"ws://{HOST}:{server.port}/any") as c:
            await c.send("ping")
            assert await c.recv() == "pong"
            await c.send(b"ping")
            assert await c.recv() == b"pong"
            await c.send("ping sleep=30 times=2")
            assert [await c.recv() for _ in range(3)] == ["pong"] * 3
            await c.send("ping times=x")
            assert (await c.recv()).startswith("error: times must be a whole number")
            await c.send("x" * 100_000)  # any message: 64-bit length, answered
            assert await c.recv() == "pong"
            await (await c.ping(b"still there?"))
        assert c.close_code == 1000  # the close handshake, answered

    run(talk())
    m = server.metrics()
    assert m["tippingpoint_serve_websocket_upgrades_total"] == 1
    assert m["tippingpoint_serve_websocket_messages_received_total"] == 5
    assert m["tippingpoint_serve_websocket_pongs_total"] == 6
    assert m["tippingpoint_serve_websocket_ping_frames_total"] == 1
    assert "Traceback" not in server.log()


def test_without_ws_an_upgrade_is_answered_as_http(serve) -> None:
    server = serve()
    with socket.create_connection((HOST, server.port)) as s:
        s.sendall(ws.upgrade_request("x", "/", ws.new_key()))
        assert read_response(s).endswith(b"\r\n\r\npong")


def test_a_bad_upgrade_gets_400_with_the_reason(serve) -> None:
    server = serve("--ws")
    request = ws.upgrade_request("x", "/", ws.new_key()).replace(b"Version: 13", b"Version: 8")
    with socket.create_connection((HOST, server.port)) as s:
        s.sendall(request)
        response = read_response(s)
    assert response.startswith(b"HTTP/1.1 400") and b"Sec-WebSocket-Version must be 13" in response


def frame(first: int, payload: bytes, length: bytes = b"", masked: bool = True) -> bytes:
    key = os.urandom(4) if masked else b""
    n = len(payload)
    if not length:
        length = (
            bytes(((0x80 if masked else 0) | n,)) if n < 126 else b"\xfe" + struct.pack("!H", n)
        )
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if masked else payload
    return bytes((first,)) + length + key + body


CORPUS = {
    "unmasked client frame": (frame(0x81, b"ping", masked=False), 1002),
    "reserved bit": (frame(0xC1, b"ping"), 1002),
    "reserved data opcode": (frame(0x83, b"x"), 1002),
    "reserved control opcode": (frame(0x8F, b""), 1002),
    "oversized control frame": (frame(0x89, b"p" * 126), 1002),
    "fragmented control frame": (frame(0x09, b"p"), 1002),
    "lone continuation": (frame(0x80, b"x"), 1002),
    "fragment interleaved with a data frame": (frame(0x01, b"pi") + frame(0x81, b"ng"), 1002),
    "bad UTF-8 in text": (frame(0x81, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xed\xa0\x80"), 1007),
    "bad close code": (frame(0x88, struct.pack("!H", 1006)), 1002),
    "close code out of range": (frame(0x88, struct.pack("!H", 5000)), 1002),
    "1-byte close payload": (frame(0x88, b"\x03"), 1002),
    "bad UTF-8 in the close reason": (frame(0x88, struct.pack("!H", 1000) + b"\xff"), 1007),
    "message over --max-body-size": (frame(0x82, b"x" * 5000), 1009),
    "non-minimal length": (frame(0x82, b"x", length=b"\xfe\x00\x01"), 1002),
}


def upgraded(port: int) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=5)
    key = ws.new_key()
    s.sendall(ws.upgrade_request("x", "/", key))
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert ws.read_answer(head, key) == ""
    return s


def close_frame_then_eof(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_broken_frames_get_the_close_code_rfc_6455_asks(serve) -> None:
    server = serve("--ws", "--max-body-size", "4096")
    for name, (data, code) in CORPUS.items():
        with upgraded(server.port) as s:
            s.sendall(frame(0x81, b"ping") + data)
            answer = close_frame_then_eof(s)
        pong = ws.server_frame(ws.TEXT, b"pong")
        assert answer.startswith(pong), name
        closing = answer[len(pong) :]
        assert closing[0] == 0x88 and closing[1] < 126, (name, closing)
        assert Close.parse(closing[2:]).code == code, (name, closing)
    assert "Traceback" not in server.log()
    m = server.metrics()
    assert m["tippingpoint_serve_websocket_protocol_errors_total"] == len(CORPUS)
    run(_still_serves(server.port))


async def _still_serves(port: int) -> None:
    async with connect(f"ws://{HOST}:{port}/") as c:
        await c.send("ping")
        assert await c.recv() == "pong"


def test_a_close_with_no_code_is_answered_with_none(serve) -> None:
    server = serve("--ws")
    with upgraded(server.port) as s:
        s.sendall(frame(0x88, b""))
        assert close_frame_then_eof(s) == b"\x88\x00"


def paho_round_trip(port: int, count: int, cafile: str | None = None) -> list[bytes]:
    """Publish ``count`` pings with paho over WebSocket (TLS with ``cafile``); the
    payloads of the pongs that came back."""
    mqtt = pytest.importorskip("paho.mqtt.client")
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="w1", transport="websockets")
    client.ws_set_options(path="/mqtt")
    if cafile is not None:
        client.tls_set(ca_certs=cafile)

    def on_message(_c, _u, message) -> None:
        assert message.topic == "pong/w1"
        got.append(message.payload)
        if len(got) == count:
            done.set()

    client.on_message = on_message
    client.connect("localhost", port)
    client.loop_start()
    try:
        client.subscribe("pong/w1", qos=1)
        for i in range(count):
            client.publish(f"ping/{i}", str(i).encode(), qos=1).wait_for_publish(5)
        assert done.wait(5), got
    finally:
        client.disconnect()
        client.loop_stop()
    return sorted(got)


def test_mqtt_over_websocket_with_paho(serve) -> None:
    server = serve("--ws")
    assert paho_round_trip(server.port, 3) == [b"pong0", b"pong1", b"pong2"]
    m = server.metrics()
    assert m["tippingpoint_serve_mqtt_publish_received_total"] == 3
    assert m["tippingpoint_serve_websocket_upgrades_total"] == 1


def test_websocket_and_mqtt_over_websocket_through_haproxy(serve, proxy) -> None:
    server = serve("--ws", ports=2)
    px = proxy(server.ports)
    cert = os.path.join(px.dir, "tls", "cert.pem")
    context = ssl.create_default_context(cafile=cert)

    async def talk() -> None:
        async with connect(f"ws://{HOST}:{px.http_port}/") as c:
            await c.send("ping sleep=10 times=1")
            assert [await c.recv(), await c.recv()] == ["pong", "pong"]
        async with connect(
            f"wss://localhost:{px.https_port}/", ssl=context, subprotocols=["mqtt"]
        ) as c:
            assert c.subprotocol == "mqtt"
        async with connect(f"wss://localhost:{px.https_port}/", ssl=context) as c:
            await c.send(b"ping")
            assert await c.recv() == b"pong"

    run(talk())
    # MQTT over wss:// through HAProxy, counted on both ends.
    pongs = paho_round_trip(px.https_port, 50, cafile=cert)
    assert pongs == sorted(b"pong%d" % i for i in range(50))
    assert server.metrics()["tippingpoint_serve_mqtt_publish_received_total"] == 50
    config = Path(px.dir, "haproxy-0.cfg").read_text()
    assert "timeout tunnel 7200000ms" in config
