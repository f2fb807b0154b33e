"""Counters of the backend server: per-process plain ints, published to shared memory.

Each worker process counts in a :class:`WorkerStats` (plain attribute increments on
the hot path, no locks) and copies its counters into its own row of a
:class:`SharedStats` block every quarter second. The supervisor process sums the
rows for the Prometheus endpoint and statsd. The block is an anonymous shared
mapping created before the workers are forked.
"""

from __future__ import annotations

import array
import mmap
from typing import Final

__all__ = ["FIELDS", "STATUS_CODES", "SharedStats", "WorkerStats"]

STATUS_CODES: Final = (200, 400, 408, 413, 431, 501, 505)
"""The statuses the server can answer with, in the order of the ``req_*`` fields."""

FIELDS: Final = (
    *(f"req_{code}" for code in STATUS_CODES),
    "accepted",
    "closed",
    "bytes_in",
    "bytes_out",
    "conn_errors",
    "header_timeouts",
    "idle_timeouts",
    "accept_paused",
    "accept_pauses",
    "mqtt_connects",
    "mqtt_publish_in",
    "mqtt_pongs",
    "mqtt_pings",
    "mqtt_subscribes",
    "mqtt_bad_pings",
    "mqtt_protocol_errors",
    "mqtt_keepalive_timeouts",
    "ws_upgrades",
    "ws_messages_in",
    "ws_pongs",
    "ws_pings",
    "ws_protocol_errors",
    "capacity",
    "pid",
    "alive",
)
_INDEX: Final = {name: i for i, name in enumerate(FIELDS)}


class WorkerStats:
    """One process's counters. Attribute names match :data:`FIELDS`."""

    __slots__ = FIELDS

    req_200: int
    req_400: int
    req_408: int
    req_413: int
    req_431: int
    req_501: int
    req_505: int
    accepted: int
    closed: int
    bytes_in: int
    bytes_out: int
    conn_errors: int
    header_timeouts: int
    idle_timeouts: int
    accept_paused: int
    accept_pauses: int
    mqtt_connects: int
    mqtt_publish_in: int
    mqtt_pongs: int
    mqtt_pings: int
    mqtt_subscribes: int
    mqtt_bad_pings: int
    mqtt_protocol_errors: int
    mqtt_keepalive_timeouts: int
    ws_upgrades: int
    ws_messages_in: int
    ws_pongs: int
    ws_pings: int
    ws_protocol_errors: int
    capacity: int
    pid: int
    alive: int

    def __init__(self) -> None:
        for name in FIELDS:
            setattr(self, name, 0)

    def count_status(self, status: int) -> None:
        name = f"req_{status}"
        setattr(self, name, getattr(self, name) + 1)

    def values(self) -> list[int]:
        return [getattr(self, name) for name in FIELDS]


class SharedStats:
    """A table of ``rows`` x ``len(FIELDS)`` unsigned 64-bit counters in shared memory."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._map = mmap.mmap(-1, max(1, rows * len(FIELDS) * 8))
        self._table = memoryview(self._map).cast("Q")

    def publish(self, row: int, stats: WorkerStats) -> None:
        base = row * len(FIELDS)
        self._table[base : base + len(FIELDS)] = array.array("Q", stats.values())

    def row(self, row: int) -> dict[str, int]:
        base = row * len(FIELDS)
        return dict(zip(FIELDS, self._table[base : base + len(FIELDS)].tolist(), strict=True))

    def mark_dead(self, row: int) -> None:
        self._table[row * len(FIELDS) + _INDEX["alive"]] = 0

    def clear(self, row: int) -> None:
        """Zero a row, for the worker that replaces a dead one."""
        base = row * len(FIELDS)
        self._table[base : base + len(FIELDS)] = array.array("Q", [0] * len(FIELDS))

    def requests(self) -> int:
        """Requests answered by all processes, whatever the status."""
        return sum(self.total(f"req_{code}") for code in STATUS_CODES)

    def total(self, name: str) -> int:
        i = _INDEX[name]
        step = len(FIELDS)
        return sum(self._table[i + r * step] for r in range(self.rows))
