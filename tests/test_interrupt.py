"""interrupt.py in process: a signal is noted, not raised; passed on to the workers
registered; the handlers come back when the outermost catch ends."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tippingpoint import interrupt


def test_a_signal_is_noted_passed_on_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    worker = subprocess.Popen(["sleep", "30"])
    try:
        with interrupt.catching():
            # Nested: one catch, the outermost's.
            with interrupt.catching(), interrupt.passing_on([worker.pid]):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler runs between two bytecodes
                assert interrupt.requested() == signal.SIGTERM
                assert worker.wait(5) == -signal.SIGTERM  # passed on as SIGTERM
            assert interrupt.requested() == signal.SIGTERM  # still noted inside
        assert interrupt.requested() == 0
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_workers_started_after_the_signal_get_it_at_once() -> None:
    worker = subprocess.Popen(["sleep", "30"])
    try:
        with interrupt.catching():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            with interrupt.passing_on([worker.pid]):
                assert worker.wait(5) == -signal.SIGTERM
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
