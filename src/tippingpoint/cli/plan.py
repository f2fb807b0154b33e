"""`tippingpoint plan`: the fleet N connections through HAProxy need, on paper."""

from __future__ import annotations

import math
import os
import re
import resource
from typing import Any

import click

from tippingpoint.cli.base import cli, fail
from tippingpoint.cli.fleet import cluster_options

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``64GiB``, ``64G``, ``512MiB`` -> bytes (powers of 1024)."""
    found = _SIZE.match(text)
    if not found:
        raise ValueError(f"bad size {text!r}: use e.g. 64GiB or 512MiB")
    unit = (found[2] or "B").upper()[0]
    return int(float(found[1]) * 1024 ** "BKMGT".index(unit))


_SCHEMES = {
    (False, False): "http",
    (False, True): "https",
    (True, False): "mqtt",
    (True, True): "mqtts",
}
"""The scheme of a plan by its flags (--mqtt, --tls)."""


def _this_memory() -> str:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{total / 2**30:.0f}GiB"


@cli.command("plan")
@click.option("--connections", type=int, required=True, help="Concurrent connections to hold.")
@click.option("--tls", is_flag=True, help="TLS terminated by HAProxy.")
@click.option("--mqtt", is_flag=True, help="MQTT sessions (with --tls: MQTT over TLS).")
@click.option(
    "--key",
    type=click.Choice(["ecdsa", "rsa"]),
    default="ecdsa",
    show_default=True,
    help="--tls: HAProxy's key type (it decides most of a handshake's CPU).",
)
@click.option(
    "--requests",
    is_flag=True,
    help="The connections send requests (HTTP): HAProxy holds a backend leg for each.",
)
@click.option(
    "--connect-rate", type=float, default=1000.0, show_default=True, help="Opens per second."
)
@click.option("--client-cores", type=int, default=None, help="[default: this machine's]")
@click.option("--client-memory", default=None, help="e.g. 64GiB [default: this machine's]")
@click.option("--proxy-cores", type=int, default=None, help="[default: this machine's]")
@click.option("--proxy-memory", default=None, help="[default: this machine's]")
@click.option("--backend-cores", type=int, default=None, help="[default: this machine's]")
@click.option("--backend-memory", default=None, help="[default: this machine's]")
@click.option(
    "--open-files",
    type=int,
    default=None,
    help="Per-process open-file limit on every machine [default: this machine's hard limit].",
)
@click.option(
    "--destination-ports",
    type=int,
    default=1,
    show_default=True,
    help="HAProxy address:port pairs the clients spread over.",
)
@cluster_options
def plan(
    connections: int,
    tls: bool,
    mqtt: bool,
    key: str,
    requests: bool,
    connect_rate: float,
    client_cores: int | None,
    client_memory: str | None,
    proxy_cores: int | None,
    proxy_memory: str | None,
    backend_cores: int | None,
    backend_memory: str | None,
    open_files: int | None,
    destination_ports: int,
    cluster: str | None,
    **opts: Any,
) -> None:
    """The machines N connections through HAProxy need: client machines, HAProxy
    instances and memory, backend processes, source addresses; each figure explained.

    Machines default to this one's size; e.g. the article's question:
    tippingpoint plan --connections 2000000 --tls --client-cores 32 --client-memory 64GiB

    With --cluster, each machine of a Dask cluster first: its share of the connections
    (the fleet deals them evenly over the workers), planned with its own cores, memory
    and open-file limit; exit 1 when one cannot hold its share.
    """
    from tippingpoint.fleetplan import Machine, plan_fleet
    from tippingpoint.limits import port_range
    from tippingpoint.plan import costs_of

    cores = os.cpu_count() or 1
    files = open_files or resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    scheme = _SCHEMES[mqtt, tls]
    if requests and costs_of(scheme).backend_leg:
        fail(f"--requests is for HTTP: {costs_of(scheme).noun} always hold their backend leg")
        return
    try:
        if files < 256:
            raise ValueError("--open-files: at least 256")
        if not (math.isfinite(connect_rate) and connect_rate > 0):
            raise ValueError(f"--connect-rate {connect_rate:g}: give opens per second, e.g. 1000")
        if connections < 1:
            raise ValueError(f"--connections {connections}: give 1 or more")

        def machine(c: int | None, m: str | None) -> Machine:
            if c is not None and c < 1:
                raise ValueError("cores: at least 1")
            return Machine(c or cores, parse_size(m or _this_memory()), files)

        result = plan_fleet(
            connections,
            machine(client_cores, client_memory),
            machine(proxy_cores, proxy_memory),
            machine(backend_cores, backend_memory),
            scheme=scheme,
            key=key,
            idle=not requests,
            connect_rate=connect_rate,
            port_range=port_range(),
            destination_ports=destination_ports,
        )
    except ValueError as e:
        fail(str(e))
        return
    short = 0
    if cluster:
        how = {"key": key, "idle": not requests, "destination_ports": destination_ports}
        short = _per_host(
            {**opts, "cluster": cluster}, connections, result, machine(None, None), how
        )
    click.echo(result.render(), nl=False)
    if short:
        fail(f"{short} machine(s) of the cluster cannot hold their share: see above", 1)


def _per_host(
    opts: dict[str, Any], connections: int, whole: Any, default: Any, how: dict[str, Any]
) -> int:
    """Each machine of the cluster with its share of ``connections``, planned with its
    own figures (as ``whole`` was planned); the number of machines that fall short."""
    from collections import Counter

    from tippingpoint.cli.fleet import fleet_of
    from tippingpoint.fleetplan import Machine, plan_fleet

    with fleet_of(opts, "plan") as fleet:
        workers = Counter(fleet.facts[w].host for w in fleet.workers)
        facts = {fleet.facts[w].host: fleet.facts[w] for w in fleet.workers}
    total = sum(workers.values())
    short = 0
    click.echo(f"Per machine of the cluster ({total} worker(s) on {len(workers)} machine(s)):")
    for host, count in sorted(workers.items()):
        f = facts[host]
        share = connections * count // total
        machine = Machine(f.cores, f.memory_available or default.memory, f.nofile_hard)
        mine = plan_fleet(
            max(share, 1), machine, default, default, scheme=whole.scheme,
            connect_rate=max(whole.connect_rate * share / connections, 1e-3),
            port_range=f.port_range, **how,
        )  # fmt: skip
        fits = mine.client_machines <= 1
        short += not fits
        click.echo(
            f"  {host}: {count} worker(s), {machine.describe()} available: {share:,} "
            f"connections in {mine.client_processes} process(es) from "
            f"{mine.source_addresses} source address(es), {mine.client_memory / 2**30:.2f} GiB"
            + ("" if fits else f": SHORT, its share needs {mine.client_machines} machines like it")
        )
    return short
