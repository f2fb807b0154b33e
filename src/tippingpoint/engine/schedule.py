"""The open-model schedule of one shard: which hit is due when, and when to wake up.

Hit ``n`` of the plan is due at ``start + pacer.time_of(n)``; this process takes hits
``k, k+P, k+2P...`` (``k`` its index, ``P`` the processes). Each due hit goes to the
protocol's ``dispatch(n, intended, now)``, which records its lateness and sends it, or
queues it for a connection. One schedule serves every protocol: HTTP requests and MQTT
publishes are paced by the same code.

Two bounds keep a rate the process cannot offer from taking the machine:

* one wake-up takes up at most :data:`BATCH` hits, then gives the loop a turn (signals,
  responses, timers) before it takes up more;
* a hit more than :data:`BEHIND_S` behind its time when its turn comes is not sent: it is
  counted as *missed*, as the generator falling behind (the way wrk2 counts the sends it
  could not make), and the schedule skips ahead to the hits due now. Without it, a rate
  of 10^9/s queued every hit and filled 24 GB in minutes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from time import monotonic_ns
from typing import Final, Protocol

from tippingpoint.pacer import Pacer

__all__ = [
    "BATCH",
    "BEHIND_S",
    "NEVER",
    "TICKS",
    "ClosedPlan",
    "Schedule",
    "run_plan",
    "wait_until",
]

NEVER: Final = 1 << 62
"""A due time that never comes."""

BATCH: Final = 512
"""The most hits one wake-up takes up before the loop gets a turn."""

BEHIND_S: Final = 1.0
"""A hit this late when its turn comes is missed, not sent."""

TICKS: Final = ((10_000, 100_000), (40_000, 250_000))
"""``(rate, tick)``: above ``rate`` hits/s per process the loop wakes on a fixed tick of
``tick`` ns and takes up every hit due since the last; below the lowest, it wakes for
each hit. HTTP's: 100 µs above 10,000/s, and 250 µs above 40,000/s, where the process
runs short of CPU: ten hits a wake-up instead of four cut the cost per request by ~8 %
(80,000/s against nginx: 13.2 -> 12.2 µs) for at most 0.25 ms of lateness, which latency
counts. MQTT publishes use 250 µs from 10,000/s (:mod:`tippingpoint.engine.publish`)."""


class Waker(Protocol):
    """What the schedule needs of a timer (:class:`tippingpoint.engine.timer.Alarm`)."""

    armed_at: int
    periodic: bool

    def arm(self, at_ns: int) -> None: ...

    def arm_periodic(self, first_ns: int, period_ns: int) -> None: ...

    def close(self) -> None: ...


class Schedule:
    """The pacing loop of one shard of an open-model run."""

    def __init__(
        self,
        pacer: Pacer,
        start_ns: int,
        index: int,
        count: int,
        dispatch: Callable[[int, int, int], None],
        on_end: Callable[[], None],
        on_missed: Callable[[int], None],
        waker: Callable[[Callable[[], None]], Waker],
        soon: Callable[[Callable[[], None]], object],
        clock: Callable[[], int] = monotonic_ns,
        ticks: tuple[tuple[int, int], ...] = TICKS,
    ) -> None:
        self._pacer = pacer
        self.start = start_ns
        self._step = count
        self.n = index - count
        """The next hit of this shard, due at :attr:`next_due`."""
        self.next_due = NEVER
        """When the next hit of this shard is due (``NEVER``: the plan has ended)."""
        self.ended = False
        self._dispatch = dispatch
        self._on_end = on_end
        self._on_missed = on_missed
        self._soon = soon
        self._clock = clock
        self._ticks = ticks
        self._again = False
        self._behind_ns = int(BEHIND_S * 1e9)
        self._ns_per_hit = 0.0
        self._hit_limit = 0
        if len(pacer.segments) == 1:
            seg = pacer.segments[0]
            if seg.start_rate == seg.end_rate > 0:  # constant: no call into the pacer
                self._ns_per_hit = 1e9 / seg.start_rate
                self._hit_limit = pacer.total_hits()
        self._alarm = waker(self.pump)
        peak = max(max(seg.start_rate, seg.end_rate) for seg in pacer.segments)
        self.per_process = peak / count
        """The plan's peak rate for this process, hits/s."""

    def begin(self) -> None:
        """Take up the first hit (at the start time: see :func:`wait_until`)."""
        tick = 0
        for rate, ns in self._ticks:
            if self.per_process > rate:
                tick = ns
        if tick:
            self._alarm.arm_periodic(self.start, tick)
        self._advance()
        self.pump()

    def stop(self) -> None:
        """No more hits: the plan ends here."""
        if not self.ended:
            self._end()

    def close(self) -> None:
        self._alarm.close()

    def _end(self) -> None:
        self.next_due = NEVER
        self.ended = True
        self._on_end()

    def _advance(self) -> None:
        if self.ended:
            return
        self.n += self._step
        if self._ns_per_hit:
            if self.n < self._hit_limit:
                self.next_due = self.start + int(self.n * self._ns_per_hit)
            else:
                self._end()
            return
        t = self._pacer.time_of(self.n)
        if t is None:
            self._end()
        else:
            self.next_due = self.start + int(t * 1e9)

    def pump(self) -> None:
        """Take up every hit due by now (at most :data:`BATCH`), and arm the wake-up."""
        now = self._clock()
        self._again = False
        if now - self.next_due > self._behind_ns and not self.ended:
            self._skip(now)
        dispatch = self._dispatch
        left = BATCH
        while self.next_due <= now:
            if not left:
                if not self._again:
                    self._again = True
                    self._soon(self.pump)
                return
            left -= 1
            dispatch(self.n, self.next_due, now)
            self._advance()
        due = self.next_due
        alarm = self._alarm
        if due != NEVER:
            if not alarm.periodic and (alarm.armed_at == 0 or alarm.armed_at > due):
                alarm.arm(due)
        elif alarm.periodic:
            alarm.close()

    def _skip(self, now: int) -> None:
        """Count as missed every hit more than :data:`BEHIND_S` behind ``now``, and go on
        from the first hit of this shard due after that."""
        pacer = self._pacer
        first = math.ceil(pacer.hits_due((now - self._behind_ns - self.start) / 1e9) - 1e-9)
        first += (self.n - first) % self._step  # this shard's hits only
        if first <= self.n:
            return
        last = min(first, pacer.total_hits())
        self._on_missed(max(0, -(-(last - self.n) // self._step)))
        self.n = first - self._step
        self._advance()


async def wait_until(start_ns: int) -> None:
    """Sleep until ``start_ns`` (a ``monotonic_ns`` time), then spin out the rest:
    uvloop's timers count whole milliseconds from a cached clock and can end a sleep up
    to one early, and no hit may leave before time zero (the report would not know when
    the run began)."""
    delay = (start_ns - monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    while monotonic_ns() < start_ns:
        pass


class ClosedPlan:
    """The closed model's budget for one shard (rate 0: each connection or session
    sends again as soon as its last answer came): how many it may still send (its share
    of ``--requests``), until when (``--duration``), and the hit numbers it uses
    (``index``, ``index + count``...), as the open schedule numbers its hits."""

    __slots__ = ("end_ns", "left", "n", "_step")

    def __init__(
        self, requests: int | None, duration: float | None, start_ns: int, index: int, count: int
    ) -> None:
        self.left = NEVER
        if requests is not None:
            self.left = requests // count + (1 if index < requests % count else 0)
        self.end_ns = NEVER if duration is None else start_ns + int(duration * 1e9)
        self.n = index
        self._step = count

    def take(self, now: int) -> int:
        """The next hit's number, or -1 when the plan is spent (count or time)."""
        if self.left <= 0 or now >= self.end_ns:
            return -1
        self.left -= 1
        n = self.n
        self.n = n + self._step
        return n

    def stop(self) -> None:
        self.left = 0


async def run_plan(
    schedule: Schedule | None,
    start_ns: int,
    start_closed: Callable[[], None],
    done: asyncio.Event,
) -> None:
    """A shard's plan from its start to its end: at ``start_ns`` the open schedule
    begins (or the closed model's first sends), then wait for the owner's ``done``."""
    await wait_until(start_ns)
    if schedule is not None:
        schedule.begin()
    else:
        start_closed()
    await done.wait()
    if schedule is not None:
        schedule.close()
