"""`tippingpoint cluster`: the machines a run is spread over (Dask distributed)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from tippingpoint.cli.base import cli, fail


@cli.group()
def cluster() -> None:
    """Dask clusters for --cluster (pip install 'tippingpoint[cluster]')."""


def _until_stopped(spec: Any, lines: list[str]) -> None:
    """Print the scheduler's address first, then ``lines``; run until Ctrl-C/SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        click.echo(spec.scheduler_address, nl=True)
        for line in lines:
            click.echo(line, err=True)
        click.echo("tippingpoint cluster: running until Ctrl-C", err=True)
        while not stop.wait(0.5):
            pass
    finally:
        spec.close(timeout=10)


def _node_security(certs: str | None) -> Any:
    if certs is None:
        return None
    from tippingpoint.cluster.certs import node_security

    return node_security(certs)


@cluster.command("local")
@click.option("--workers", type=int, default=3, show_default=True, help="Worker processes.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Scheduler port  [default: any free one].",
)
@click.option(
    "--certs",
    type=click.Path(file_okay=False),
    default=None,
    help="TLS with mutual authentication, with these certificates (tippingpoint cluster certs).",
)
@click.option(
    "--hosts",
    default=None,
    help="Comma-separated names: one worker each, standing for a host of a lab "
    "([hosts] of a bench scenario), on its own address 127.0.K.1.",
)
def local(workers: int, port: int, certs: str | None, hosts: str | None) -> None:
    """A scheduler and N workers on this machine, until Ctrl-C.

    The first line is the scheduler's address, for --cluster. Each worker has its own
    source addresses (127.0.K.2-127.0.K.254 for worker K).
    """
    from tippingpoint.cluster import ClusterError
    from tippingpoint.cluster.local import local_cluster, worker_laddrs

    names = [n.strip() for n in hosts.split(",") if n.strip()] if hosts else []
    try:
        if port:
            _check_free(port)
        spec = local_cluster(names or workers, port, _node_security(certs))
    except (ClusterError, ValueError, OSError) as e:
        fail(str(e))
        return
    _until_stopped(
        spec,
        [
            f"worker {names[k] if names else k}: source addresses {worker_laddrs(k)}"
            + (f", host address 127.0.{k + 1}.1" if names else "")
            for k in range(len(names) or workers)
        ],
    )


def _check_free(port: int) -> None:
    """The scheduler's port, free on loopback (Dask would log a traceback per try)."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as e:
            raise ValueError(
                f"--port {port}: {e.strerror} on 127.0.0.1: give another, or leave --port out "
                "for a free one"
            ) from None


@cluster.command("ssh")
@click.argument("hosts", nargs=-1, required=True)
@click.option(
    "--workers-per-host",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes per host (one thread each).",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8786, show_default=True, help="Scheduler port."
)
@click.option(
    "--certs",
    type=click.Path(file_okay=False),
    default=None,
    help="TLS with mutual authentication (tippingpoint cluster certs; the same directory "
    "on every host).",
)
@click.option(
    "--python", "remote_python", default=None, help="Python on the hosts [default: python3]."
)
@click.option("--ssh-port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--ssh-user", default=None, help="[default: yours]")
@click.option(
    "--ssh-key",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Private key to log in with [default: ~/.ssh's].",
)
@click.option(
    "--known-hosts",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Host keys to trust [default: ~/.ssh/known_hosts].",
)
@click.option(
    "--insecure-cluster",
    is_flag=True,
    help="Allow a plaintext scheduler that is not on loopback.",
)
def ssh(
    hosts: tuple[str, ...],
    workers_per_host: int,
    port: int,
    certs: str | None,
    remote_python: str | None,
    ssh_port: int,
    ssh_user: str | None,
    ssh_key: str | None,
    known_hosts: str | None,
    insecure_cluster: bool,
) -> None:
    """Dask's SSHCluster: the scheduler on the first HOST, workers on every other one,
    until Ctrl-C.

    Each host needs SSH access and tippingpoint installed (with the cluster extra).
    The first line is the scheduler's address, for --cluster.
    """
    from tippingpoint.cluster import ClusterError
    from tippingpoint.cluster.address import check_address
    from tippingpoint.cluster.ssh import ssh_cluster

    if len(hosts) < 2:
        fail("give the scheduler's host, then one or more worker hosts (the same host may repeat)")
        return
    scheme = "tls" if certs else "tcp"
    try:
        _, warning = check_address(f"{scheme}://{hosts[0]}:{port}", insecure_cluster)
        if warning:
            click.echo(f"tippingpoint cluster: warning: {warning}", err=True)
        spec = ssh_cluster(
            list(hosts),
            workers_per_host,
            port,
            _node_security(certs),
            remote_python,
            ssh_port,
            ssh_user,
            ssh_key,
            known_hosts,
        )
    except (ClusterError, ValueError, OSError) as e:
        fail(str(e))
        return
    _until_stopped(spec, [f"workers on: {', '.join(hosts[1:])}"])


@cluster.command("certs")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="A name or address the scheduler and workers are reached by (repeat).",
)
@click.option("--days", type=int, default=365, show_default=True, help="Validity.")
def certs(directory: str, hosts: tuple[str, ...], days: int) -> None:
    """A CA and certificates for a cluster with TLS and mutual authentication.

    Writes ca.pem, node.pem (scheduler and workers), client.pem (whoever submits runs),
    their keys (0600) and dask.yaml. Copy the directory to every machine, at the same
    path; then `cluster local|ssh --certs DIR`, or DASK_CONFIG=DIR dask scheduler|worker,
    and --cluster tls://HOST:PORT --cluster-certs DIR.
    """
    from tippingpoint.cluster.certs import make_cluster_certs

    for path in make_cluster_certs(Path(directory), list(hosts), days):
        click.echo(str(path))
