"""The command line: one module per command, registered on one click group."""

from __future__ import annotations

from tippingpoint.cli import (  # noqa: F401  (each module registers its command)
    attack,
    bench,
    broker,
    cluster,
    doctor,
    hold,
    plan,
    proxy,
    report,
    serve,
    sweep,
    watch,
)
from tippingpoint.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli()
