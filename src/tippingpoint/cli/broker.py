"""`tippingpoint broker`: mosquitto, configured, checked, run and stopped by the tool."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from tippingpoint.cli.base import cli, fail


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=1883,
    show_default=True,
    help="MQTT port of the first instance (instance i listens on PORT + i).",
)
@click.option(
    "--tls-port",
    type=int,
    default=None,
    help="MQTT over TLS port of the first instance, with a generated certificate "
    "(clients: mqtts://... --cacert DIR/tls/cert.pem).",
)
@click.option(
    "--instances",
    type=int,
    default=1,
    show_default=True,
    help="mosquitto processes (each is capped by the open-file limit).",
)
@click.option(
    "--max-connections",
    type=int,
    default=None,
    help="Sessions per instance  [default: what the open-file limit allows].",
)
@click.option(
    "--max-queued",
    type=int,
    default=100_000,
    show_default=True,
    help="Messages queued per session before mosquitto drops.",
)
@click.option("--key-type", type=click.Choice(["ecdsa", "rsa"]), default="ecdsa", show_default=True)
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where configurations, logs and the certificate go  [default: a temporary directory].",
)
@click.option("--mosquitto-bin", default=None, help="The mosquitto executable  [default: PATH].")
def broker(
    host: str,
    port: int,
    tls_port: int | None,
    instances: int,
    max_connections: int | None,
    max_queued: int,
    key_type: str,
    workdir: str | None,
    mosquitto_bin: str | None,
) -> None:
    """Run mosquitto as the real MQTT broker until Ctrl-C or SIGTERM.

    Persistence off, anonymous access, $SYS counters every second. mosquitto is
    one process: past its open-file limit, run several --instances.
    """
    from tippingpoint.broker import BrokerConfig, BrokerError, BrokerFleet

    try:
        config = BrokerConfig(
            host=host,
            port=port,
            tls_port=tls_port,
            instances=instances,
            max_connections=max_connections,
            max_queued=max_queued,
            key_type=key_type,
        )
        directory = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tp-broker-"))
        fleet = BrokerFleet(config, directory, mosquitto_bin)
        fleet.start()
    except (ValueError, BrokerError) as e:
        fail(str(e))
        return
    ports = ",".join(map(str, config.ports()))
    click.echo(
        f"tippingpoint broker: mosquitto pids {fleet.pids} on {host} ports {ports}", err=True
    )
    if fleet.cert is not None:
        tls = ",".join(map(str, config.tls_ports()))
        click.echo(
            f"tippingpoint broker: TLS ports {tls}; clients trust {fleet.cert} (--cacert)",
            err=True,
        )
    click.echo(f"tippingpoint broker: configuration and logs in {directory}", err=True)
    if not fleet.run():
        fail(
            "a mosquitto instance exited: "
            + "; ".join(fleet.log_tail(i) for i in range(config.instances)),
            code=1,
        )
