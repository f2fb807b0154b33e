"""`tippingpoint doctor`: the limits the article tripped over, with fixes."""

from __future__ import annotations

import click

from tippingpoint.cli.base import cli, fail


@cli.command()
@click.option(
    "--connections",
    type=int,
    default=100_000,
    show_default=True,
    help="Concurrent connections you plan to hold.",
)
@click.option(
    "--sleep",
    "sleep_ms",
    type=int,
    default=None,
    help="The longest `sleep` header you will send (ms): checks the timeouts.",
)
@click.option("--timeout", default="30s", show_default=True, help="The client's timeout.")
@click.option("--apply", "apply_", is_flag=True, help="Set the sysctls it can (root, Linux).")
def doctor(connections: int, sleep_ms: int | None, timeout: str, apply_: bool) -> None:
    """Check the limits the article tripped over, with the exact fix for each."""
    from tippingpoint.doctor import apply_fixes, diagnose
    from tippingpoint.pacer import parse_duration

    if connections < 1:
        fail("--connections must be >= 1")
        return
    try:
        checks, _plan = diagnose(connections, sleep_ms, parse_duration(timeout))
    except ValueError as e:
        fail(str(e))
        return
    for check in checks:
        mark = "ok  " if check.ok else "FIX "
        click.echo(f"{mark} {check.name}: {check.value}")
        if check.advice:
            click.echo(f"       {check.advice}")
    if apply_:
        for line in apply_fixes(checks):
            click.echo(line)
