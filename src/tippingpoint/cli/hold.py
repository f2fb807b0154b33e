"""`tippingpoint hold`: open connections at a rate and hold them."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from tippingpoint.cli.apps import commands_of
from tippingpoint.cli.base import cli, fail
from tippingpoint.cli.fleet import cluster_options, load_of
from tippingpoint.cli.options import (
    check_local,
    mqtt_session_options,
    parse_laddrs,
    user_errors,
)
from tippingpoint.cli.web import live_page, web_options

if TYPE_CHECKING:
    from tippingpoint.cli.output import ResultFile
    from tippingpoint.engine.hold import HoldConfig
    from tippingpoint.plan import ConnectionPlan


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
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=0,
    show_default=True,
    help="Try a failed open again this many times, after 1, 2, 4... s (jittered).",
)
@click.option("--insecure", is_flag=True, help="TLS: do not verify the server certificate.")
@click.option("--cacert", type=click.Path(dir_okay=False), help="TLS: CA bundle.")
@click.option("-o", "--output", default=None, help="Write the records (JSON lines) here.")
@click.option(
    "--subscribe",
    default=None,
    help="MQTT: each session subscribes to this, e.g. 'devices/%i/cmd'.",
)
@click.option(
    "--qos", type=click.IntRange(0, 2), default=0, show_default=True, help="MQTT: --subscribe QoS."
)
@cluster_options
@mqtt_session_options
@web_options
def hold(
    url: str,
    connections: int,
    connect_rate: str,
    duration: str,
    request_every: str | None,
    dest_ports: str | None,
    laddr: str | None,
    processes: int,
    retries: int,
    insecure: bool,
    cacert: str | None,
    output: str | None,
    subscribe: str | None,
    qos: int,
    cluster: str | None,
    cluster_certs: str | None,
    max_clock_skew: str,
    insecure_cluster: bool,
    **mqtt: Any,
) -> None:
    """Open connections at a rate and hold them (idle or with a periodic request).

    With an mqtt:// or mqtts:// URL, MQTT sessions: CONNECT, CONNACK counted as
    established, a PINGREQ per --keepalive, and an optional --subscribe.
    """
    import dataclasses

    web = {k: mqtt.pop(k) for k in list(mqtt) if k.startswith("web")}
    with user_errors():
        config = _hold_config(
            url,
            connections,
            connect_rate,
            duration,
            request_every,
            dest_ports,
            laddr if cluster else _local(laddr),
            processes,
            insecure,
            cacert,
        )
        own = {**mqtt, "subscribe": subscribe, "qos": qos, "request_every": request_every}
        config = commands_of(url).held(config, own)
        config = dataclasses.replace(config, retries=retries)
    with live_page(web, f"tippingpoint hold {url}", "hold", None, ("hold", "hold", url), True):
        _plan_and_run(config, output, cluster, {
            "cluster": cluster,
            "cluster_certs": cluster_certs,
            "max_clock_skew": max_clock_skew,
            "insecure_cluster": insecure_cluster,
        })  # fmt: skip


def _plan_and_run(
    config: HoldConfig, output: str | None, cluster: str | None, where: dict[str, Any]
) -> None:
    from tippingpoint.cli.output import OutputError, ResultFile
    from tippingpoint.limits import raise_nofile

    soft, _ = raise_nofile()
    plan = None
    if cluster is None:
        plan, config = _with_sources(config, soft)
        if not plan.feasible:
            fail("this plan cannot fit: " + "; ".join(plan.problems))
            return
        for warning in plan.warnings:
            click.echo(f"tippingpoint: warning: {warning}", err=True)
    try:
        out = ResultFile(output)
    except OutputError as e:
        fail(str(e))
        return
    _run(config, out, soft, plan, where)


def _run(
    config: HoldConfig,
    out: ResultFile,
    soft: int,
    plan: ConnectionPlan | None,
    where: dict[str, Any],
) -> None:
    """Hold where ``where`` (the --cluster options) says, writing the records to ``out``
    and the progress to stderr; exit with the run's code."""
    from tippingpoint.cli.output import OutputError
    from tippingpoint.engine.hold import HoldTally
    from tippingpoint.stream import HoldRecord, Record

    tally = HoldTally(
        config.connections, 1, config.connect_rate, scheme=config.target.origin.scheme
    )

    def on_start(processes: int) -> None:
        tally.processes = processes
        if plan is not None:
            click.echo(_start_line(config, processes, soft, plan), err=True)
        else:
            click.echo(
                f"tippingpoint hold: {config.connections:,} {_noun(config)} in {processes} "
                f"process(es) over the cluster, {config.connect_rate:,.0f}/s",
                err=True,
            )

    def on_record(record: Record, line: bytes) -> None:
        out.write(line)
        progress = tally.add(record) if isinstance(record, HoldRecord) else None
        if progress is not None:
            click.echo("  " + progress, err=True)

    try:
        with load_of(where, "hold", soft) as load:
            code = load.hold(config, on_record, on_start, tally)
    except OutputError as e:
        fail(str(e), 1)
        return
    finally:
        out.close()
    click.echo(tally.summary(), err=out.path == "-")  # not into the stream on stdout
    if not tally.peak and code == 0:
        # Not one connection held: the hold measured nothing of the server.
        why = next(iter(tally.samples.items()), None)
        click.echo(
            f"tippingpoint: none of the {config.connections:,} connections was established"
            + (f" ({why[0]}: {why[1]})" if why else " (no answer before the hold ended)")
            + ": is the server up, at that address and scheme?",
            err=True,
        )
        code = 1
    if tally.lost:
        click.echo(
            "tippingpoint: lost connections were closed by the other end: look at its idle "
            "timeouts (HAProxy: timeout http-request, timeout client; serve: --idle-timeout)",
            err=True,
        )
    sys.exit(code)


