"""Per-process measurements, folded into one record per interval.

The hot path appends integers to arrays (microseconds); :meth:`Recorder.flush`
turns them into HDR histograms once per interval and returns a plain dict, one line
of the result stream.
"""

from __future__ import annotations

from array import array
from typing import Any

from tippingpoint.stats import Histogram

__all__ = ["METRICS", "Recorder"]

METRICS = ("latency", "service", "ttfb", "connect", "lateness")
"""Histograms in each interval record (microseconds):

latency: intended send time -> last byte (coordinated-omission free);
service: actual write -> last byte; ttfb: actual write -> first byte;
connect: TCP (and TLS) connection set-up; lateness: how late each send left.
"""


class Recorder:
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "closed",
        "codes",
        "connect",
        "done",
        "errors",
        "first_send",
        "last_done",
        "last_send",
        "latency",
        "lateness",
        "opened",
        "process",
        "queued",
        "sent",
        "service",
        "ttfb",
    )

    def __init__(self, process: int) -> None:
        self.process = process
        self.latency = array("q")
        self.service = array("q")
        self.ttfb = array("q")
        self.connect = array("q")
        self.lateness = array("q")
        self.codes: dict[int, int] = {}
        self.errors: dict[str, list[Any]] = {}
        self.sent = 0
        self.done = 0
        self.queued = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.opened = 0
        self.closed = 0
        self.first_send = -1
        self.last_send = -1
        self.last_done = -1

    def error(self, kind: str, message: str) -> None:
        entry = self.errors.get(kind)
        if entry is None:
            self.errors[kind] = [1, message[:300]]
        else:
            entry[0] += 1

    def flush(self, t: float, duration: float, open_conns: int, in_flight: int) -> dict[str, Any]:
        """The record for the interval starting ``t`` seconds into the attack; resets."""
        hists = {}
        lat_sum = 0
        for name in METRICS:
            values: array[int] = getattr(self, name)
            h = Histogram()
            h.record_many(values)
            if name == "latency":
                lat_sum = h.total_sum
            hists[name] = h.encode()
            setattr(self, name, array("q"))
        record: dict[str, Any] = {
            "type": "interval",
            "process": self.process,
            "t": round(t, 6),
            "dur": round(duration, 6),
            "sent": self.sent,
            "done": self.done,
            "queued": self.queued,
            "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "errors": {k: {"count": v[0], "sample": v[1]} for k, v in self.errors.items()},
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "conns": {"opened": self.opened, "closed": self.closed, "open": open_conns},
            "in_flight": in_flight,
            "latency_sum_us": lat_sum,
            "first_send": self.first_send,
            "last_send": self.last_send,
            "last_done": self.last_done,
            "hist": hists,
        }
        self.codes = {}
        self.errors = {}
        self.sent = self.done = self.queued = 0
        self.bytes_in = self.bytes_out = self.opened = self.closed = 0
        self.first_send = self.last_send = self.last_done = -1
        return record
