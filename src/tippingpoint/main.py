"""The `tippingpoint` command's entry point: a Ctrl-C while it starts ends it quietly.

The commands' modules take tens of milliseconds to import; a Ctrl-C then finds nothing
started and nothing to save, so it ends the process with status 130 (the shell's figure
for SIGINT) instead of a KeyboardInterrupt traceback from the middle of an import."""

from __future__ import annotations

import os
import signal
from types import FrameType

__all__ = ["main"]


def _starting(_signum: int, _frame: FrameType | None) -> None:
    os._exit(130)


def main() -> None:
    previous = signal.signal(signal.SIGINT, _starting)
    from tippingpoint.cli import cli

    signal.signal(signal.SIGINT, previous)
    cli()
