"""`attack` and `hold` on ws:// and wss://: against `serve --ws`, through HAProxy, and
against a server written with the `websockets` library (an independent peer)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tests.conftest import HOST, free_ports, run_tp
from tests.engine.test_attack import attack, records, report_json


def test_attack_ws_counts_exactly_what_the_server_answered(serve) -> None:
    server = serve("--ws")
    stream = attack(
        f"ws://{HOST}:{server.port}/", "--rate", "1000", "--duration", "3s", "--processes", "2"
    )
    report = report_json(stream)
    m = server.metrics()
    assert report["requests"] == 3000 == m["tippingpoint_serve_websocket_messages_received_total"]
    assert report["status_codes"] == {"200": 3000}
    assert m["tippingpoint_serve_websocket_pongs_total"] == 3000
    # Held connections: a few, not one per message.
    assert m["tippingpoint_serve_websocket_upgrades_total"] < 100
    assert m['tippingpoint_serve_requests_total{code="200"}'] == 0  # no HTTP request


def test_latency_covers_every_pong_of_a_delayed_answer(serve) -> None:
    server = serve("--ws")
    stream = attack(
        f"ws://{HOST}:{server.port}/", "--rate", "200", "--duration", "2s",
        "-H", "sleep: 50", "-H", "times: 2",
    )  # fmt: skip
    report = report_json(stream)
    assert report["success"] == 1.0 and report["requests"] == 400
    assert server.metrics()["tippingpoint_serve_websocket_pongs_total"] == 1200
    # Three pauses, each uniform in [0, 51] ms: a mean near 76 ms.
    assert 55 < report["latencies"]["mean"] / 1e6 < 100, report["latencies"]


def test_an_error_answer_counts_as_a_failure(serve) -> None:
    server = serve("--ws")
    stream = attack(
        f"ws://{HOST}:{server.port}/", "--rate", "50", "--duration", "1s", "-H", "sleep: x",
        status=1,
    )  # fmt: skip
    assert report_json(stream)["status_codes"] == {"400": 50}


@dataclass
class Oracle:
    port: int
    messages: int = 0
    connections: int = 0
    paths: set[str] = field(default_factory=set)


@pytest.fixture
def oracle() -> Iterator[Oracle]:
    """A WebSocket pong server written with `websockets`, on its own thread."""
    state = Oracle(free_ports(1)[0])
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    async def handler(conn: ServerConnection) -> None:
        state.connections += 1
        state.paths.add(conn.request.path if conn.request else "")
        async for _ in conn:
            state.messages += 1
            await conn.send("pong")

    async def main() -> None:
        async with serve(handler, HOST, state.port):
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield state
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def test_attack_against_an_independent_server(oracle: Oracle) -> None:
    stream = attack(
        f"ws://{HOST}:{oracle.port}/chat?room=1", "--rate", "500", "--duration", "2s",
        "--processes", "1",
    )  # fmt: skip
    report = report_json(stream)
    assert report["requests"] == 1000 == oracle.messages
    assert report["success"] == 1.0
    assert oracle.paths == {"/chat?room=1"}


def test_hold_ws_keeps_connections_with_ping_frames(oracle: Oracle) -> None:
    result = run_tp(
        "hold", f"ws://{HOST}:{oracle.port}/", "--connections", "300", "--duration", "3s",
        "--request-every", "1s",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    text = result.stderr.decode() + result.stdout.decode()
    assert "peak established 300 of 300" in text and "lost 0" in text
    assert oracle.connections == 300
    assert oracle.messages == 0  # ping frames, answered by the library itself
    pings = re.search(r"pings ([\d,]+), pong latency p50", text)
    assert pings is not None and int(pings.group(1).replace(",", "")) >= 300, text


def test_wss_through_haproxy_attack_and_hold(serve, proxy) -> None:
    server = serve("--ws", ports=2)
    px = proxy(server.ports)
    url = f"wss://{HOST}:{px.https_port}/"
    stream = attack(url, "--rate", "500", "--duration", "2s", "--insecure")
    report = report_json(stream)
    assert report["requests"] == 1000 and report["success"] == 1.0
    result = run_tp(
        "hold", url, "--connections", "500", "--duration", "3s", "--request-every", "1s",
        "--insecure",
    )  # fmt: skip
    text = result.stderr.decode() + result.stdout.decode()
    assert result.returncode == 0, text
    assert "peak established 500 of 500" in text and "lost 0" in text
    m = server.metrics()
    assert m["tippingpoint_serve_websocket_messages_received_total"] == 1000
    assert m["tippingpoint_serve_websocket_ping_frames_total"] >= 500


def test_a_server_that_refuses_the_upgrade_is_a_failure_that_says_so(serve) -> None:
    server = serve()  # no --ws: the upgrade is answered with 200
    stream = attack(f"ws://{HOST}:{server.port}/", "--rate", "20", "--duration", "1s", status=1)
    errors = [r["errors"] for r in records(stream)[1:] if r.get("errors")]
    text = str(errors)
    assert "answered the upgrade with 200, not 101" in text, text


def test_mqtt_over_websocket_attack_and_hold_against_serve(serve) -> None:
    server = serve("--ws")
    url = f"mqtt://{HOST}:{server.port}/ping/%i"
    stream = attack(
        url, "--ws", "--rate", "500", "--duration", "2s", "--until", "echo", "--qos", "1",
        "--connections", "8",
    )  # fmt: skip
    report = report_json(stream)
    assert report["requests"] == 1000 and report["success"] == 1.0
    result = run_tp(
        "hold", f"mqtt://{HOST}:{server.port}", "--ws", "--ws-path", "/ws", "--connections",
        "200", "--duration", "3s", "--keepalive", "1s",
    )  # fmt: skip
    text = result.stderr.decode() + result.stdout.decode()
    assert result.returncode == 0, text
    assert "peak established 200 of 200" in text and "lost 0" in text, text
    m = server.metrics()
    assert m["tippingpoint_serve_mqtt_publish_received_total"] == 1000
    assert m["tippingpoint_serve_websocket_upgrades_total"] == 8 + 200
    assert m["tippingpoint_serve_mqtt_pingreq_total"] >= 200


def test_mqtt_over_wss_through_haproxy_counted_by_the_server(serve, proxy) -> None:
    server = serve("--ws", ports=2)
    px = proxy(server.ports)
    stream = attack(
        f"mqtts://{HOST}:{px.https_port}/ping/%i", "--ws", "--insecure", "--rate", "400",
        "--duration", "2s", "--until", "echo", "--qos", "2", "--connections", "4",
    )  # fmt: skip
    report = report_json(stream)
    assert report["requests"] == 800 and report["status_codes"] == {"200": 800}
    assert server.metrics()["tippingpoint_serve_mqtt_publish_received_total"] == 800


def test_mqtt_over_websocket_refused_upgrade_says_so(serve) -> None:
    server = serve()  # no --ws: the upgrade is answered as HTTP
    stream = attack(
        f"mqtt://{HOST}:{server.port}/ping/%i", "--ws", "--rate", "10", "--duration", "1s",
        "--connections", "1", status=1,
    )  # fmt: skip
    text = str([r.get("errors") for r in records(stream)[1:]])
    assert "upgrade-refused" in text and "answered the upgrade with 200, not 101" in text, text
