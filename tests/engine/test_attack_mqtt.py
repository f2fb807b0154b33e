"""`tippingpoint attack mqtt://`: publishing at a constant rate, latency to the ack, the
backend's echo or delivery through mosquitto, checked against the servers' own counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HOST, free_ports, run_tp, tippingpoint_cmd
from tippingpoint.broker import BrokerFleet
from tippingpoint.hdr import Histogram
from tippingpoint.report.merge import Summary, read_records, summarize

paho = pytest.importorskip("paho.mqtt.client")


def _summary(path: Path) -> Summary:
    with path.open() as f:
        return summarize(read_records([(str(path), f)]))


def _attack(url: str, out: Path, *args: str, timeout: float = 120, status: int = 0) -> Summary:
    """The attack's summary; ``status`` 1: not one message is to succeed."""
    result = run_tp("attack", url, "-o", str(out), *args, timeout=timeout)
    assert result.returncode == status, result.stderr.decode()
    return _summary(out)


def _mqtt_serve(serve: Any) -> tuple[Any, int]:
    port = free_ports(1)[0]
    return serve("--mqtt", str(port)), port


@pytest.mark.parametrize("version", ["3.1.1", "5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_until_ack_at_each_qos(serve: Any, tmp_path: Path, qos: int, version: str) -> None:
    server, port = _mqtt_serve(serve)
    s = _attack(
        f"mqtt://{HOST}:{port}/sensors/%i",
        tmp_path / "a.jsonl",
        *("--rate", "1000", "--duration", "2s", "--qos", str(qos), "--connections", "10"),
        *("--mqtt-version", version, "--processes", "1"),
    )
    assert s.done == 2000 and s.codes == {200: 2000}, s.errors
    assert server.metrics()["tippingpoint_serve_mqtt_publish_received_total"] == 2000


def test_echo_latency_includes_the_backend_sleep(serve: Any, tmp_path: Path) -> None:
    _, port = _mqtt_serve(serve)
    s = _attack(
        f"mqtt://{HOST}:{port}/ping/%i/sleep=40",
        tmp_path / "e.jsonl",
        *("--rate", "200", "--duration", "2s", "--qos", "1", "--until", "echo"),
        *("--connections", "10", "--processes", "1"),
    )
    assert s.codes == {200: 400}
    latency = s.hists["latency"]
    assert 10_000 <= latency.percentile(50) <= 35_000  # uniform in [0, 41] ms
    assert latency.max <= 41_000 + 20_000


def test_closed_loop_qos1(serve: Any, tmp_path: Path) -> None:
    _, port = _mqtt_serve(serve)
    s = _attack(
        f"mqtt://{HOST}:{port}/t/%i",
        tmp_path / "c.jsonl",
        *("--rate", "0", "--requests", "5000", "--qos", "1", "--connections", "50"),
        "--processes",
        "1",
    )
    assert s.codes == {200: 5000}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--until", "delivery"), "--subscribers N"),
        (("--until", "echo"), "ping/"),
        (("--until", "delivery", "--subscribers", "2", "--rate", "0"), "needs a --rate"),
        (("--qos", "3"), "0<=x<=2"),
        (("--payload-size", "4", "--until", "echo"), "--payload-size must be >= 16"),
    ],
)
def test_bad_mqtt_options_are_one_line_errors(args: tuple[str, ...], words: str) -> None:
    result = subprocess.run(
        tippingpoint_cmd("attack", f"mqtt://{HOST}:1/t/%i", "--duration", "1s", *args),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert words in result.stderr, result.stderr


def _sys_counters(port: int) -> dict[str, int]:
    """mosquitto's $SYS publish counters (it updates them every second)."""
    got: dict[str, int] = {}
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sys-{os.getpid()}")
    lock = threading.Lock()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        with lock:
            got[msg.topic.rsplit("/", 1)[-1]] = int(msg.payload)

    client.on_message = on_message
    client.connect(HOST, port)
    client.subscribe("$SYS/broker/publish/messages/+")
    client.loop_start()
    time.sleep(2.2)  # a fresh update after everything before arrived
    client.disconnect()
    client.loop_stop()
    return got


def test_delivery_counts_exactly_what_was_published(mosquitto: BrokerFleet, tmp_path: Path) -> None:
    port = mosquitto.config.port
    out = tmp_path / "d.jsonl"
    s = _attack(
        f"mqtt://{HOST}:{port}/devices/%i/data",
        out,
        *("--rate", "2000", "--duration", "5s", "--qos", "1", "--until", "delivery"),
        *("--subscribers", "4", "--connections", "20", "--processes", "2"),
    )
    assert s.sent == 10_000
    assert s.codes == {200: 10_000}, s.errors
    assert not s.errors  # nothing lost, duplicated or out of order
    counters = _sys_counters(port)
    assert counters["received"] == 10_000  # PUBLISH packets the broker took in
    # ... and sent on: the 10,000 to our subscribers, and its own $SYS updates to the reader.
    assert 10_000 <= counters["sent"] <= 10_000 + 40


def test_a_broker_stall_shows_in_delivery_latency_as_it_happened(
    mosquitto: BrokerFleet, tmp_path: Path
) -> None:
    port = mosquitto.config.port
    out = tmp_path / "stall.jsonl"
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "attack",
            f"mqtt://{HOST}:{port}/devices/%i/data",
            *("--rate", "1000", "--duration", "5s", "--qos", "1", "--until", "delivery"),
            *("--subscribers", "2", "--connections", "10", "--processes", "1", "-o", str(out)),
        ),
        stderr=subprocess.PIPE,
    )
    pid = mosquitto.pids[0]
    time.sleep(0.6 + 2.0)  # the start delay, then 2 s into the run
    os.kill(pid, signal.SIGSTOP)
    time.sleep(1.0)
    os.kill(pid, signal.SIGCONT)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    s = _summary(out)
    assert s.codes == {200: 5000}, s.errors  # QoS 1: everything arrives, late
    latency = s.hists["latency"]
    assert latency.max >= 900_000  # the first message of the stall waited it out
    assert latency.percentile(99) >= 300_000  # ~10 % of the run was inside the stall
    assert latency.percentile(50) < 50_000
    # Per second: the seconds the stall touched have a p99 near its length, the others not.
    p99 = {}
    for line in out.read_text().splitlines():
        r = json.loads(line)
        if r["type"] == "interval" and not r.get("final") and r["hist"].get("latency"):
            p99[r["t"]] = Histogram.decode(r["hist"]["latency"]).percentile(99)
    stalled = sorted(t for t, v in p99.items() if v >= 300_000)
    assert 1 <= len(stalled) <= 2 and 1.0 <= stalled[0] <= 3.0, p99
    assert all(v < 100_000 for t, v in p99.items() if t not in stalled), p99


