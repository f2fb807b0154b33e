"""`tippingpoint cluster ssh`: Dask's ``SSHCluster``, a scheduler and workers started
over SSH (``asyncssh``), one thread per worker process.

The remote processes cannot be handed Python objects, only Dask's configuration, which
``SSHCluster`` passes on to them: TLS is therefore set in the configuration, with the
certificate files at the same paths on every host.
"""

from __future__ import annotations

from typing import Any

from tippingpoint.cluster import require_dask

__all__ = ["ssh_cluster"]


def ssh_cluster(
    hosts: list[str],
    workers_per_host: int,
    port: int,
    security: Any = None,
    remote_python: str | None = None,
    ssh_port: int = 22,
    ssh_user: str | None = None,
    ssh_key: str | None = None,
    known_hosts: str | None = None,
) -> Any:
    """A started SSHCluster: the scheduler on ``hosts[0]``, workers on the others."""
    require_dask()
    import dask
    from distributed import SSHCluster

    from tippingpoint.cluster.local import QUIET

    if workers_per_host < 1:
        raise ValueError("--workers-per-host must be >= 1")
    dask.config.set(QUIET)  # passed on to the remote processes with the rest
    protocol = "tcp"
    if security is not None:
        protocol = "tls"
        dask.config.set(
            {
                "distributed.comm.require-encryption": True,
                "distributed.comm.tls.ca-file": security.tls_ca_file,
                "distributed.comm.tls.scheduler.cert": security.tls_scheduler_cert,
                "distributed.comm.tls.scheduler.key": security.tls_scheduler_key,
                "distributed.comm.tls.worker.cert": security.tls_worker_cert,
                "distributed.comm.tls.worker.key": security.tls_worker_key,
                "distributed.comm.tls.client.cert": security.tls_client_cert,
                "distributed.comm.tls.client.key": security.tls_client_key,
            }
        )
    connect: dict[str, Any] = {"port": ssh_port}
    if ssh_user:
        connect["username"] = ssh_user
    if ssh_key:
        connect["client_keys"] = [ssh_key]
    if known_hosts:
        connect["known_hosts"] = known_hosts
    try:
        return SSHCluster(
            hosts,
            connect_options=connect,
            worker_options={"nthreads": 1, "n_workers": workers_per_host, "protocol": protocol},
            # It listens on the address it was named by, not on every interface; the
            # workers on the address that reaches it.
            scheduler_options={
                "host": hosts[0],
                "port": port,
                "dashboard_address": None,
                "protocol": protocol,
            },
            remote_python=remote_python or "python3",
            security=security,
        )
    except Exception as e:  # asyncssh's and the remote start's errors, as one line
        raise OSError(f"cannot start the cluster over SSH: {e}") from None
