"""`tippingpoint watch` and the /proc parsers."""

from __future__ import annotations

import json
import socket
import subprocess
import time

from tests.conftest import HOST, run_tp, tippingpoint_cmd
from tippingpoint.monitor import Monitor, read_dev, read_meminfo, read_snmp, read_sockstat

SNMP = (
    "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets"
    " CurrEstab InSegs OutSegs\nTcp: 1 200 120000 -1 10 20 0 0 7 1000 2000\n"
)


def test_parsers() -> None:
    assert read_snmp(SNMP)["CurrEstab"] == 7 and read_snmp(SNMP)["OutSegs"] == 2000
    sock = read_sockstat("sockets: used 42\nTCP: inuse 5 orphan 1 tw 3 alloc 6 mem 9\n")
    assert sock == {
        "sockets_used": 42,
        "tcp_inuse": 5,
        "tcp_orphan": 1,
        "tcp_tw": 3,
        "tcp_alloc": 6,
        "tcp_mem": 9,
    }
    dev = read_dev("h1\nh2\n    lo: 100 2 0 0 0 0 0 0 300 4 0 0 0 0 0 0\n")
    assert dev == {"lo": (100, 2, 300, 4)}
    assert read_meminfo("MemTotal: 100 kB\nSlab: 5 kB\n") == {"MemTotal": 100, "Slab": 5}


def test_established_connections_and_cpu_are_seen(serve) -> None:
    server = serve()
    monitor = Monitor({"backend": server.worker_pids})
    first = monitor.sample()
    socks = [socket.create_connection((HOST, server.port)) for _ in range(50)]
    time.sleep(0.3)
    second = monitor.sample()
    # Both ends of each connection count: at least 100 more established.
    assert second["tcp_established"] >= first["tcp_established"] + 100
    assert second["roles"]["backend"]["processes"] == 1
    assert second["roles"]["backend"]["rss_kib"] > 1000
    assert second["host"] == socket.gethostname()  # which machine (monitor.jsonl too)
    for s in socks:
        s.close()


def test_a_watched_process_that_dies_is_reported(tmp_path) -> None:
    victim = subprocess.Popen(["sleep", "30"])
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "watch", "--role", f"victim={victim.pid}", "--duration", "3s", "--interval", "0.5s"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    victim.kill()
    victim.wait()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"victim pid {victim.pid} is gone".encode() in err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) >= 4
    assert any("events" in r for r in records)
    assert records[-1]["roles"]["victim"]["processes"] == 0


def test_csv_output() -> None:
    result = run_tp("watch", "--duration", "1.5s", "--format", "csv", "--interval", "0.5s")
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("t,tcp_established,tcp_inuse")
    assert len(lines) == 4


def test_cpu_ticks_are_what_idle_leaves_of_the_uptime_on_the_cpus_asked() -> None:
    from tippingpoint.monitor import read_cpu_ticks

    # The busy columns are sampled on the kernel's tick and undercount a CPU that wakes
    # for microseconds at a time; idle is exact: busy is the uptime less idle and iowait.
    stat = (
        "cpu  300 0 100 1000 10 0 90 0 0 0\n"
        "cpu0 100 0 50 500 5 0 80 0 0 0\n"
        "cpu1 200 0 50 500 5 0 10 0 0 0\n"
        "intr 12345\n"
    )
    assert read_cpu_ticks([0], stat, uptime=10.0) == (495, 1000)
    assert read_cpu_ticks([0, 1], stat, uptime=10.0) == (990, 2000)


def test_watch_sees_mosquitto_and_serve_mqtt(serve, tmp_path) -> None:
    import pytest

    from tests.conftest import free_ports
    from tippingpoint.broker import BrokerConfig, BrokerError, BrokerFleet, find_mosquitto

    try:
        find_mosquitto()
    except BrokerError:
        pytest.skip("mosquitto is not installed")
    broker_port, mqtt_port = free_ports(2)
    fleet = BrokerFleet(BrokerConfig(port=broker_port), tmp_path / "broker")
    fleet.start()
    server = serve("--mqtt", str(mqtt_port))
    try:
        holds = []
        for port, topic in ((broker_port, "w/%i"), (mqtt_port, "ping/%i")):
            command = tippingpoint_cmd(
                "attack", f"mqtt://{HOST}:{port}/{topic}", "--rate", "200",
                "--duration", "6s", "--connections", "7", "--processes", "1",
                "--qos", "1", "-o", str(tmp_path / f"{port}.jsonl"),
            )  # fmt: skip
            holds.append(subprocess.Popen(command, stderr=subprocess.DEVNULL))
        result = run_tp(
            "watch", "--mosquitto", str(broker_port), "--serve-metrics",
            str(server.metrics_port), "--duration", "5s",
        )  # fmt: skip
        for hold in holds:
            hold.wait(60)
    finally:
        fleet.stop()
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    late = records[-1]
    assert late["mosquitto"]["clients_connected"] >= 7
    assert 100 <= late["mosquitto"]["publish_received_per_s"] <= 400
    assert late["serve_mqtt"]["sessions"] >= 7
    assert 100 <= late["serve_mqtt"]["publish_received_per_s"] <= 400
    assert 100 <= late["serve_mqtt"]["pongs_per_s"] <= 400
