"""The command line: parses arguments, prints for humans, exits. Nothing else does."""

from __future__ import annotations

import sys

import click

from tippingpoint import __version__

__all__ = ["cli", "fail"]


def fail(message: str, code: int = 2) -> None:
    click.echo(f"tippingpoint: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tippingpoint")
def cli() -> None:
    """Load-test proxies and services: constant-rate load, true latency, the tipping point."""
