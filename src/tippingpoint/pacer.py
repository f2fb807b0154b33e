"""Load models: when each request is meant to leave. Pure, no I/O.

A plan is a list of segments, each a duration with a rate that goes linearly from
``start_rate`` to ``end_rate`` (equal for a constant rate). Hit ``n`` (0-based) is
due at the time ``t`` where the number of hits due so far, the integral of the rate,
reaches ``n``:

    H(t) = r0 * t + (r1 - r0) * t**2 / (2 * D)       within a segment of length D

so for a constant rate ``t = n / r`` (hit 0 at t = 0, as Vegeta), and for a ramp
``t = 2h / (r0 + sqrt(r0**2 + 2h(r1 - r0)/D))`` with ``h`` the hits into the segment
(the stable root of the quadratic). Several processes share one plan by taking
interleaved hits: process ``k`` of ``P`` sends hits ``k, k+P, k+2P...``, so their
union is exactly the plan.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "Pacer",
    "Segment",
    "format_duration",
    "parse_duration",
    "parse_pace",
    "parse_rate",
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Go-style durations in seconds: ``"30s"``, ``"1m30s"``, ``"250ms"``; a bare number is
    seconds."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"bad duration {text!r}: must be >= 0")
        return value
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"bad duration {text!r}: use forms like 30s, 1m30s, 250ms, 2h")
    return total


def format_duration(seconds: float) -> str:
    """Go's time.Duration text: ``1.5s``, ``108.272568ms``, ``1m30s``."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim(ns / 1e3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_trim(ns / 1e6)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{_trim(rest / 1e9)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def parse_rate(text: str) -> float:
    """Requests per second from ``"1000"``, ``"1000/1s"``, ``"5/100ms"``, ``"600/m"``."""
    text = text.strip()
    count, sep, per = text.partition("/")
    try:
        value = float(count)
    except ValueError:
        raise ValueError(f"bad rate {text!r}: use 1000, 1000/1s or 5/100ms") from None
    if sep:
        per = per.strip()
        seconds = parse_duration(per if per[:1].isdigit() or per[:1] == "." else "1" + per)
        if seconds <= 0:
            raise ValueError(f"bad rate {text!r}: the period must be > 0")
        value /= seconds
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"bad rate {text!r}: must be >= 0")
    return value


@dataclass(frozen=True, slots=True)
class Segment:
    duration: float
    start_rate: float
    end_rate: float

    @property
    def hits(self) -> float:
        return (self.start_rate + self.end_rate) / 2 * self.duration


def parse_pace(text: str) -> list[Segment]:
    """``"10s@1000, 30s@1000->5000, 20s@5000"`` -> segments (rates accept ``/period``)."""
    segments = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        duration_s, sep, rates = part.partition("@")
        if not sep:
            raise ValueError(f"bad pace step {part!r}: use DURATION@RATE or DURATION@FROM->TO")
        duration = parse_duration(duration_s)
        start_s, arrow, end_s = rates.partition("->")
        start = parse_rate(start_s)
        end = parse_rate(end_s) if arrow else start
        if duration <= 0:
            raise ValueError(f"bad pace step {part!r}: duration must be > 0")
        segments.append(Segment(duration, start, end))
    if not segments:
        raise ValueError(f"bad pace {text!r}: give at least one step like 10s@1000")
    return segments


class Pacer:
    """Intended send times of the hits of a plan, optionally capped in time and count."""

    def __init__(
        self,
        segments: list[Segment],
        duration: float | None = None,
        requests: int | None = None,
    ) -> None:
        self.segments = segments
        self.duration = duration
        self.requests = requests
        starts_t = [0.0]
        starts_h = [0.0]
        for seg in segments:
            starts_t.append(starts_t[-1] + seg.duration)
            starts_h.append(starts_h[-1] + seg.hits)
        self._starts_t = starts_t
        self._starts_h = starts_h
        self._cursor = 0

    @classmethod
    def constant(
        cls, rate: float, duration: float | None = None, requests: int | None = None
    ) -> Pacer:
        if duration is None and requests is None:
            raise ValueError("a constant rate needs --duration or --requests to end")
        if rate <= 0:
            raise ValueError("a constant rate must be > 0 (use the closed model for rate 0)")
        length = duration if duration is not None else (requests or 0) / rate + 1.0
        return cls([Segment(length, rate, rate)], duration, requests)

    @property
    def end(self) -> float:
        """When the plan ends, in seconds from the start."""
        total = self._starts_t[-1]
        return min(total, self.duration) if self.duration is not None else total

    def total_hits(self) -> int:
        """Hits the whole plan sends (for progress display)."""
        count = math.ceil(self.hits_due(self.end) - 1e-9)
        return min(count, self.requests) if self.requests is not None else count

    def hits_due(self, t: float) -> float:
        """H(t): how many hits are due by ``t`` (a real number)."""
        for i, seg in enumerate(self.segments):
            t0 = self._starts_t[i]
            if t < self._starts_t[i + 1] or i == len(self.segments) - 1:
                dt = min(max(t - t0, 0.0), seg.duration)
                slope = (seg.end_rate - seg.start_rate) / seg.duration
                return self._starts_h[i] + seg.start_rate * dt + slope * dt * dt / 2
        return self._starts_h[-1]

    def time_of(self, n: int) -> float | None:
        """When hit ``n`` is due (seconds from the start), or None if past the plan."""
        if self.requests is not None and n >= self.requests:
            return None
        starts_h = self._starts_h
        i = self._cursor
        if n < starts_h[i]:
            i = 0
        last = len(self.segments) - 1
        while i <= last and n >= starts_h[i + 1]:
            i += 1
        if i > last:
            return None
        self._cursor = i
        seg = self.segments[i]
        h = n - starts_h[i]
        r0 = seg.start_rate
        slope = (seg.end_rate - r0) / seg.duration
        if h <= 0.0:
            dt = 0.0
        elif slope == 0.0:
            dt = h / r0
        else:
            disc = r0 * r0 + 2.0 * slope * h
            dt = 2.0 * h / (r0 + math.sqrt(max(disc, 0.0)))
        t = self._starts_t[i] + dt
        if self.duration is not None and t >= self.duration:
            return None
        return t
