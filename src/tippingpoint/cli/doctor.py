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
@click.option(
    "--mqtt-keepalive",
    default=None,
    help="The MQTT keepalive you will use: checks the timeouts that cut idle sessions.",
)
@click.option(
    "--ws-ping-every",
    default=None,
    help="How often held WebSockets ping (hold --request-every): checks HAProxy's tunnel timeouts.",
)
@click.option(
    "--haproxy-config",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="An HAProxy configuration to check with --mqtt-keepalive or --ws-ping-every (e.g. "
    "tippingpoint-proxy/haproxy-0.cfg).",
)
@click.option("--apply", "apply_", is_flag=True, help="Set the sysctls it can (root, Linux).")
def doctor(
    connections: int,
    sleep_ms: int | None,
    timeout: str,
    mqtt_keepalive: str | None,
    ws_ping_every: str | None,
    haproxy_config: str | None,
    apply_: bool,
) -> None:
    """Check the limits the article tripped over, with the exact fix for each."""
    from tippingpoint.doctor import apply_fixes, diagnose
    from tippingpoint.pacer import parse_duration

    if connections < 1:
        fail("--connections must be >= 1")
        return
    try:
        from pathlib import Path

        checks, _plan = diagnose(
            connections,
            sleep_ms,
            parse_duration(timeout),
            mqtt_keepalive_s=parse_duration(mqtt_keepalive) if mqtt_keepalive else None,
            haproxy_config=Path(haproxy_config).read_text() if haproxy_config else None,
            ws_ping_every_s=parse_duration(ws_ping_every) if ws_ping_every else None,
        )
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
