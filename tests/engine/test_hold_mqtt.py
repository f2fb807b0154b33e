"""`tippingpoint hold mqtt://`: MQTT sessions held against `serve --mqtt` and mosquitto."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_ports, run_tp, tippingpoint_cmd
from tippingpoint.broker import BrokerFleet


def _mqtt_serve(serve: Any, processes: int = 1) -> tuple[Any, int]:
    port = free_ports(1)[0]
    return serve("--mqtt", str(port), processes=processes), port


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_sessions_are_held_pinged_and_subscribed(serve: Any, tmp_path: Path, version: str) -> None:
    server, port = _mqtt_serve(serve, processes=2)
    out = tmp_path / "hold.jsonl"
    result = run_tp(
        "hold",
        f"mqtt://127.0.0.1:{port}",
        "--connections",
        "600",
        "--connect-rate",
        "600",
        "--duration",
        "4s",
        "--keepalive",
        "1s",
        "--subscribe",
        "devices/%i/cmd",
        "--mqtt-version",
        version,
        "--processes",
        "2",
        "-o",
        str(out),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = result.stdout.decode()
    assert "peak established 600 of 600" in summary
    assert "lost 0; failures none" in summary
    assert re.search(r"CONNACK latency \(CONNECT to CONNACK\) p50 [\d.]+ ms", summary)
    found = re.search(r"pings ([\d,]+), PINGRESP latency p50", summary)
    assert found is not None
    pings = int(found[1].replace(",", ""))
    assert pings >= 600 * 2  # each session pinged about once a second for ~3 s
    # 600 small sessions may not grow the RSS by a page; when they do, per session.
    assert re.search(r"client RSS grew [\d.]+ MiB( \([\d,]+ B per session\))?\n", summary)
    metrics = server.metrics()
    assert metrics["tippingpoint_serve_mqtt_connects_total"] == 600
    assert metrics["tippingpoint_serve_mqtt_subscribe_total"] == 600
    # Every PINGRESP the client counted was a PINGREQ the server answered; pings in
    # flight when the hold ended were answered but not counted.
    assert pings <= metrics["tippingpoint_serve_mqtt_pingreq_total"] <= pings + 600
    header, *records = [json.loads(line) for line in out.read_text().splitlines()]
    assert header["type"] == "hold-start" and header["target"].startswith("mqtt://")
    assert any("connack" in r["hist"] for r in records)


def test_refused_connack_is_counted_with_its_reason(serve: Any) -> None:
    _, port = _mqtt_serve(serve)
    # 3.1.1: an empty client id needs a clean session; the backend refuses it (0x02).
    result = run_tp(
        "hold",
        f"mqtt://127.0.0.1:{port}",
        "--connections",
        "20",
        "--connect-rate",
        "100",
        "--duration",
        "1s",
        "--client-id",
        "",
        "--no-clean-start",
        timeout=60,
    )
    summary = result.stdout.decode()
    assert "peak established 0 of 20" in summary
    assert "connack-refused: 20" in summary
    assert "0x02 identifier rejected" in summary


def test_sessions_closed_by_the_server_are_lost_with_its_reason(serve: Any) -> None:
    server, port = _mqtt_serve(serve)
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "hold",
            f"mqtt://127.0.0.1:{port}",
            "--connections",
            "100",
            "--connect-rate",
            "1000",
            "--duration",
            "4s",
            "--mqtt-version",
            "5",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2)
    server.stop(signal.SIGTERM)  # the backend says "server shutting down" to each session
    stdout, stderr = proc.communicate(timeout=60)
    summary = stdout.decode()
    assert "lost 100 (0x8b server shutting down: 100)" in summary, summary + stderr.decode()


def test_tls_sessions_against_mosquitto(mosquitto: BrokerFleet) -> None:
    tls_port = mosquitto.config.tls_ports()[0]
    result = run_tp(
        "hold",
        f"mqtts://127.0.0.1:{tls_port}",
        "--connections",
        "200",
        "--connect-rate",
        "400",
        "--duration",
        "3s",
        "--keepalive",
        "1s",
        "--mqtt-version",
        "5",
        "--subscribe",
        "d/%i",
        "--qos",
        "1",
        "--cacert",
        str(mosquitto.cert),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = result.stdout.decode()
    assert "peak established 200 of 200" in summary and "failures none" in summary
    assert re.search(r"TLS handshake p50 [\d.]+ ms", summary)
    assert re.search(r"pings [\d,]+, PINGRESP latency", summary)


def test_a_wrong_ca_is_a_tls_failure(mosquitto: BrokerFleet, tmp_path: Path) -> None:
    from tippingpoint.certs import make_certificate

    other, _, _ = make_certificate(tmp_path / "other")
    result = run_tp(
        "hold",
        f"mqtts://127.0.0.1:{mosquitto.config.tls_ports()[0]}",
        "--connections",
        "5",
        "--connect-rate",
        "50",
        "--duration",
        "1s",
        "--cacert",
        str(other),
        timeout=60,
    )
    assert "tls: 5" in result.stdout.decode()


def test_failed_opens_are_tried_again_with_retries(serve: Any) -> None:
    # Devices that come back after an outage: nothing listens when the hold starts;
    # the backend comes up a moment later and every session gets in on a later try.
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "hold", f"mqtt://127.0.0.1:{port}", "--connections", "30",
            "--connect-rate", "300", "--duration", "14s", "--retries", "5",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(2.0)  # the hold's first tries are refused
    serve("--mqtt", str(port))
    stdout, stderr = proc.communicate(timeout=60)
    summary = stdout.decode()
    assert "peak established 30 of 30" in summary, summary + stderr.decode()
    found = re.search(r"failures refused: ([\d,]+) \(([\d,]+) opens tried again\)", summary)
    assert found is not None, summary
    # Every refused attempt was tried again (none ran out of tries).
    assert int(found[1]) == int(found[2]) >= 30


def test_without_retries_a_failed_open_stays_failed() -> None:
    port = free_ports(1)[0]
    result = run_tp(
        "hold", f"mqtt://127.0.0.1:{port}", "--connections", "10",
        "--connect-rate", "100", "--duration", "1s", timeout=60,
    )  # fmt: skip
    summary = result.stdout.decode()
    assert "peak established 0 of 10" in summary and "refused: 10" in summary
    assert "tried again" not in summary
