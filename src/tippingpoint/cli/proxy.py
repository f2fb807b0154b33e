"""`tippingpoint proxy` (and `proxy stats`): real HAProxy in front of the backends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from tippingpoint.cli.base import cli, fail

if TYPE_CHECKING:
    from pathlib import Path

    from tippingpoint.proxy.config import ProxyConfig
    from tippingpoint.proxy.instance import ProxyFleet


def _parse_addr(spec: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"{spec!r}: use HOST:PORT or PORT")
    return (host.strip("[]") if sep and host else default_host), int(port)


def _parse_backends(spec: str) -> tuple[tuple[str, int], ...]:
    """``127.0.0.1:8282-8291,127.0.0.2:9000`` -> addresses."""
    from tippingpoint.server.config import parse_ports

    out: list[tuple[str, int]] = []
    for part in spec.split(","):
        host, sep, ports = part.strip().rpartition(":")
        try:
            out.extend((host if sep else "127.0.0.1", p) for p in parse_ports(ports))
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return tuple(out)


@cli.group(invoke_without_command=True)
@click.option(
    "--backends",
    default="127.0.0.1:8282-8291",
    show_default=True,
    help="Backend servers: HOST:PORTS, comma-separated (the serve ports).",
)
@click.option(
    "--http",
    "http_addr",
    default=None,
    help="HTTP frontend address ('' for none)  "
    "[default: 127.0.0.1:8080, none with --mqtt/--mqtts].",
)
@click.option(
    "--https",
    "https_addr",
    default=None,
    help="TLS frontend address ('' for none)  [default: 127.0.0.1:8443, none with --mqtt/--mqtts].",
)
@click.option("--mqtt", "mqtt_addr", default=None, help="MQTT frontend (TCP mode), e.g. 1883.")
@click.option(
    "--mqtts",
    "mqtts_addr",
    default=None,
    help="MQTT frontend with TLS terminated by HAProxy, e.g. 8883.",
)
@click.option(
    "--mqtt-backends",
    default="127.0.0.1:18830",
    show_default=True,
    help="MQTT backends: HOST:PORTS (serve --mqtt ports or mosquitto instances).",
)
@click.option(
    "--mqtt-balance",
    type=click.Choice(["client-id", "username", "roundrobin"]),
    default="client-id",
    show_default=True,
    help="Which MQTT backend a session goes to: round robin, then a stick table on its "
    "CONNECT's client id (a client stays on one broker) or user name (a publisher and its "
    "subscribers meet on one broker), or round robin only.",
)
@click.option(
    "--no-mqtt-validate",
    is_flag=True,
    help="Let any first packet through (no mqtt_is_valid check on the CONNECT).",
)
@click.option(
    "--mqtt-timeout",
    default=None,
    help="Idle time allowed to an MQTT session, >= 1.5x its keepalive  [default: --timeout].",
)
@click.option(
    "--cert-type",
    type=click.Choice(["ecdsa", "rsa"]),
    default="ecdsa",
    show_default=True,
    help="Generated certificate: ECDSA P-256 or RSA 2048.",
)
@click.option("--threads", type=int, default=1, show_default=True, help="nbthread.")
@click.option(
    "--cpus",
    default=None,
    help="Run HAProxy on these CPUs, e.g. 1 or 0-1: set when it starts, threads spread "
    "over them, read back from /proc.",
)
@click.option(
    "--instances",
    type=int,
    default=1,
    show_default=True,
    help="HAProxy processes sharing the ports (SO_REUSEPORT).",
)
@click.option(
    "--maxconn", type=int, default=None, help="Per instance  [default: from the open-file limit]."
)
@click.option(
    "--timeout",
    "timeout_s",
    default="2h",
    show_default=True,
    help="Client and server timeouts (long, as the article needed).",
)
@click.option("--rate-limit", type=int, default=None, help="rate-limit sessions N.")
@click.option(
    "--http-reuse",
    type=click.Choice(["never", "safe", "aggressive", "always"]),
    default=None,
    help="Backend connection sharing  [default: HAProxy's, safe].",
)
@click.option(
    "--log",
    "log_requests",
    is_flag=True,
    help="Log requests with the article's timer fields (instance log files).",
)
@click.option("--no-checks", is_flag=True, help="No health checks on the backends.")
@click.option(
    "--dir",
    "workdir",
    default="./tippingpoint-proxy",
    show_default=True,
    help="Where configs, certificate, sockets and logs go.",
)
@click.option("--haproxy-bin", default=None, help="HAProxy executable  [default: haproxy].")
@click.option("--print-config", is_flag=True, help="Print the configuration and exit.")
@click.option(
    "--share-ports",
    is_flag=True,
    help="Start even where another process listens on the frontend ports.",
)
@click.pass_context
def proxy(
    ctx: click.Context,
    /,
    workdir: str,
    instances: int,
    haproxy_bin: str | None,
    print_config: bool,
    share_ports: bool,
    **opts: Any,
) -> None:
    """Run real HAProxy in front of the backends (HTTP and TLS) until Ctrl-C.

    SIGHUP reloads: new HAProxy processes take the ports over, the old ones finish
    their connections."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"workdir": workdir}
        return
    from pathlib import Path

    from tippingpoint.proxy.config import render
    from tippingpoint.proxy.instance import HAProxyError, ProxyFleet, find_haproxy

    try:
        directory = Path(workdir).resolve()
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"--dir {workdir}: a file is there: give a directory")
        config = _proxy_config(directory, opts)
        if print_config:
            click.echo(render(config), nl=False)
            return
        fleet = ProxyFleet(
            find_haproxy(haproxy_bin), directory, config, instances, share_ports=share_ports
        )
        fleet.start()
    except (ValueError, click.BadParameter, HAProxyError) as e:
        fail(str(e))
        return
    click.echo(_started(fleet, directory), err=True)
    stopped = fleet.run(lambda event: click.echo(f"tippingpoint proxy: {event}", err=True))
    if not stopped:
        fail("HAProxy exited; see the logs in " + str(directory), 1)


