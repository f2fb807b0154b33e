"""The live view of a running attack, on stderr when it is a terminal (rich)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from tippingpoint.hdr import Histogram
from tippingpoint.stream import Interval, Record

__all__ = ["LiveView"]


class LiveView:
    """Folds interval records from every process into a one-screen status."""

    def __init__(self, console: Console, planned: int | None, offered: float | None) -> None:
        self.console = console
        self.planned = planned
        self.offered = offered
        self.sent = 0
        self.done = 0
        self.errors = 0
        self.in_flight: dict[int, int] = {}
        self.open: dict[int, int] = {}
        self.last: dict[int, tuple[Histogram, Histogram, int]] = {}
        self.last_t = -1.0
        self.saturated = False
        self.started = time.monotonic()
        self.live = Live(self._render(), console=console, refresh_per_second=2, transient=False)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self._render())
        self.live.__exit__(None, None, None)

    def on_record(self, record: Record, _line: bytes = b"") -> None:
        if not isinstance(record, Interval):
            return
        self.sent += record.sent
        self.done += record.done
        self.errors += sum(v for k, v in record.codes.items() if not 200 <= k < 400)
        self.in_flight[record.process] = record.in_flight
        self.open[record.process] = record.open
        t = record.t
        lat = record.histogram("latency")
        late = record.histogram("lateness")
        if t > self.last_t:
            self.last_t = t
            self.last = {}
        if t == self.last_t:
            self.last[record.process] = (lat, late, record.sent)
        if late.total and late.percentile(99) > 1000:
            self.saturated = True
        self.live.update(self._render())

    def _render(self) -> Table:
        table = Table(show_header=False, box=None, padding=(0, 2))
        elapsed = time.monotonic() - self.started
        progress = f"{self.sent:,}" + (f" / {self.planned:,}" if self.planned else "")
        table.add_row("elapsed", f"{elapsed:6.1f} s", "sent", progress)
        lat = Histogram()
        sent_last = 0
        for h, _, sent in self.last.values():
            lat.add(h)
            sent_last += sent
        offered = f"{self.offered:,.0f}/s" if self.offered else "closed model"
        table.add_row("target rate", offered, "achieved (last s)", f"{sent_last:,}/s")
        table.add_row(
            "in flight",
            f"{sum(self.in_flight.values()):,}",
            "open connections",
            f"{sum(self.open.values()):,}",
        )
        p50, p99 = lat.percentiles([50, 99])
        table.add_row(
            "p50 (last s)", f"{p50 / 1000:.3f} ms", "p99 (last s)", f"{p99 / 1000:.3f} ms"
        )
        table.add_row(
            "errors",
            f"{self.errors:,}",
            "generator",
            "[red]BEHIND SCHEDULE[/red]" if self.saturated else "on schedule",
        )
        return table
