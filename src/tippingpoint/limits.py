"""Process limits: the open-file limit that decides how many sockets a process can hold."""

from __future__ import annotations

import resource

__all__ = ["raise_nofile"]


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
