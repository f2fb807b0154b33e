"""What a live page and ``/metrics`` show: a running command's figures, folded as they come.

A :class:`LiveFeed` is a tap (see :mod:`tippingpoint.tap`). Records, monitor samples,
finished steps, log lines and report rewrites arrive on the command's threads; the web
server's thread reads a consistent copy (:meth:`LiveFeed.state`) at most once a second.
Nothing here does I/O: the page and the metrics are drawn from the copy elsewhere.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Final

from tippingpoint.hdr import Histogram
from tippingpoint.stream import Header, HoldHeader, HoldRecord, Interval, Record

__all__ = ["Counts", "LiveFeed", "Running", "State"]

_EVENTS: Final = 300
"""Log lines kept for the page (the newest)."""
_SAMPLES: Final = 20_000
"""Monitor samples kept (5 hours and more at one a second)."""


@dataclass
class Counts:
    """One experiment's counters since it began: what ``/metrics`` exports."""

    sent: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    opened: int = 0
    closed: int = 0
    latency: Histogram = field(default_factory=Histogram)
    lateness: Histogram = field(default_factory=Histogram)
    offered: float = 0.0
    """The rate asked for now (a sweep's step, an attack's rate); 0 for a closed loop."""
    achieved: float = 0.0
    """Hits completed in the last whole second, every process."""
    open: dict[int, int] = field(default_factory=dict)
    in_flight: dict[int, int] = field(default_factory=dict)
    held: dict[int, int] = field(default_factory=dict)
    lost: dict[int, int] = field(default_factory=dict)
    hold_codes: dict[int, dict[int, int]] = field(default_factory=dict)
    """A hold's statuses per process (its records count since the hold began)."""
    hold_failed: dict[int, dict[str, int]] = field(default_factory=dict)
    """A hold's failed opens per process, by reason (counted since it began)."""
    second: float = -1.0
    second_done: int = 0
    second_dur: float = 1.0
    step: int = 0
    by_host: Counter[str] = field(default_factory=Counter)
    """Sent, per client machine (a cluster run)."""

    def copy(self) -> Counts:
        return copy.deepcopy(self)


@dataclass
class Running:
    """The experiment running now: its name and shape, its series since it began."""

    name: str
    shape: str
    description: str
    began: float
    """Epoch seconds: the series' t counts from here (a sweep's steps follow each other)."""
    left: list[str] = field(default_factory=list)
    step: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[float, list[Any]] = field(default_factory=dict)
    """t -> [latency histogram, completed, duration, completed per client machine]: the
    latency and rate over time."""
    hold: dict[float, list[int]] = field(default_factory=dict)
    """t -> [established, lost, request p99 in µs]: a hold's connections over time."""
    offset: float = 0.0
    """Where the current attack's own t starts on this experiment's axis."""
    sweep: dict[str, Any] | None = None
    """A command's sweep once it has ended: its verdict and every step."""


@dataclass
class State:
    """A consistent copy of the feed, for one update of the page and of ``/metrics``."""

    title: str
    command: str
    host: str
    version: int
    report: dict[str, Any] | None
    running: Running | None
    samples: list[dict[str, Any]]
    events: list[list[Any]]
    counts: dict[str, Counts]
    ended: str
    report_path: str


