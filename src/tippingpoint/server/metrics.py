"""Prometheus text exposition of the backend's counters (pure formatting)."""

from __future__ import annotations

from collections.abc import Sequence

from tippingpoint.server.stats import STATUS_CODES

__all__ = ["render_prometheus", "retire"]

_PREFIX = "tippingpoint_serve_"

_COUNTERS = (
    ("accepted", "connections_accepted_total", "Connections accepted."),
    ("closed", "connections_closed_total", "Connections closed."),
    ("bytes_in", "received_bytes_total", "Bytes received from clients."),
    ("bytes_out", "sent_bytes_total", "Bytes sent to clients."),
    ("conn_errors", "connection_errors_total", "Connections lost with an error (reset...)."),
    ("header_timeouts", "header_timeouts_total", "Connections closed by the header-read timeout."),
    ("idle_timeouts", "idle_timeouts_total", "Keep-alive connections closed when idle too long."),
    ("accept_pauses", "accept_pauses_total", "Times a process stopped accepting at capacity."),
    ("mqtt_connects", "mqtt_connects_total", "MQTT sessions connected (CONNACK sent)."),
    ("mqtt_publish_in", "mqtt_publish_received_total", "MQTT PUBLISH packets received."),
    ("mqtt_pongs", "mqtt_pongs_total", "MQTT pong messages sent."),
    ("mqtt_pings", "mqtt_pingreq_total", "MQTT PINGREQ packets answered."),
    ("mqtt_subscribes", "mqtt_subscribe_total", "MQTT SUBSCRIBE packets answered."),
    ("mqtt_bad_pings", "mqtt_bad_ping_total", "MQTT pings with unusable sleep/times values."),
    (
        "mqtt_protocol_errors",
        "mqtt_protocol_errors_total",
        "MQTT sessions closed for a malformed or unexpected packet.",
    ),
    (
        "mqtt_keepalive_timeouts",
        "mqtt_keepalive_timeouts_total",
        "MQTT sessions closed after 1.5x their keepalive without a packet.",
    ),
    ("ws_upgrades", "websocket_upgrades_total", "WebSocket upgrades taken (101 sent)."),
    ("ws_messages_in", "websocket_messages_received_total", "WebSocket messages received."),
    ("ws_pongs", "websocket_pongs_total", "WebSocket pong messages sent."),
    ("ws_pings", "websocket_ping_frames_total", "WebSocket ping frames answered."),
    (
        "ws_protocol_errors",
        "websocket_protocol_errors_total",
        "WebSocket connections failed for a frame RFC 6455 forbids (1002, 1007, 1009).",
    ),
)


_GAUGES = ("accept_paused", "capacity", "pid", "alive")


def retire(row: dict[str, int]) -> dict[str, int]:
    """What a dead worker's counters leave to the totals: its counts, with every
    connection it had open counted as closed, and none of its gauges."""
    kept = {k: v for k, v in row.items() if k not in _GAUGES}
    kept["closed"] = kept["accepted"]
    return kept


def render_prometheus(
    rows: Sequence[dict[str, int]], retired: dict[str, int] | None = None, restarts: int = 0
) -> str:
    """Metrics for the whole server from the per-process counter rows, plus what the
    workers that died left behind (``retired``), so that counters never go back."""
    rows = [*rows, retired] if retired else list(rows)
    per_process = rows[: len(rows) - 1] if retired else rows
    out: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP {_PREFIX}{name} {text}")
        out.append(f"# TYPE {_PREFIX}{name} {kind}")

    live = [r for r in rows if r.get("alive")]
    family("requests_total", "counter", "Requests answered, by status code.")
    for code in STATUS_CODES:
        total = sum(r[f"req_{code}"] for r in rows)
        out.append(f'{_PREFIX}requests_total{{code="{code}"}} {total}')
    family("requests_rejected_total", "counter", "Requests answered with a 4xx or 5xx status.")
    rejected = sum(r[f"req_{code}"] for r in rows for code in STATUS_CODES if code >= 400)
    out.append(f"{_PREFIX}requests_rejected_total {rejected}")
    for field, name, text in _COUNTERS:
        family(name, "counter", text)
        out.append(f"{_PREFIX}{name} {sum(r[field] for r in rows)}")
    family("connections_active", "gauge", "Connections open now.")
    out.append(f"{_PREFIX}connections_active {sum(r['accepted'] - r['closed'] for r in rows)}")
    family("connection_capacity", "gauge", "Connections the live processes can hold (fd limits).")
    out.append(f"{_PREFIX}connection_capacity {sum(r['capacity'] for r in live)}")
    family("processes", "gauge", "Worker processes alive.")
    out.append(f"{_PREFIX}processes {len(live)}")
    family("worker_restarts_total", "counter", "Workers that died and were started again.")
    out.append(f"{_PREFIX}worker_restarts_total {restarts}")
    rows = per_process
    labels = [f'{{process="{i}",pid="{r["pid"]}"}}' for i, r in enumerate(rows)]
    family("process_accepting", "gauge", "1 when a worker accepts connections, 0 when not.")
    for label, r in zip(labels, rows, strict=True):
        accepting = 1 if r["alive"] and not r["accept_paused"] else 0
        out.append(f"{_PREFIX}process_accepting{label} {accepting}")
    family("process_connections_active", "gauge", "Connections open now, per worker process.")
    for label, r in zip(labels, rows, strict=True):
        out.append(f"{_PREFIX}process_connections_active{label} {r['accepted'] - r['closed']}")
    family("process_requests_total", "counter", "Requests answered, per worker process.")
    for label, r in zip(labels, rows, strict=True):
        requests = sum(r[f"req_{code}"] for code in STATUS_CODES)
        out.append(f"{_PREFIX}process_requests_total{label} {requests}")
    return "\n".join(out) + "\n"
