"""Where a running command's figures can be tapped while it runs.

A command with a live page attaches a :class:`Tap`; the places that already see each
figure pass it on: every record of an attack or a hold (through :class:`Tapped`, the
load that tees them), every monitor sample, every finished step of a sweep, the start
of each experiment and each rewrite of the report. With nothing attached each call is
one test of an empty list: the load's own processes never see a tap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tippingpoint.model import AttackConfig
    from tippingpoint.stream import Record

Sink = Callable[["Record", bytes], None]
"""``engine.runner.Sink``: named here too, as the engine imports what imports this."""

__all__ = [
    "Tap",
    "Tapped",
    "attach",
    "attached",
    "begin",
    "log",
    "record",
    "report",
    "result",
    "row",
    "sample",
]


class Tap(Protocol):
    def record(self, record: Record) -> None: ...
    def sample(self, sample: dict[str, Any]) -> None: ...
    def row(self, row: dict[str, Any]) -> None: ...
    def begin(self, name: str, shape: str, description: str, left: list[str]) -> None: ...
    def log(self, line: str) -> None: ...
    def report(self, data: dict[str, Any]) -> None: ...
    def result(self, sweep: dict[str, Any]) -> None: ...


_TAPS: list[Tap] = []


@contextmanager
def attach(tap: Tap) -> Iterator[Tap]:
    _TAPS.append(tap)
    try:
        yield tap
    finally:
        _TAPS.remove(tap)


def attached() -> bool:
    return bool(_TAPS)


def record(rec: Record) -> None:
    for tap in _TAPS:
        tap.record(rec)


def sample(sample_: dict[str, Any]) -> None:
    for tap in _TAPS:
        tap.sample(sample_)


def row(row_: dict[str, Any]) -> None:
    for tap in _TAPS:
        tap.row(row_)


def begin(name: str, shape: str, description: str, left: list[str]) -> None:
    for tap in _TAPS:
        tap.begin(name, shape, description, left)


def log(line: str) -> None:
    for tap in _TAPS:
        tap.log(line)


def report(data: dict[str, Any]) -> None:
    for tap in _TAPS:
        tap.report(data)


def result(sweep: dict[str, Any]) -> None:
    """A command's sweep has ended: its whole result (``SweepResult.to_json``)."""
    for tap in _TAPS:
        tap.result(sweep)


class Tapped:
    """A :class:`~tippingpoint.engine.runner.Load` whose records also go to the taps."""

    def __init__(self, load: Any) -> None:
        """``load``: an ``engine.runner.Load``."""
        self.inner = load

    @staticmethod
    def _tee(on_record: Sink) -> Sink:
        def both(rec: Record, line: bytes) -> None:
            on_record(rec, line)
            record(rec)

        return both

    def attack(self, config: AttackConfig, on_record: Sink) -> int:
        code: int = self.inner.attack(config, self._tee(on_record))
        return code

    def hold(
        self,
        config: Any,
        on_record: Sink,
        on_start: Callable[[int], None] | None = None,
        tally: Any = None,
    ) -> int:
        code: int = self.inner.hold(config, self._tee(on_record), on_start, tally)
        return code

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
