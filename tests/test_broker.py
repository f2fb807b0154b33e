"""`tippingpoint broker`: real mosquitto, started, checked and stopped by the tool."""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import HOST, free_ports, tippingpoint_cmd
from tippingpoint.broker import BrokerConfig, BrokerError, BrokerFleet, find_mosquitto

paho = pytest.importorskip("paho.mqtt.client")

try:
    find_mosquitto()
except BrokerError:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)


def roundtrip(port: int, cacert: Path | None = None) -> bytes:
    """Subscribe, publish at QoS 1, and return what came back through the broker."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"t{port}")
    got: list[bytes] = []
    ready = threading.Event()
    client.on_message = lambda c, u, msg: got.append(msg.payload)
    client.on_subscribe = lambda *a: ready.set()
    if cacert is not None:
        client.tls_set(ca_certs=str(cacert), cert_reqs=ssl.CERT_REQUIRED)
    client.connect(HOST, port, keepalive=10)
    client.loop_start()
    try:
        client.subscribe("t/#", 1)
        assert ready.wait(5)
        client.publish("t/1", b"through the broker", 1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else b""


def test_instances_with_tls_route_messages_and_stop_cleanly(tmp_path: Path) -> None:
    ports = free_ports(4)
    config = BrokerConfig(port=ports[0], tls_port=ports[2], instances=2)
    fleet = BrokerFleet(config, tmp_path)
    fleet.start()
    pids = fleet.pids
    try:
        assert len(pids) == 2
        for port in ports[:2]:
            assert roundtrip(port) == b"through the broker"
        assert fleet.cert is not None
        assert roundtrip(ports[2], fleet.cert) == b"through the broker"
        conf = (tmp_path / "mosquitto-1.conf").read_text()
        assert f"listener {ports[1]} 127.0.0.1" in conf and "persistence false" in conf
    finally:
        fleet.stop()
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_more_sessions_than_one_process_can_hold_is_said_up_front(tmp_path: Path) -> None:
    fleet = BrokerFleet(BrokerConfig(port=free_ports(1)[0], max_connections=50_000), tmp_path)
    with pytest.raises(BrokerError, match=r"one process.*--instances 3"):
        fleet.start()
    assert fleet.pids == []


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        tippingpoint_cmd("broker", "--mosquitto-bin", "/nonexistent/mosquitto"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "apt-get install mosquitto" in result.stderr
    busy = free_ports(1)[0]
    import socket

    with socket.create_server((HOST, busy)):
        result = subprocess.run(
            tippingpoint_cmd("broker", "--port", str(busy), "--dir", str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2 and f"port {busy} is taken" in result.stderr


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        tippingpoint_cmd("broker", "--port", str(port), "--dir", str(tmp_path)),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "mosquitto pids" in line, line
        assert roundtrip(port) == b"through the broker"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
