"""A precise one-shot wake-up for the pacing loop.

uvloop's timers have millisecond resolution, too coarse for send schedules at tens
of thousands of requests per second. On Linux a ``timerfd`` armed with an absolute
CLOCK_MONOTONIC time (the clock of ``time.monotonic_ns``) wakes the loop within
microseconds; elsewhere ``loop.call_at`` is used.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from collections.abc import Callable
from typing import Final

__all__ = ["Alarm"]

_CLOCK_MONOTONIC: Final = 1
_TFD_NONBLOCK: Final = 0o4000
_TFD_CLOEXEC: Final = 0o2000000
_TFD_TIMER_ABSTIME: Final = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create  # noqa: B018 - probe that the symbol exists
        return libc
    except (OSError, AttributeError):
        return None


class Alarm:
    """Calls ``callback`` once at or just after an absolute ``time.monotonic_ns()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._libc = _libc()
        self._fd = -1
        self._spec = _Itimerspec()
        self._handle: asyncio.TimerHandle | None = None
        self._period = 0.0
        self.armed_at = 0
        self.periodic = False
        if self._libc is not None:
            fd = self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                loop.add_reader(fd, self._fired)

    def arm(self, at_ns: int) -> None:
        """Wake at ``at_ns`` (replaces an earlier arming)."""
        self.armed_at = at_ns
        if self._fd >= 0:
            spec = self._spec
            spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(max(at_ns, 1), 1_000_000_000)
            assert self._libc is not None
            self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None)
            return
        if self._handle is not None:
            self._handle.cancel()
        delay = (at_ns - time.monotonic_ns()) / 1e9
        self._handle = self._loop.call_later(max(delay, 0.0), self._fired_timer)

    def arm_periodic(self, first_ns: int, period_ns: int) -> None:
        """Wake at ``first_ns`` and then every ``period_ns`` until :meth:`close`.

        For dense schedules: one wake-up sends every hit that has come due since the
        last, instead of one wake-up (and one re-arming) per hit."""
        self.periodic = True
        self.armed_at = first_ns
        if self._fd >= 0:
            spec = self._spec
            spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(max(first_ns, 1), 1_000_000_000)
            spec.it_interval.tv_sec, spec.it_interval.tv_nsec = divmod(period_ns, 1_000_000_000)
            assert self._libc is not None
            self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None)
            return
        self._period = period_ns / 1e9
        delay = (first_ns - time.monotonic_ns()) / 1e9
        self._handle = self._loop.call_later(max(delay, 0.0), self._fired_timer)

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        if not self.periodic:
            self.armed_at = 0
        self._callback()

    def _fired_timer(self) -> None:
        self._handle = None
        if self.periodic:
            self._handle = self._loop.call_later(self._period, self._fired_timer)
        else:
            self.armed_at = 0
        self._callback()

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
