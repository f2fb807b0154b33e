"""Process limits: the open-file limit that decides how many sockets a process can hold."""

from __future__ import annotations

import resource

__all__ = [
    "MIN_NOFILE",
    "check_nofile",
    "file_max",
    "memory_available",
    "port_range",
    "raise_nofile",
]

MIN_NOFILE = 256
"""The fewest open files a load process runs with: its own descriptors, the event loop's,
the pipes to its parent, and room for connections."""


def raise_nofile() -> tuple[int, int]:
    """Raise the open-file soft limit to the hard limit; return the new ``(soft, hard)``.

    The hard limit cannot be raised without CAP_SYS_RESOURCE; processes, not a higher
    limit, are the way past it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        target = max(soft, 1_048_576) if soft != resource.RLIM_INFINITY else soft
    else:
        target = hard
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def check_nofile() -> tuple[int, int]:
    """The open-file soft limit, raised to the hard one; ValueError when even that is too
    low to run on (planning one process per few connections would fork hundreds)."""
    soft, hard = raise_nofile()
    if soft < MIN_NOFILE:
        raise ValueError(
            f"the open-file limit is {soft} (ulimit -n), too low to run: raise it, e.g. "
            f"ulimit -n 20000 (at least {MIN_NOFILE})"
        )
    return soft, hard


def port_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The ephemeral port range (Linux's default when it cannot be read)."""
    try:
        with open(path) as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def memory_available(path: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes, or None where there is no /proc/meminfo."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def file_max(path: str = "/proc/sys/fs/file-max") -> int | None:
    """The system-wide open-file limit, or None where it cannot be read."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
