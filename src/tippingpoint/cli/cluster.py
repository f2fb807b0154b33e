"""`tippingpoint cluster`: start the machines a run is spread over (Dask distributed)."""

from __future__ import annotations

import signal
import threading

import click

from tippingpoint.cli.base import cli, fail


@cli.group()
def cluster() -> None:
    """Dask clusters for --cluster (pip install 'tippingpoint[cluster]')."""


@cluster.command("local")
@click.option("--workers", type=int, default=3, show_default=True, help="Worker processes.")
@click.option("--port", type=int, default=0, help="Scheduler port  [default: any free one].")
def local(workers: int, port: int) -> None:
    """A scheduler and N workers on this machine, until Ctrl-C.

    The first line is the scheduler's address, for --cluster. Each worker has its own
    source addresses (127.0.K.2-127.0.K.254 for worker K).
    """
    from tippingpoint.cluster import ClusterError
    from tippingpoint.cluster.local import local_cluster, worker_laddrs

    try:
        spec = local_cluster(workers, port)
    except (ClusterError, ValueError, OSError) as e:
        fail(str(e))
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        click.echo(spec.scheduler_address, nl=True)
        for k in range(workers):
            click.echo(f"worker {k}: source addresses {worker_laddrs(k)}", err=True)
        click.echo("tippingpoint cluster: running until Ctrl-C", err=True)
        while not stop.wait(0.5):
            pass
    finally:
        spec.close(timeout=10)