def test_mqtts_publish_to_mosquitto(mosquitto: BrokerFleet, tmp_path: Path) -> None:
    tls_port = mosquitto.config.tls_ports()[0]
    s = _attack(
        f"mqtts://{HOST}:{tls_port}/t/%i",
        tmp_path / "t.jsonl",
        *("--rate", "500", "--duration", "2s", "--qos", "1", "--connections", "10"),
        *("--processes", "1", "--cacert", str(mosquitto.cert), "--mqtt-version", "5"),
    )
    assert s.codes == {200: 1000}


def test_the_broker_receive_maximum_bounds_the_window(mosquitto: BrokerFleet) -> None:
    import asyncio
    import socket

    from tippingpoint.engine.client import Pool
    from tippingpoint.engine.mqtt import open_session
    from tippingpoint.targets import Origin
    from tippingpoint.wire import mqtt as m

    class Owner:
        def __getattr__(self, name: str) -> Any:
            return lambda *args: None

    async def quota(version: int) -> int:
        loop = asyncio.get_running_loop()
        pool = Pool(Origin("mqtt", HOST, mosquitto.config.port), None, None)
        sock = socket.create_connection((HOST, mosquitto.config.port))
        sock.setblocking(False)
        connect = m.encode_connect(m.Connect(f"quota-{version}", version))
        session, _, _ = await open_session(loop, Owner(), pool, sock, version, connect)
        session.close()
        return session.send_quota

    # mosquitto's max_inflight_messages (20) is its MQTT 5 receive maximum; 3.1.1 has none.
    assert asyncio.run(quota(5)) == 20
    assert asyncio.run(quota(4)) == 65535


def test_retained_messages_stay_with_the_broker(mosquitto: BrokerFleet, tmp_path: Path) -> None:
    port = mosquitto.config.port
    _attack(
        f"mqtt://{HOST}:{port}/retained/%i",
        tmp_path / "r.jsonl",
        *("--rate", "20", "--duration", "1s", "--qos", "1", "--retain"),
        *("--connections", "3", "--processes", "1"),
    )
    got: dict[str, bool] = {}
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="late-reader")
    client.on_message = lambda c, u, msg: got.__setitem__(msg.topic, msg.retain)
    client.connect(HOST, port)
    client.subscribe("retained/#", 1)
    client.loop_start()
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    assert got == {f"retained/{i}": True for i in range(3)}


def test_sweep_reads_mqtt_steps(serve: Any, tmp_path: Path) -> None:
    _, port = _mqtt_serve(serve)
    result = run_tp(
        "sweep", f"mqtt://{HOST}:{port}/ping/%i", "--until", "echo", "--qos", "1",
        "--start", "500", "--step", "x2", "--max-steps", "2", "--step-duration", "2s",
        "--max-connections", "20", "--json", "--processes", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    steps = json.loads(result.stdout)["steps"]
    assert [round(s["offered"]) for s in steps] == [500, 1000]
    assert all(s["success"] == 1.0 and s["achieved"] > 0.95 * s["offered"] for s in steps)
    assert all(s["tcp_established"] >= 40 for s in steps)  # 20 sessions, both ends


def test_no_broker_fails_each_message_at_once_with_the_reason(tmp_path: Path) -> None:
    port = free_ports(1)[0]  # nothing listens there
    start = time.monotonic()
    s = _attack(
        f"mqtt://{HOST}:{port}/t/%i",
        tmp_path / "down.jsonl",
        *("--rate", "100", "--duration", "2s", "--connections", "5", "--processes", "1"),
        status=1,
    )
    assert time.monotonic() - start < 15  # not --timeout (30 s) per waiting message
    assert s.codes == {0: 200}
    assert s.errors["refused"][0] == 200 and "no session" in s.errors["refused"][1]
    assert s.errors["session-refused"][0] == 5
