"""The command line: parses arguments, prints for humans, exits. Nothing else does."""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

import click

from tippingpoint import __version__

__all__ = ["cli", "fail"]


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"tippingpoint: {message}", err=True)
    sys.exit(code)


class _Commands(click.Group):
    """A Ctrl-C that reaches a command as KeyboardInterrupt (one with nothing of its own
    to stop, or caught between two of its steps) ends it with status 130 and one line,
    not click's ``Aborted!`` and status 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second one: the same end
            click.echo("tippingpoint: interrupted", err=True)
            # Every ``finally`` on the way here has run. os._exit, not sys.exit: a
            # KeyboardInterrupt that left code run by exec() (a dataclass being made,
            # during an import) makes CPython 3.11 end the process by SIGINT at exit,
            # whatever status it was given.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tippingpoint")
def cli() -> None:
    """Load-test proxies and services: constant-rate load, true latency, the tipping point."""