class LiveFeed:
    """Thread-safe: every method takes the lock for as long as it folds one figure."""

    def __init__(self, title: str, command: str, host: str) -> None:
        self.title = title
        self.command = command
        self.host = host
        self.started = time.time()
        self.version = 0
        self._lock = threading.Lock()
        self._report: dict[str, Any] | None = None
        self._running: Running | None = None
        self._samples: deque[dict[str, Any]] = deque(maxlen=_SAMPLES)
        self._events: deque[list[Any]] = deque(maxlen=_EVENTS)
        self._counts: dict[str, Counts] = {}
        self._ended = ""
        self._report_path = ""

    # --- the tap -------------------------------------------------------------------
    def begin(self, name: str, shape: str, description: str, left: list[str]) -> None:
        with self._lock:
            self._running = Running(name, shape, description, time.time(), list(left))
            self._counts.setdefault(name, Counts())
            self.version += 1

    def record(self, record: Record) -> None:
        with self._lock:
            running = self._running
            if running is None:
                return
            counts = self._counts[running.name]
            if isinstance(record, Header):
                running.offset = record.start - running.began
                counts.offered = record.rate or 0.0
                counts.step += 1
                counts.open.clear()
                counts.in_flight.clear()
                counts.second = -1.0
                running.step = _step(record, counts.step if running.shape != "attack" else 0)
            elif isinstance(record, HoldHeader):
                running.offset = record.start - running.began
                counts.offered = record.connect_rate
                running.step = f"opening {record.connections:,} connections"
            elif isinstance(record, Interval):
                _interval(counts, running, record)
            elif isinstance(record, HoldRecord):
                _held(counts, running, record)
            else:
                return
            self.version += 1

    def sample(self, sample: dict[str, Any]) -> None:
        with self._lock:
            self._samples.append(sample)
            self.version += 1

    def row(self, row: dict[str, Any]) -> None:
        with self._lock:
            if self._running is not None:
                self._running.rows.append(row)
            self.version += 1

    def result(self, sweep: dict[str, Any]) -> None:
        with self._lock:
            if self._running is not None:
                self._running.sweep = sweep
            self.version += 1

    def log(self, line: str) -> None:
        with self._lock:
            self._event(line)
            self.version += 1

    def report(self, data: dict[str, Any]) -> None:
        copy = {k: list(v) if isinstance(v, list) else v for k, v in data.items()}
        with self._lock:
            self._report = copy
            self.title = str(data.get("title") or self.title)
            self.version += 1

    # --- the command's end ------------------------------------------------------------
    def end(self, how: str, report_path: str = "") -> None:
        """The command ended: ``how`` says how ("finished", "interrupted", a failure)."""
        with self._lock:
            if self._ended:
                return  # the command said first how it ended
            self._ended = how or "finished"
            self._report_path = report_path
            if self._report is not None:
                self._running = None  # the report has its entry now
            self._event(f"the run ended: {self._ended}")
            self.version += 1

    @property
    def ended(self) -> bool:
        return bool(self._ended)

    @property
    def how(self) -> str:
        return self._ended

    def state(self) -> State:
        with self._lock:
            running = self._running
            if running is not None:
                running = _copy(running)
            return State(
                self.title, self.command, self.host, self.version, self._report, running,
                list(self._samples), [list(e) for e in self._events],
                {k: c.copy() for k, c in self._counts.items()}, self._ended,
                self._report_path,
            )  # fmt: skip

    def _event(self, line: str) -> None:
        level = "warning" if "warning" in line else "error" if "error" in line else "info"
        self._events.append([round(time.time() - self.started, 1), level, line])


def _copy(r: Running) -> Running:
    """A copy to read in another thread: each second's histogram is shared (it is
    replaced, never changed, see :func:`_interval`)."""
    seconds = {t: [h, n, d, Counter(c)] for t, (h, n, d, c) in r.seconds.items()}
    hold = {t: list(v) for t, v in r.hold.items()}
    return Running(
        r.name, r.shape, r.description, r.began, list(r.left), r.step, list(r.rows),
        seconds, hold, r.offset, r.sweep,
    )  # fmt: skip


def _step(header: Header, n: int) -> str:
    step = f"step {n}: " if n else ""
    if header.closed_connections is not None:
        return f"{step}{header.closed_connections:,} connections (closed loop)"
    if header.rate:
        return f"{step}{header.rate:,.0f}/s"
    return f"step {n}" if n else "planned rates"


def _interval(counts: Counts, running: Running, record: Interval) -> None:
    counts.sent += record.sent
    counts.codes.update(record.codes)
    for reason, error in record.errors.items():
        counts.errors[reason] += error.count
    counts.opened += record.opened
    counts.closed += record.closed
    latency = record.histogram("latency")
    counts.latency.add(latency)
    counts.lateness.add(record.histogram("lateness"))
    counts.open[record.process] = record.open
    counts.in_flight[record.process] = record.in_flight
    if record.t != counts.second:
        if counts.second >= 0:
            counts.achieved = counts.second_done / max(counts.second_dur, 1e-3)
        counts.second, counts.second_done = record.t, 0
    counts.second_done += record.done
    counts.second_dur = record.dur or 1.0
    t = round(running.offset + record.t, 1)
    second = running.seconds.get(t)
    if second is None:
        second = running.seconds[t] = [latency, 0, record.dur or 1.0, Counter()]
    else:
        # A new histogram, never the one in place: the copies the page reads share
        # each second's histogram (a copy of every second, each second, would grow
        # with the run), and ``latency`` may be the record's own.
        merged = second[0].copy()
        merged.add(latency)
        second[0] = merged
    second[1] += record.done
    if record.host:  # a cluster's client machine
        second[3][record.host] += record.done
        counts.by_host[record.host] += record.sent


def _held(counts: Counts, running: Running, record: HoldRecord) -> None:
    counts.held[record.process] = record.established
    counts.lost[record.process] = record.lost
    counts.hold_codes[record.process] = dict(record.codes)
    counts.hold_failed[record.process] = {k: e.count for k, e in record.failed.items()}
    t = round(running.offset + record.t, 1)
    p99 = record.histogram("request").percentile(99) if "request" in record.hist else 0
    point = running.hold.setdefault(t, [0, 0, 0])
    point[0] += record.established
    point[1] += record.lost
    point[2] = max(point[2], p99)
