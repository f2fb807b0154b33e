"""A Dask scheduler and N workers on this machine (``tippingpoint cluster local``).

Each worker is its own process (a nanny and one thread: a shard is a process of its
own, never a thread among others) and gets its own loopback source addresses,
127.0.K.2-127.0.K.254 for worker K (from 1), as separate client machines would have
their own addresses.

Workers given names stand for the hosts of a lab (``[cluster] workers = ["lb", "be1"]``):
each listens on its own address, 127.0.K.1, which the roles started through it bind
(the bench's ``[hosts]``), and says its name as its machine's host name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tippingpoint.cluster import require_dask
from tippingpoint.cluster.facts import HOST_ENV, LADDRS_ENV

__all__ = ["QUIET", "local_cluster", "worker_laddrs"]

QUIET = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "2s",
}
"""Dask's housekeeping that a load generator's workers do without: the statistical
profiler (a stack sample every 10 ms), the event-loop watchdog (a tick every 20 ms)
and the system monitor (every 500 ms) feed the dashboard only; the memory monitor
(every 100 ms, in each worker and its nanny) reads the worker process's own memory,
where a run keeps none (its shards are processes of their own), so once every 2 s is
enough to keep its safety net. Two idle worker processes took 8.3 % of a core with all
of it, 1.5 % without the first three, 0.6-0.8 % with the memory monitor every 2 s
(benchmarks/cluster_overhead.py prints it)."""


def quiet_env() -> dict[str, str]:
    """:data:`QUIET` as Dask's environment variables, for worker processes."""
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
        for key, value in QUIET.items()
    }


def worker_laddrs(k: int) -> str:
    """Worker ``k``'s (from 0) source addresses, in ``--laddr`` syntax."""
    if not 0 <= k < 255:
        raise ValueError("at most 255 local workers")
    return f"127.0.{k + 1}.2-127.0.{k + 1}.254"


def local_cluster(workers: int | Sequence[str], port: int = 0, security: Any = None) -> Any:
    """A started :class:`distributed.SpecCluster` on 127.0.0.1 (``port`` 0: any free);
    with ``security`` (see :func:`tippingpoint.cluster.certs.node_security`), on TLS.
    ``workers``: how many, or their names (each then a host of its own, on 127.0.K.1)."""
    require_dask()
    import dask
    from distributed import Nanny, Scheduler, SpecCluster

    dask.config.set(QUIET)  # this process: the scheduler and the nannies

    names = list(workers) if not isinstance(workers, int) else []
    count = len(names) if names else int(workers)  # type: ignore[arg-type]
    if count < 1:
        raise ValueError("--workers must be >= 1")
    if len(set(names)) < len(names):
        raise ValueError("two local workers have the same name")
    specs = {
        (names[k] if names else f"worker-{k}"): {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "host": f"127.0.{k + 1}.1" if names else "127.0.0.1",
                "env": {
                    LADDRS_ENV: worker_laddrs(k),
                    **({HOST_ENV: names[k]} if names else {}),
                    **quiet_env(),
                },
                "silence_logs": 30,
                "dashboard": False,
                "security": security,
                "protocol": "tls" if security is not None else "tcp",
            },
        }
        for k in range(count)
    }
    scheduler = {
        "cls": Scheduler,
        "options": {
            "host": "127.0.0.1",
            "port": port,
            "dashboard": False,
            "protocol": "tls" if security is not None else "tcp",
            "security": security,
        },
    }
    return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=40, security=security)
