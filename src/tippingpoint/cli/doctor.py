"""`tippingpoint doctor`: the limits the article tripped over, with fixes."""

from __future__ import annotations

from typing import Any

import click

from tippingpoint.cli.base import cli, fail
from tippingpoint.cli.fleet import cluster_options


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
@cluster_options
def doctor(
    connections: int,
    sleep_ms: int | None,
    timeout: str,
    mqtt_keepalive: str | None,
    ws_ping_every: str | None,
    haproxy_config: str | None,
    apply_: bool,
    **where: Any,
) -> None:
    """Check the limits the article tripped over, with the exact fix for each.

    With --cluster, on each machine of the cluster (through one of its workers), for its
    workers' share of --connections, printed per host."""
    from tippingpoint.doctor import apply_fixes, diagnose
    from tippingpoint.pacer import parse_duration

    if connections < 1:
        fail("--connections must be >= 1")
        return
    try:
        from pathlib import Path

        asked: dict[str, Any] = {
            "sleep_ms": sleep_ms,
            "client_timeout_s": parse_duration(timeout),
            "mqtt_keepalive_s": parse_duration(mqtt_keepalive) if mqtt_keepalive else None,
            "haproxy_config": Path(haproxy_config).read_text() if haproxy_config else None,
            "ws_ping_every_s": parse_duration(ws_ping_every) if ws_ping_every else None,
        }
        if where.get("cluster"):
            if apply_:
                fail("--apply sets this machine's sysctls only: run it as root on each host")
            _per_host(where, connections, asked)
            return
        checks, _plan = diagnose(connections, **asked)
    except ValueError as e:
        fail(str(e))
        return
    _print(checks)
    if apply_:
        for line in apply_fixes(checks):
            click.echo(line)


def _print(checks: Any, indent: str = "") -> None:
    for check in checks:
        mark = "ok  " if check.ok else "FIX "
        click.echo(f"{indent}{mark} {check.name}: {check.value}")
        if check.advice:
            click.echo(f"{indent}       {check.advice}")


def _per_host(where: dict[str, Any], connections: int, asked: dict[str, Any]) -> None:
    """The checks on each machine of the cluster, run by one of its workers, for the
    share of ``connections`` its workers would hold (the fleet deals them out evenly)."""
    import math

    from tippingpoint.cli.fleet import fleet_of
    from tippingpoint.doctor import checks_here

    with fleet_of(where, "doctor") as fleet:
        hosts: dict[str, list[str]] = {}
        for worker in fleet.workers:
            hosts.setdefault(fleet.facts[worker].host, []).append(worker)
        for host, workers in sorted(hosts.items()):
            share = math.ceil(connections * len(workers) / len(fleet.workers))
            done = fleet.client.run(checks_here, share, asked, workers=[workers[0]])
            pid = fleet.facts[workers[0]].pid
            click.echo(
                f"{host}: {len(workers)} worker(s), {share:,} of the {connections:,} "
                f"connections (checked by worker pid {pid}, {workers[0]})"
            )
            _print(next(iter(done.values())), "  ")