_WEB_DEFAULTS = {"http": "127.0.0.1:8080", "https": "127.0.0.1:8443"}
"""The frontends of a proxy asked for nothing else (or HTTP alone)."""


def _proxy_config(directory: Path, opts: dict[str, Any]) -> ProxyConfig:
    """HAProxy's config from the options (ValueError, BadParameter when one is bad); the
    certificate is made where TLS is served."""
    import resource

    from tippingpoint.certs import make_certificate
    from tippingpoint.pacer import parse_duration
    from tippingpoint.proxy.config import Frontend, MQTTRouting, ProxyConfig, derive_maxconn
    from tippingpoint.schemes import SCHEMES
    from tippingpoint.server.config import parse_cpus

    given = {scheme: opts[f"{scheme}_addr"] for scheme in ("http", "https", "mqtt", "mqtts")}
    if all(given[s] is None for s in given if s not in _WEB_DEFAULTS):
        # Only HTTP asked for, or nothing: HTTP and TLS, each on its default where not given.
        given = {s: _WEB_DEFAULTS.get(s) if a is None else a for s, a in given.items()}
    frontends = tuple(Frontend(s, _parse_addr(a)) for s, a in given.items() if a)
    bundle = None
    if any(SCHEMES[f.scheme].tls for f in frontends):
        bundle = make_certificate(directory / "tls", opts["cert_type"])[2]
    timeout = parse_duration(opts["timeout_s"])
    servers = {"http": opts["backends"], "mqtt": opts["mqtt_backends"]}
    mqtt_timeout = parse_duration(opts["mqtt_timeout"]) if opts["mqtt_timeout"] else None
    return ProxyConfig(
        servers={app: _parse_backends(servers[app]) for app in {f.app for f in frontends}},
        frontends=frontends,
        mqtt=MQTTRouting(opts["mqtt_balance"], not opts["no_mqtt_validate"], mqtt_timeout),
        cert_bundle=bundle,
        maxconn=opts["maxconn"] or derive_maxconn(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
        nbthread=opts["threads"],
        cpus=parse_cpus(opts["cpus"]) if opts["cpus"] else (),
        timeout_client_s=timeout,
        timeout_server_s=timeout,
        rate_limit_sessions=opts["rate_limit"],
        http_reuse=opts["http_reuse"],
        log=opts["log_requests"],
        health_checks=not opts["no_checks"],
        stats_socket=directory / "haproxy-0.sock",
    )


def _started(fleet: ProxyFleet, directory: Path) -> str:
    """The start line: the instances, where they run (read from /proc), what they serve."""
    from tippingpoint.placement import cpu_list, cpus_of

    config = fleet.config
    listening = ", ".join(str(f) for f in config.frontends)
    where = f" on CPUs {cpu_list(cpus_of(fleet.pids))} (read from /proc)" if config.cpus else ""
    servers = sum(len(s) for s in config.servers.values())
    return (
        f"tippingpoint proxy: {fleet.instances} HAProxy instance(s) (pids {fleet.pids}){where} "
        f"on {listening} -> {servers} backends; config and sockets in {directory}"
    )


@proxy.command("stats")
@click.option("--dir", "workdir", default=None, help="The proxy's directory.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of tables.")
@click.pass_context
def proxy_stats(ctx: click.Context, workdir: str | None, as_json: bool) -> None:
    """Show HAProxy's counters (show info, show stat) from every instance's socket."""
    import json
    from pathlib import Path

    from tippingpoint.proxy.stats import show_info, show_stat, sum_info

    directory = Path(workdir or ctx.obj["workdir"])
    sockets = sorted(directory.glob("haproxy-*.sock"))
    if not sockets:
        fail(f"no HAProxy stats sockets in {directory}: start `tippingpoint proxy` first")
        return
    try:
        infos = [show_info(path) for path in sockets]
        stats = [show_stat(path) for path in sockets]
    except OSError as e:
        fail(f"cannot read the stats sockets in {directory}: {e} (is the proxy running?)")
        return
    total = sum_info(infos)
    if as_json:
        click.echo(json.dumps({"total": total, "instances": infos, "stat": stats}))
        return
    click.echo(
        "instances "
        + str(len(infos))
        + ": "
        + ", ".join(f"pid {i.get('Pid')} idle {i.get('Idle_pct')}%" for i in infos)
    )
    for name in ("CurrConns", "ConnRate", "SessRate", "SslRate", "CurrSslConns", "CumReq"):
        click.echo(f"{name:14s} {total[name]:,.0f}")
    click.echo(
        f"{'name':24s} {'status':8s} {'scur':>7s} {'stot':>9s} {'req_tot':>9s} "
        f"{'bin':>12s} {'bout':>12s}"
    )
    rows: dict[tuple[str, str], dict[str, float]] = {}
    status: dict[tuple[str, str], str] = {}
    for instance in stats:
        for row in instance:
            key = (row["pxname"], row["svname"])
            acc = rows.setdefault(key, {})
            for field in ("scur", "stot", "req_tot", "bin", "bout"):
                acc[field] = acc.get(field, 0) + float(row.get(field) or 0)
            status[key] = row.get("status", "")
    for (px, sv), acc in rows.items():
        click.echo(
            f"{px + '/' + sv:24s} {status[(px, sv)]:8s} {acc['scur']:7,.0f} "
            f"{acc['stot']:9,.0f} {acc['req_tot']:9,.0f} {acc['bin']:12,.0f} "
            f"{acc['bout']:12,.0f}"
        )
