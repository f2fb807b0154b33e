"""`tippingpoint hold`: open connections at a rate and hold them."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from tippingpoint.cli.base import cli, fail
from tippingpoint.cli.options import parse_laddrs, user_errors


@cli.command()
@click.argument("url")
@click.option("--connections", type=int, required=True, help="Connections to hold in all.")
@click.option(
    "--connect-rate", default="1000", show_default=True, help="New connections per second."
)
@click.option(
    "--duration",
    default="60s",
    show_default=True,
    help="How long to hold, from the start (opening included).",
)
@click.option(
    "--request-every", default=None, help="Each connection sends a request this often, e.g. 30s."
)
@click.option(
    "--ports",
    "dest_ports",
    default=None,
    help="Spread over these destination ports, e.g. 8282-8291.",
)
@click.option("--laddr", default=None, help="Source addresses, e.g. 127.0.0.2-127.0.0.40.")
@click.option(
    "--processes",
    type=int,
    default=1,
    show_default=True,
    help="At least this many (more when the descriptor limit needs them).",
)
@click.option("--insecure", is_flag=True, help="TLS: do not verify the server certificate.")
@click.option("--cacert", type=click.Path(dir_okay=False), help="TLS: CA bundle.")
@click.option("-o", "--output", default=None, help="Write the records (JSON lines) here.")
def hold(
    url: str,
    connections: int,
    connect_rate: str,
    duration: str,
    request_every: str | None,
    dest_ports: str | None,
    laddr: str | None,
    processes: int,
    insecure: bool,
    cacert: str | None,
    output: str | None,
) -> None:
    """Open connections at a rate and hold them (idle or with a periodic request)."""
    import functools
    from dataclasses import replace

    from tippingpoint.engine.hold import HoldConfig, HoldTally, hold_child, plan_hold
    from tippingpoint.engine.runner import run_children
    from tippingpoint.limits import file_max, memory_available, port_range, raise_nofile
    from tippingpoint.pacer import parse_duration, parse_rate
    from tippingpoint.plan import ConnectionPlan, loopback_sources, plan_connections
    from tippingpoint.server.config import parse_ports
    from tippingpoint.targets import Target

    with user_errors():
        if connections < 1:
            raise ValueError("--connections must be >= 1")
        config = HoldConfig(
            target=Target("GET", url),
            connections=connections,
            connect_rate=parse_rate(connect_rate),
            duration=parse_duration(duration),
            request_every=parse_duration(request_every) if request_every else None,
            ports=parse_ports(dest_ports) if dest_ports else (),
            laddrs=parse_laddrs(laddr),
            insecure=insecure,
            cacert=cacert,
            processes=max(1, processes),
        )
        if config.connect_rate <= 0:
            raise ValueError("--connect-rate must be > 0")
    soft, _ = raise_nofile()
    origin = config.target.origin
    loopback = origin.host in ("localhost", "::1") or origin.host.startswith("127.")

    def make_plan(addresses: int | None) -> ConnectionPlan:
        return plan_connections(
            connections,
            soft,
            port_range(),
            len(config.ports) or 1,
            memory_available(),
            both_ends_local=loopback,
            tls=origin.tls,
            source_addresses=addresses,
            file_max=file_max(),
        )

    plan = make_plan(len(config.laddrs) or 1)
    if not config.laddrs and origin.host.startswith("127.") and plan.source_addresses > 1:
        # On IPv4 loopback every 127.x.y.z is ours: take the source addresses the plan
        # needs ("localhost" may resolve to ::1, where they would not bind).
        plan = make_plan(None)
        config = replace(config, laddrs=loopback_sources(plan.source_addresses))
    if not plan.feasible:
        fail("this plan cannot fit: " + "; ".join(plan.problems))
        return
    for warning in plan.warnings:
        click.echo(f"tippingpoint: warning: {warning}", err=True)
    shards = plan_hold(config, soft, time.monotonic_ns() + 500_000_000)
    click.echo(
        f"tippingpoint hold: {connections:,} connections in {len(shards)} process(es) "
        f"(open-file limit {soft:,}), "
        + (
            f"{len(config.laddrs)} source address(es) {config.laddrs[0]}-{config.laddrs[-1]}, "
            if config.laddrs
            else "1 source address, "
        )
        + f"{len(config.ports) or 1} destination port(s), {config.connect_rate:,.0f}/s; "
        f"about {plan.memory_bytes / 2**30:.1f} GiB with the server's side and the kernel's",
        err=True,
    )
    out = open(output, "wb") if output else None  # noqa: SIM115
    tally = HoldTally(connections, len(shards))

    def on_record(record: dict[str, Any]) -> None:
        line = tally.add(record)
        if line is not None:
            click.echo("  " + line, err=True)

    def on_line(line: bytes) -> None:
        if out is not None:
            out.write(line)
            out.flush()

    try:
        code = run_children(
            [functools.partial(hold_child, config, shard) for shard in shards],
            on_line,
            on_record,
            "hold",
        )
    finally:
        if out:
            out.close()
    click.echo(tally.summary())
    if tally.lost:
        click.echo(
            "tippingpoint: lost connections were closed by the other end: look at its idle "
            "timeouts (HAProxy: timeout http-request, timeout client; serve: --idle-timeout)",
            err=True,
        )
    sys.exit(code)
