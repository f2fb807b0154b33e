"""The attack's interval clock: one :class:`~tippingpoint.stream.Interval` record per
``--interval``, cut from the recorder on the boundary and handed to ``emit``.

Encoding a record's five histograms takes a few milliseconds at high rates (3-5 ms a
second at 80,000 hits/s), so a record cut on a boundary is encoded one histogram per
turn of the event loop and emitted when the last is done: the pacing loop runs in
between. The final record is encoded at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import monotonic_ns

from tippingpoint.engine.recorder import Recorder
from tippingpoint.stream import Interval

__all__ = ["IntervalClock"]


class IntervalClock:
    __slots__ = (
        "_done",
        "_emit",
        "_i",
        "_interval",
        "_interval_ns",
        "_loop",
        "_pending",
        "_rec",
        "_start",
        "_state",
    )

    def __init__(
        self,
        rec: Recorder,
        loop: asyncio.AbstractEventLoop,
        start_ns: int,
        interval: float,
        state: Callable[[], tuple[int, int]],
        emit: Callable[[Interval], None],
    ) -> None:
        """``state()`` gives the connections open and the requests in flight."""
        self._rec = rec
        self._loop = loop
        self._start = start_ns
        self._interval = interval
        self._interval_ns = int(interval * 1e9)
        self._state = state
        self._emit = emit
        self._i = 0
        self._pending: Interval | None = None
        self._done = False

    def start(self) -> None:
        self._schedule()

    def finish(self, interrupted: bool) -> None:
        """Emit what is pending and the final record, which covers the rest of the run."""
        self._done = True
        self._emit_pending()
        t = self._i * self._interval
        duration = max((monotonic_ns() - self._start) / 1e9 - t, 0.0)
        record = self._rec.flush(t, duration, *self._state(), encode=True)
        record.final = True
        record.interrupted = interrupted
        self._emit(record)

    def _schedule(self) -> None:
        boundary = self._start + (self._i + 1) * self._interval_ns
        delay = max((boundary - monotonic_ns()) / 1e9, 0.0)
        self._loop.call_later(delay, self._on_boundary)

    def _on_boundary(self) -> None:
        if self._done:
            return
        self._emit_pending()
        t = self._i * self._interval
        self._i += 1
        self._pending = self._rec.flush(t, self._interval, *self._state(), encode=False)
        self._loop.call_soon(self._encode_one)
        self._schedule()

    def _encode_one(self) -> None:
        record = self._pending
        if record is None:
            return
        if Recorder.encode_next(record):
            self._pending = None
            self._emit(record)
        else:
            self._loop.call_soon(self._encode_one)

    def _emit_pending(self) -> None:
        """The last record is still being encoded: finish it now."""
        record = self._pending
        if record is not None:
            while not Recorder.encode_next(record):
                pass
            self._pending = None
            self._emit(record)
