"""Ctrl-C and SIGTERM for a whole command, whatever it is doing when they come.

A command that runs its load in steps (a sweep: a run, its bookkeeping, the next run)
wraps itself in :func:`catching`. From then on a signal never raises in the middle of
the command's own work: it is noted, passed on as SIGTERM to the load processes running
now (they stop and flush what they measured), and the command asks :func:`requested`
before it starts anything new. :func:`run_children` (``engine/runner.py``) catches the
same way for a single run, and registers its workers with :func:`passing_on`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["catching", "in_worker", "passing_on", "request", "requested"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received = 0
"""The first signal that came while catching (0: none)."""
_children: set[int] = set()
_depth = 0


def requested() -> int:
    """The signal that asked the command to stop, or 0."""
    return _received


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    global _received
    _received = _received or signum
    for pid in list(_children):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def request() -> None:
    """Stop the command as SIGTERM would, from within it (a thread that found the run
    cannot go on: a lab host lost); the command then says why it stopped."""
    _on_signal(signal.SIGTERM, None)


@contextmanager
def catching() -> Iterator[None]:
    """Note SIGINT and SIGTERM instead of raising, until the outermost ``catching``
    ends; then the handlers before it come back and the note is cleared. After a stop
    was noted, the command is on its way out: a further Ctrl-C (a terminal's second, or
    the one a user sends while it writes its last lines) is ignored, not raised in the
    middle of that."""
    global _depth, _received
    old = {sig: signal.signal(sig, _on_signal) for sig in _SIGNALS} if not _depth else {}
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth:
            for sig, handler in old.items():
                signal.signal(
                    sig, signal.SIG_IGN if _received and sig == signal.SIGINT else handler
                )
            _received = 0


@contextmanager
def passing_on(pids: Iterable[int]) -> Iterator[None]:
    """While inside, a signal noted is passed on to ``pids`` as SIGTERM; one noted
    before they started is passed on at once."""
    added = set(pids)
    _children.update(added)
    try:
        if _received:
            _on_signal(_received, None)
        yield
    finally:
        _children.difference_update(added)


def in_worker() -> None:
    """In a forked load process, first thing: note signals from the start (its event
    loop takes them over, and asks :func:`requested` once it has), and pass nothing on
    (the parent's workers are not its own)."""
    global _depth, _received
    _children.clear()
    _received = 0
    _depth = 1
    for sig in _SIGNALS:
        signal.signal(sig, _on_signal)
