"""Per-process measurements, folded into one record per interval.

The hot path appends raw ``monotonic_ns`` differences to arrays and bumps a list of
status counters; :meth:`Recorder.flush` turns them into HDR histograms (microseconds)
once per interval and returns an :class:`~tippingpoint.stream.Interval` record.

A response has three times: latency (from the intended send), service (from the
write) and time to first byte. Most responses arrive in one read, so their first
byte is their last (ttfb = service), and a request sent the moment it was due (a
closed-model request on an open connection) has latency = service. Such values are
appended once to ``same3`` (all three equal) or ``same2`` (service = ttfb, latency
apart) and counted into every histogram they stand for when absorbed: one or two
appends per response instead of three.
"""

from __future__ import annotations

import os
from array import array
from time import process_time_ns
from typing import Any

import numpy as np

from tippingpoint.hdr import Histogram
from tippingpoint.monitor import read_cpu_ticks
from tippingpoint.stream import METRICS, ErrorCount, Interval

__all__ = ["METRICS", "CpuMeter", "Recorder"]


class CpuMeter:
    """This process's CPU time, and the whole load of the CPUs it may run on, since the
    last reading: what an interval or a hold record says of its generator."""

    __slots__ = ("cpu_ns", "cpus", "ticks")

    def __init__(self) -> None:
        self.cpu_ns = process_time_ns()
        self.cpus = sorted(os.sched_getaffinity(0))
        self.ticks = read_cpu_ticks(self.cpus)

    def take(self) -> tuple[int, float]:
        """CPU µs this process used, and the share of its CPUs busy (-1: no ticks
        passed), since the last call."""
        cpu_ns = process_time_ns()
        cpu_us = (cpu_ns - self.cpu_ns) // 1000
        self.cpu_ns = cpu_ns
        busy, total = read_cpu_ticks(self.cpus)
        was_busy, was_total = self.ticks
        self.ticks = (busy, total)
        if total <= was_total:
            return cpu_us, -1
        return cpu_us, round((busy - was_busy) / (total - was_total), 3)


class Recorder:
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "closed",
        "codes",
        "connect",
        "cpu",
        "done",
        "errors",
        "first_send_ns",
        "hists",
        "last_done_ns",
        "last_send_ns",
        "latency",
        "lateness",
        "missed",
        "opened",
        "process",
        "same2",
        "same3",
        "queued",
        "sent",
        "service",
        "start_ns",
        "tls_resumed",
        "ttfb",
    )

    def __init__(self, process: int, start_ns: int) -> None:
        self.process = process
        self.start_ns = start_ns
        self.latency = array("q")
        self.service = array("q")
        self.ttfb = array("q")
        self.connect = array("q")
        self.lateness = array("q")
        self.same2 = array("q")
        self.same3 = array("q")
        self.codes = [0] * 1000  # by status; 0 counts requests that got no response
        self.hists = {name: Histogram() for name in METRICS}
        self.errors: dict[str, list[Any]] = {}
        self.sent = 0
        self.done = 0
        self.queued = 0
        self.missed = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.opened = 0
        self.closed = 0
        self.tls_resumed = 0
        self.first_send_ns = -1
        self.last_send_ns = -1
        self.last_done_ns = -1
        self.cpu = CpuMeter()

    def error(self, kind: str, message: str, count: int = 1) -> None:
        entry = self.errors.get(kind)
        if entry is None:
            self.errors[kind] = [count, message[:300]]
        else:
            entry[0] += count

    def absorb(self) -> None:
        """Move the values gathered so far into the interval's histograms.

        Called every few tens of milliseconds so that the work is spread out instead
        of stalling the loop once a second."""
        hists = self.hists
        for name in METRICS:
            values: array[int] = getattr(self, name)
            if values:
                hists[name].record_many(np.frombuffer(values, dtype=np.int64) // 1000)
                setattr(self, name, array("q"))
        if self.same3:
            us = np.frombuffer(self.same3, dtype=np.int64) // 1000
            for name in ("latency", "service", "ttfb"):
                hists[name].record_many(us)
            self.same3 = array("q")
        if self.same2:
            us = np.frombuffer(self.same2, dtype=np.int64) // 1000
            hists["service"].record_many(us)
            hists["ttfb"].record_many(us)
            self.same2 = array("q")

    def flush(
        self, t: float, duration: float, open_conns: int, in_flight: int, encode: bool = True
    ) -> Interval:
        """The record for the interval starting ``t`` seconds into the attack; resets.

        With ``encode=False`` the record's ``hist`` still holds the histograms: encoding
        the five takes a few milliseconds at high rates, which :meth:`encode_next` lets a
        caller spread over several turns of its event loop."""
        self.absorb()
        hists: dict[str, Any] = (
            {name: h.encode() for name, h in self.hists.items()} if encode else dict(self.hists)
        )
        lat_sum = self.hists["latency"].total_sum
        self.hists = {name: Histogram() for name in METRICS}
        cpu_us, cpus_busy = self.cpu.take()
        record = Interval(
            process=self.process,
            t=round(t, 6),
            dur=round(duration, 6),
            sent=self.sent,
            done=self.done,
            queued=self.queued,
            missed=self.missed,
            codes={k: v for k, v in enumerate(self.codes) if v},
            errors={k: ErrorCount(v[0], v[1]) for k, v in self.errors.items()},
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            opened=self.opened,
            closed=self.closed,
            open=open_conns,
            tls_resumed=self.tls_resumed,
            in_flight=in_flight,
            cpu_us=cpu_us,
            cpus_busy=cpus_busy,
            latency_sum_us=lat_sum,
            first_send=self._us(self.first_send_ns),
            last_send=self._us(self.last_send_ns),
            last_done=self._us(self.last_done_ns),
            hist=hists,
        )
        self.codes = [0] * 1000
        self.errors = {}
        self.sent = self.done = self.queued = self.missed = 0
        self.bytes_in = self.bytes_out = self.opened = self.closed = self.tls_resumed = 0
        self.first_send_ns = self.last_send_ns = self.last_done_ns = -1
        return record

    @staticmethod
    def encode_next(record: Interval) -> bool:
        """Encode one histogram of a record flushed with ``encode=False``; True once all are."""
        hists = record.hist
        left = [name for name, h in hists.items() if isinstance(h, Histogram)]
        if left:
            hists[left[0]] = hists[left[0]].encode()
        return len(left) <= 1

    def _us(self, ns: int) -> int:
        """Microseconds since the attack's start (0 for earlier), or -1 for none."""
        return -1 if ns < 0 else max(ns - self.start_ns, 0) // 1000
