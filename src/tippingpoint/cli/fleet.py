"""The ``--cluster`` options that attack, hold, sweep and bench share, and the fleet
they open."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from tippingpoint.cluster.fleet import Fleet


def cluster_options(f: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "--cluster",
            default=None,
            help="Spread the run over the workers of this Dask scheduler, e.g. "
            "tcp://127.0.0.1:8786 (pip install 'tippingpoint[cluster]').",
        ),
        click.option(
            "--cluster-certs",
            type=click.Path(file_okay=False),
            default=None,
            help="--cluster: TLS with mutual authentication, with the certificates of "
            "`tippingpoint cluster certs` in this directory.",
        ),
        click.option(
            "--max-clock-skew",
            default="50ms",
            show_default=True,
            help="--cluster: refuse workers whose clock is further off than this.",
        ),
        click.option(
            "--insecure-cluster",
            is_flag=True,
            help="--cluster: accept a plaintext scheduler that is not on loopback.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def open_fleet(opts: dict[str, Any], log: Callable[[str], None]) -> Fleet:
    """The fleet of ``opts["cluster"]`` (not yet entered); ClusterError or ValueError
    when it cannot be."""
    from tippingpoint.cluster.fleet import Fleet
    from tippingpoint.pacer import parse_duration

    security = None
    if opts.get("cluster_certs"):
        from tippingpoint.cluster.certs import client_security

        security = client_security(opts["cluster_certs"])
    return Fleet(
        opts["cluster"],
        log,
        insecure=bool(opts.get("insecure_cluster")),
        max_skew=parse_duration(opts.get("max_clock_skew") or "50ms"),
        security=security,
    )