def _local(laddr: str | None) -> str | None:
    """``--laddr`` of a local hold: its addresses must be this machine's (a cluster's
    workers have their own)."""
    check_local(parse_laddrs(laddr))
    return laddr


def _hold_config(
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
) -> HoldConfig:
    """The hold's config from the options (ValueError when one is bad)."""
    from tippingpoint.engine.hold import HoldConfig
    from tippingpoint.engine.tls import check_tls_files
    from tippingpoint.model import TLSOptions
    from tippingpoint.pacer import parse_duration, parse_rate
    from tippingpoint.server.config import parse_ports
    from tippingpoint.targets import Target

    check_tls_files(TLSOptions(insecure=insecure, cacert=cacert))
    if connections < 1:
        raise ValueError("--connections must be >= 1")
    if processes < 1:
        raise ValueError(f"--processes {processes}: give 1 or more")
    seconds = parse_duration(duration)
    if seconds <= 0:
        raise ValueError(f"--duration {duration}: give a time > 0, e.g. 60s")
    config = HoldConfig(
        target=Target("GET", url),
        connections=connections,
        connect_rate=parse_rate(connect_rate),
        duration=seconds,
        request_every=parse_duration(request_every) if request_every else None,
        ports=parse_ports(dest_ports) if dest_ports else (),
        laddrs=parse_laddrs(laddr),
        insecure=insecure,
        cacert=cacert,
        processes=processes,
    )
    if config.connect_rate <= 0:
        raise ValueError("--connect-rate must be > 0")
    return config


def _with_sources(config: HoldConfig, fd_limit: int) -> tuple[ConnectionPlan, HoldConfig]:
    """The plan of the hold, and its config with the source addresses the plan needs."""
    from dataclasses import replace

    from tippingpoint.limits import file_max, memory_available, port_range
    from tippingpoint.plan import plan_with_sources

    origin = config.target.origin
    plan, laddrs = plan_with_sources(
        config.connections,
        origin.host,
        config.laddrs,
        fd_limit,
        port_range(),
        len(config.ports) or 1,
        memory_available(),
        scheme=origin.scheme,
        file_max=file_max(),
    )
    return plan, replace(config, laddrs=tuple(laddrs))


def _noun(config: HoldConfig) -> str:
    """What the hold's connections are called: connections, MQTT sessions, WebSockets."""
    from tippingpoint.plan import costs_of

    return costs_of(config.target.origin.scheme).noun


def _start_line(config: HoldConfig, processes: int, soft: int, plan: ConnectionPlan) -> str:
    laddrs = config.laddrs
    sources = (
        f"{len(laddrs)} source address(es) {laddrs[0]}-{laddrs[-1]}"
        if laddrs
        else "1 source address"
    )
    return (
        f"tippingpoint hold: {config.connections:,} {_noun(config)} in {processes} process(es) "
        f"(open-file limit {soft:,}), {sources}, {len(config.ports) or 1} destination "
        f"port(s), {config.connect_rate:,.0f}/s; about {plan.memory_bytes / 2**30:.1f} "
        "GiB with the server's side and the kernel's"
    )
