"""`tippingpoint serve`: the ping/pong backend."""

from __future__ import annotations

import sys

import click

from tippingpoint.cli.base import cli, fail


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--ports",
    default=None,
    help="HTTP ports: ranges and lists, e.g. 8282-8291,9000 (the article ran 10 per machine)  "
    "[default: 8282, or none with --mqtt].",
)
@click.option(
    "--mqtt",
    "mqtt_ports",
    default=None,
    help="MQTT ports (3.1.1 and 5), e.g. 1883: PUBLISH to ping/... is answered with pong on "
    "pong/<client id> or the response topic.",
)
@click.option(
    "--mqtt-max-packet",
    type=int,
    default=1024 * 1024,
    show_default=True,
    help="Largest MQTT packet in bytes; larger gets DISCONNECT 0x95 (MQTT 5) or a close.",
)
@click.option(
    "--ws",
    is_flag=True,
    help="Take WebSocket upgrades on the HTTP ports: each message gets 'pong' "
    "('ping sleep=N times=K' as the headers); with subprotocol mqtt, MQTT in binary messages.",
)
@click.option(
    "--processes",
    type=int,
    default=None,
    help="Worker processes sharing every port with SO_REUSEPORT  [default: cores].",
)
@click.option(
    "--cpus",
    default=None,
    help="Run every process on these CPUs, e.g. 1 or 0-1 (read back from /proc once up)  "
    "[default: where it was started].",
)
@click.option(
    "--idle-timeout",
    type=float,
    default=3600.0,
    show_default=True,
    help="Seconds an idle keep-alive connection stays open (the article's server.timeout).",
)
@click.option(
    "--header-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to receive a request's headers once it has begun (slowloris guard).",
)
@click.option(
    "--max-header-size",
    type=int,
    default=16384,
    show_default=True,
    help="Largest request header block in bytes; larger gets 431.",
)
@click.option(
    "--max-body-size",
    type=int,
    default=16 * 1024 * 1024,
    show_default=True,
    help="Largest request body in bytes; larger gets 413.",
)
@click.option(
    "--max-connections",
    type=int,
    default=None,
    help="Connections per process before it stops accepting  [default: open-file limit].",
)
@click.option("--backlog", type=int, default=4096, show_default=True, help="Listen backlog.")
@click.option(
    "--loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="auto",
    show_default=True,
    help="Event loop.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus text on this port.",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
@click.option("--statsd", default=None, help="Send a request counter to statsd at host:port.")
@click.option(
    "--statsd-metric",
    default="tippingpoint.serve.requests",
    show_default=True,
    help="Counter name sent to statsd.",
)
@click.option(
    "--share-ports",
    is_flag=True,
    help="Start even where another process listens on the ports (the kernel then splits "
    "the connections between them).",
)
def serve(
    host: str,
    ports: str | None,
    mqtt_ports: str | None,
    mqtt_max_packet: int,
    ws: bool,
    processes: int | None,
    cpus: str | None,
    idle_timeout: float,
    header_timeout: float,
    max_header_size: int,
    max_body_size: int,
    max_connections: int | None,
    backlog: int,
    loop: str,
    metrics_port: int | None,
    metrics_host: str,
    statsd: str | None,
    statsd_metric: str,
    share_ports: bool,
) -> None:
    """Run the ping/pong backend: any request gets 200 "pong".

    A `sleep: N` header waits a random whole number of ms in [0, N+1] before the
    first pong; `times: K` writes K more pongs, each after its own random pause
    (chunked). With --mqtt, the same over MQTT (user properties sleep/times, or a
    topic suffix /sleep=N/times=K). With --ws, the same over WebSocket: a message
    `ping sleep=N times=K` (RFC 6455; subprotocol mqtt carries MQTT). Stops cleanly
    on Ctrl-C or SIGTERM.
    """
    from tippingpoint.server import ServeConfig, ServeError
    from tippingpoint.server import serve as run_serve
    from tippingpoint.server.config import (
        default_processes,
        parse_cpus,
        parse_hostport,
        parse_ports,
    )

    try:
        placed = parse_cpus(cpus) if cpus else ()
        if processes is None:
            processes = len(placed) if placed else default_processes()
        config = ServeConfig(
            host=host,
            ports=parse_ports(ports) if ports else () if mqtt_ports else (8282,),
            mqtt_ports=parse_ports(mqtt_ports) if mqtt_ports else (),
            mqtt_max_packet=mqtt_max_packet,
            ws=ws,
            processes=processes,
            cpus=placed,
            idle_timeout=idle_timeout,
            header_timeout=header_timeout,
            max_header=max_header_size,
            max_body=max_body_size,
            max_connections=max_connections,
            backlog=backlog,
            loop=loop,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            statsd=parse_hostport(statsd) if statsd else None,
            statsd_metric=statsd_metric,
            share_ports=share_ports,
        )
    except ValueError as e:
        fail(str(e))
        return
    try:
        code = run_serve(config)
    except ServeError as e:
        fail(str(e))
        return
    sys.exit(code)
