"""The ``--cluster`` options that attack, hold and sweep share, and where their load
runs: chosen once, in :func:`load_of`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from tippingpoint.cli.base import fail

if TYPE_CHECKING:
    from tippingpoint.cluster.fleet import Fleet
    from tippingpoint.engine.runner import Load


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


@contextmanager
def load_of(opts: dict[str, Any], command: str, fd_limit: int | None = None) -> Iterator[Load]:
    """Where ``command``'s load runs, for the ``with`` block: this machine's processes
    (within ``fd_limit`` open files), or with ``--cluster`` the workers of a Dask cluster
    (:func:`fleet_of`). The command calls its ``attack`` or ``hold`` and never asks which.
    Its records also go to a live page's tap (``--web``)."""
    from tippingpoint.tap import Tapped

    if not opts.get("cluster"):
        from tippingpoint.engine.runner import Local

        yield Tapped(Local(fd_limit))
        return
    with fleet_of(opts, command) as fleet:
        yield Tapped(fleet)


@contextmanager
def fleet_of(opts: dict[str, Any], command: str) -> Iterator[Fleet]:
    """The fleet of ``opts["cluster"]``, surveyed, for the ``with`` block; its log lines
    go to stderr as ``command``'s. A fleet that cannot be used, or a run it cannot go on
    with, ends the command with one line (exit 1)."""
    from tippingpoint import interrupt
    from tippingpoint.cluster import ClusterError
    from tippingpoint.cluster.fleet import Fleet
    from tippingpoint.pacer import parse_duration

    def log(line: str) -> None:
        click.echo(f"tippingpoint {command}: {line}", err=True)

    try:
        security = None
        if opts.get("cluster_certs"):
            from tippingpoint.cluster.certs import client_security

            security = client_security(opts["cluster_certs"])
        fleet = Fleet(
            opts["cluster"],
            log,
            insecure=bool(opts.get("insecure_cluster")),
            max_skew=parse_duration(opts.get("max_clock_skew") or "50ms"),
            security=security,
            per_worker=opts.get("processes"),
        )
        # Ctrl-C, once or twice, at any moment: noted, and the run stops its shards at
        # its next poll (a KeyboardInterrupt inside Dask's calls could be lost or break
        # its locks); one that comes while the fleet is surveyed starts nothing.
        with interrupt.catching(), fleet:
            if interrupt.requested():
                raise KeyboardInterrupt
            yield fleet
    except (ClusterError, ValueError) as e:
        fail(str(e), 1)
