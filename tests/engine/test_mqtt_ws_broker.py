"""MQTT over WebSocket against a real broker (RabbitMQ's Web MQTT), through HAProxy with
TLS, with paho-mqtt's websockets transport on the other end counting every delivery."""

from __future__ import annotations

import threading
import time

from tests.conftest import HOST
from tests.engine.test_attack import attack, report_json
from tests.rabbitmq import Rabbit, rabbitmq  # noqa: F401 (the fixture)


class Subscriber:
    """paho over WebSocket, subscribed to devices/# at QoS 1, counting what it gets."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.count = 0
        self.topics: set[str] = set()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="oracle", transport="websockets"
        )
        self.client.ws_set_options(path="/ws")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(HOST, port)
        self.client.loop_start()
        self.client.subscribe("devices/#", qos=1)
        assert subscribed.wait(10)

    def _on_message(self, _c, _u, message) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self.count += 1
            self.topics.add(message.topic)

    def settled(self, want: int, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while self.count < want and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # and no more than that
        return self.count

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_over_wss_through_haproxy_delivered_exactly(
    rabbitmq: Rabbit,  # noqa: F811
    proxy,
) -> None:
    px = proxy([rabbitmq.ws_port], "--no-checks")
    oracle = Subscriber(rabbitmq.ws_port)
    try:
        stream = attack(
            f"mqtts://{HOST}:{px.https_port}/devices/%i/data", "--ws", "--ws-path", "/ws",
            "--insecure", "--rate", "400", "--duration", "3s", "--qos", "1",
            "--connections", "12", "--processes", "2",
        )  # fmt: skip
        report = report_json(stream)
        assert report["requests"] == 1200 and report["status_codes"] == {"200": 1200}
        assert oracle.settled(1200) == 1200
        assert len(oracle.topics) == 12
    finally:
        oracle.close()


def test_hold_mqtt_over_websocket_on_the_broker(rabbitmq: Rabbit) -> None:  # noqa: F811
    from tests.conftest import run_tp

    result = run_tp(
        "hold", f"mqtt://{HOST}:{rabbitmq.ws_port}", "--ws", "--ws-path", "/ws",
        "--connections", "300", "--connect-rate", "300", "--duration", "4s", "--keepalive",
        "2s", "--subscribe", "devices/%i/cmd",
    )  # fmt: skip
    text = result.stderr.decode() + result.stdout.decode()
    assert result.returncode == 0, text
    assert "peak established 300 of 300" in text and "lost 0" in text, text
