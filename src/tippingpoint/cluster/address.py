"""Which scheduler addresses tippingpoint talks to.

A Dask scheduler runs whatever it is sent: an open one is a remote shell. A plaintext
(``tcp://``) scheduler is accepted on loopback only; elsewhere it needs TLS with mutual
authentication (``tls://``, certificates from Dask's configuration), or
``--insecure-cluster``, which warns.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from tippingpoint.cluster import ClusterError

__all__ = ["check_address", "is_loopback", "probe_scheduler"]

_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


def is_loopback(host: str) -> bool:
    """Every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_address(
    address: str, insecure: bool = False, local: Callable[[str], bool] = is_loopback
) -> tuple[str, str | None]:
    """The scheduler address to use and a warning (or None); :class:`ClusterError` for one
    that is refused. ``local`` says whether a host is this machine's loopback."""
    if "://" not in address:
        address = "tcp://" + address
    parts = urlsplit(address)
    if parts.scheme not in _SCHEMES or not parts.hostname or parts.port is None:
        raise ClusterError(
            f"--cluster {address!r}: give a Dask scheduler address, e.g. tcp://127.0.0.1:8786 "
            "or tls://scheduler.example:8786"
        )
    if parts.scheme in ("tls", "wss", "inproc") or local(parts.hostname):
        return address, None
    if not insecure:
        raise ClusterError(
            f"--cluster {address}: a plaintext scheduler off this machine runs whatever anyone "
            "sends it: use tls:// with certificates (tippingpoint cluster certs), or "
            "--insecure-cluster on a network you trust"
        )
    return address, (
        f"the scheduler at {address} is plaintext and not on loopback: anyone who reaches it "
        "can run code on every worker"
    )


def probe_scheduler(address: str, wait: float = 3.0) -> None:
    """Refuse at once an address where no Dask scheduler answers (ClusterError), before
    Dask's client waits 10 s for a port where nothing listens, forever for a peer that
    never speaks, or reads an HTTP answer as a frame of exabytes. A ``tcp://`` scheduler
    speaks first (its handshake), so a few bytes within ``wait`` tell; behind ``tls://``
    only the connect is checked."""
    parts = urlsplit(address)
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or not parts.port:
        return
    where = f"--cluster {address}"
    try:
        sock = socket.create_connection((parts.hostname, parts.port), timeout=wait)
    except OSError as e:
        raise ClusterError(
            f"{where}: no scheduler there ({e.strerror or e}): start one (tippingpoint cluster "
            "local prints its address) or give the address it printed"
        ) from None
    with sock:
        if parts.scheme == "tls":
            return
        try:
            first = sock.recv(64)
        except TimeoutError:
            first = b""
        except OSError as e:
            first = str(e).encode()
    frames = int.from_bytes(first[:8], "little") if len(first) >= 8 else -1
    if not 0 < frames <= 64:
        said = (
            "it answered in HTTP"
            if first.startswith(b"HTTP/")
            else (
                f"it said nothing within {wait:g} s"
                if not first
                else "it does not speak Dask's protocol"
            )
        )
        raise ClusterError(
            f"{where}: what listens there is not a Dask scheduler ({said}): give the address "
            "`tippingpoint cluster local` or `dask scheduler` printed"
        )
