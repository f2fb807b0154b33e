"""`tippingpoint proxy --mqtt/--mqtts`: real HAProxy in TCP mode in front of `serve --mqtt`
and mosquitto: plain and TLS sessions through it, an invalid first packet rejected, and a
publisher meeting its subscribers on one broker among two."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HOST, free_ports, recv_until_closed, run_tp, tippingpoint_cmd
from tippingpoint.broker import BrokerConfig, BrokerError, BrokerFleet, find_mosquitto
from tippingpoint.proxy.config import Frontend, MQTTRouting, ProxyConfig, render
from tippingpoint.proxy.instance import find_haproxy
from tippingpoint.wire import mqtt as m

paho = pytest.importorskip("paho.mqtt.client")


class MQTTProxy:
    def __init__(self, proc: subprocess.Popen[bytes], directory: Path, port: int, tls: int):
        self.proc = proc
        self.dir = directory
        self.port = port
        self.tls_port = tls

    @property
    def cacert(self) -> str:
        return str(self.dir / "tls" / "cert.pem")


@pytest.fixture
def mqtt_proxy(tmp_path: Path) -> Iterator[Any]:
    started: list[MQTTProxy] = []

    def start(backends: str, *args: str) -> MQTTProxy:
        port, tls = free_ports(2)
        directory = tmp_path / f"proxy-{len(started)}"
        proc = subprocess.Popen(
            tippingpoint_cmd(
                "proxy", "--mqtt", f"{HOST}:{port}", "--mqtts", f"{HOST}:{tls}",
                "--mqtt-backends", backends, "--dir", str(directory), *args,
            ),
            stderr=subprocess.PIPE,
        )  # fmt: skip
        proxy = MQTTProxy(proc, directory, port, tls)
        started.append(proxy)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                return proxy
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        proc.stderr.read().decode() if proc.stderr else ""
                    ) from None
                time.sleep(0.05)

    yield start
    for proxy in started:
        proxy.proc.terminate()
        proxy.proc.wait(30)


def test_the_configuration_is_valid_for_real_haproxy(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    from tippingpoint.certs import make_certificate

    bundle = make_certificate(tmp_path / "tls")[2]
    text = render(
        ProxyConfig(
            servers={"mqtt": ((HOST, 1883), (HOST, 1884))},
            frontends=(Frontend("mqtt", (HOST, 18883)), Frontend("mqtts", (HOST, 18884))),
            cert_bundle=bundle,
            mqtt=MQTTRouting(timeout_s=90),
        )
    )
    assert "tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }" in text
    assert "stick on req.payload(0,0),mqtt_field_value(connect,client_identifier)" in text
    assert "timeout client 90000ms" in text and "timeout server 90000ms" in text
    path = tmp_path / "haproxy.cfg"
    path.write_text(text.replace("haproxy.sock", str(tmp_path / "h.sock")))
    result = subprocess.run([find_haproxy(), "-c", "-f", str(path)], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("tls", [False, True])
def test_sessions_held_through_the_proxy(serve: Any, mqtt_proxy: Any, tls: bool) -> None:
    port = free_ports(1)[0]
    server = serve("--mqtt", str(port), processes=2)
    proxy = mqtt_proxy(f"{HOST}:{port}", "--no-checks")
    url = f"mqtts://{HOST}:{proxy.tls_port}" if tls else f"mqtt://{HOST}:{proxy.port}"
    result = run_tp(
        "hold", url, "--connections", "300", "--connect-rate", "300", "--duration", "4s",
        "--keepalive", "1s", "--cacert", proxy.cacert, "--mqtt-version", "5",
        timeout=120,
    )  # fmt: skip
    summary = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "peak established 300 of 300" in summary and "lost 0; failures none" in summary
    assert re.search(r"pings [\d,]+, PINGRESP latency", summary)
    if tls:
        assert re.search(r"TLS handshake p50 [\d.]+ ms", summary)
    assert server.metrics()["tippingpoint_serve_mqtt_connects_total"] == 300


def test_an_invalid_first_packet_is_rejected_by_the_proxy(serve: Any, mqtt_proxy: Any) -> None:
    port = free_ports(1)[0]
    server = serve("--mqtt", str(port))
    proxy = mqtt_proxy(f"{HOST}:{port}", "--no-checks")
    sock = socket.create_connection((HOST, proxy.port), timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert recv_until_closed(sock) == b""
    assert server.metrics()["tippingpoint_serve_connections_accepted_total"] == 0
    sock = socket.create_connection((HOST, proxy.port), timeout=5)
    sock.sendall(m.encode_connect(m.Connect("valid", 4)))
    packets = m.Reader(4).feed(sock.recv(64))
    assert isinstance(packets[0], m.Connack) and packets[0].reason == 0
    sock.close()


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[BrokerFleet]:
    try:
        find_mosquitto()
    except BrokerError:
        pytest.skip("mosquitto is not installed")
    fleet = BrokerFleet(BrokerConfig(port=free_ports(2)[0], instances=2), tmp_path / "brokers")
    fleet.start()
    yield fleet
    fleet.stop()


def _connected(port: int) -> int:
    got: list[int] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"count-{port}")
    client.on_message = lambda c, u, msg: got.append(int(msg.payload))
    client.connect(HOST, port)
    client.subscribe("$SYS/broker/clients/connected")
    client.loop_start()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    return got[-1] if got else -1  # this reader may be counted or not yet


def test_publisher_and_subscribers_meet_on_one_broker_of_two(
    two_brokers: BrokerFleet, mqtt_proxy: Any, tmp_path: Path
) -> None:
    ports = two_brokers.config.ports()
    backends = f"{HOST}:{ports[0]}-{ports[1]}"
    # By user name: every session of the run lands on the same broker, so each message
    # reaches its subscriber.
    by_user = mqtt_proxy(backends, "--mqtt-balance", "username")
    out = tmp_path / "d.jsonl"
    result = run_tp(
        "attack", f"mqtt://{HOST}:{by_user.port}/devices/%i/data",
        "--rate", "500", "--duration", "2s", "--qos", "1", "--until", "delivery",
        "--subscribers", "4", "--connections", "20", "--processes", "1",
        "--username", "fleet-7", "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    report = run_tp("report", str(out)).stdout.decode()
    assert "200:1000" in report, report
    # By client id (the default): sessions spread over both brokers (round robin for a
    # client id seen first), each then staying on its own: held sessions show on both.
    by_client = mqtt_proxy(backends)
    hold = subprocess.Popen(
        tippingpoint_cmd(
            "hold", f"mqtt://{HOST}:{by_client.port}", "--connections", "60",
            "--connect-rate", "200", "--duration", "6s",
        ),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(3)
    counts = [_connected(port) for port in ports]
    hold.communicate(timeout=60)
    assert 60 <= sum(counts) <= 62 and min(counts) > 5, counts
