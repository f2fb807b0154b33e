"""What a worker's machine offers, reported by the worker before a run is planned."""

from __future__ import annotations

import os
import resource
import socket
from dataclasses import dataclass

from tippingpoint.limits import file_max, memory_available, port_range

__all__ = ["HOST_ENV", "LADDRS_ENV", "Facts", "host_name", "machine_facts"]

LADDRS_ENV = "TIPPINGPOINT_LADDRS"
"""Source addresses a worker's shards use (``cluster local`` gives each worker its own)."""
HOST_ENV = "TIPPINGPOINT_HOST"
"""The host a worker stands for (a local lab's workers), instead of the machine's name."""


def host_name() -> str:
    """This machine's name, or the host this worker stands for."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


@dataclass(frozen=True, slots=True)
class Facts:
    host: str
    pid: int
    cores: int
    nofile_soft: int
    nofile_hard: int
    port_range: tuple[int, int]
    memory_available: int | None
    file_max: int | None
    laddrs: str
    """``--laddr`` syntax, e.g. 127.0.1.2-127.0.1.254; empty: the kernel chooses."""
    name: str = ""
    """The worker's Dask name."""

    def describe(self) -> str:
        memory = (
            f"{self.memory_available / 2**30:.1f} GiB available"
            if self.memory_available is not None
            else "memory unknown"
        )
        ports = f"ports {self.port_range[0]}-{self.port_range[1]}"
        return (
            f"{self.host} pid {self.pid}: {self.cores} core(s), open files {self.nofile_soft:,}"
            f"/{self.nofile_hard:,}, {ports}, {memory}"
            + (f", source addresses {self.laddrs}" if self.laddrs else "")
        )


def machine_facts() -> Facts:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        name = ""
    return Facts(
        name=name,
        host=host_name(),
        pid=os.getpid(),
        cores=len(os.sched_getaffinity(0)),
        nofile_soft=soft,
        nofile_hard=hard,
        port_range=port_range(),
        memory_available=memory_available(),
        file_max=file_max(),
        laddrs=os.environ.get(LADDRS_ENV, ""),
    )
