"""Certificates for a cluster that is not on loopback (``tippingpoint cluster certs``).

A Dask scheduler runs whatever it is sent, so every party proves who it is: one CA,
a certificate for the scheduler and the workers (``node``), one for the clients that
submit runs (``client``); Dask's TLS asks each end for the other's certificate, signed
by the CA (mutual authentication). Keys are written 0600. ``dask.yaml`` points Dask's
own configuration at the files, for ``dask scheduler`` and ``dask worker`` (``DASK_CONFIG``
set to the directory).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509

from tippingpoint.certs import issue, new_key, pem, write_private

__all__ = ["FILES", "client_security", "make_cluster_certs", "node_security"]

FILES = ("ca.pem", "ca-key.pem", "node.pem", "node-key.pem", "client.pem", "client-key.pem")


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in [*hosts, "localhost", "127.0.0.1"]:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return list(dict.fromkeys(out))


def make_cluster_certs(directory: Path, hosts: list[str], days: int = 365) -> list[Path]:
    """Write the CA, the node and client certificates and keys, and ``dask.yaml``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = new_key()
    ca = issue("tippingpoint cluster CA", [], ca_key, ca=True, days=days)
    written = []
    made = [("ca", ca, ca_key)]
    made += [(role, *_signed(role, hosts, ca, ca_key, days)) for role in ("node", "client")]
    for name, cert, key in made:
        cert_pem, key_pem = pem(cert, key)
        (directory / f"{name}.pem").write_bytes(cert_pem)
        write_private(directory / f"{name}-key.pem", key_pem)
        written += [directory / f"{name}.pem", directory / f"{name}-key.pem"]
    d = directory.resolve()
    config = directory / "dask.yaml"
    config.write_text(
        "# Dask's TLS with mutual authentication, from `tippingpoint cluster certs`.\n"
        "# On each machine: DASK_CONFIG=<this directory> dask scheduler|worker ...\n"
        "distributed:\n"
        "  comm:\n"
        "    require-encryption: true\n"
        "    tls:\n"
        f"      ca-file: {d / 'ca.pem'}\n"
        f"      scheduler: {{cert: {d / 'node.pem'}, key: {d / 'node-key.pem'}}}\n"
        f"      worker: {{cert: {d / 'node.pem'}, key: {d / 'node-key.pem'}}}\n"
        f"      client: {{cert: {d / 'client.pem'}, key: {d / 'client-key.pem'}}}\n"
    )
    return [*written, config]


def _signed(
    role: str, hosts: list[str], ca: x509.Certificate, ca_key: Any, days: int
) -> tuple[x509.Certificate, Any]:
    key = new_key()
    return issue(f"tippingpoint cluster {role}", _names(hosts), key, ca, ca_key, days=days), key


def _check(directory: Path, names: tuple[str, ...]) -> None:
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise ValueError(
            f"{directory}: no {', '.join(missing)}: make them with tippingpoint cluster certs "
            f"{directory}"
        )


def client_security(directory: str | Path) -> Any:
    """Dask's ``Security`` for a client of the cluster (a run's submitter)."""
    from distributed.security import Security

    d = Path(directory)
    _check(d, ("ca.pem", "client.pem", "client-key.pem"))
    return Security(
        tls_ca_file=str(d / "ca.pem"),
        tls_client_cert=str(d / "client.pem"),
        tls_client_key=str(d / "client-key.pem"),
        require_encryption=True,
    )


def node_security(directory: str | Path) -> Any:
    """Dask's ``Security`` for the scheduler and the workers."""
    from distributed.security import Security

    d = Path(directory)
    _check(d, ("ca.pem", "node.pem", "node-key.pem", "client.pem", "client-key.pem"))
    node, key = str(d / "node.pem"), str(d / "node-key.pem")
    return Security(
        tls_ca_file=str(d / "ca.pem"),
        tls_scheduler_cert=node,
        tls_scheduler_key=key,
        tls_worker_cert=node,
        tls_worker_key=key,
        tls_client_cert=str(d / "client.pem"),
        tls_client_key=str(d / "client-key.pem"),
        require_encryption=True,
    )
