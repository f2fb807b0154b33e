"""Runs on many client machines, through Dask distributed (``pip install
'tippingpoint[cluster]'``): each worker runs one shard of a run, as a local process
would, from one start instant for the whole fleet, and streams its records back.

Dask is imported only here and below, and only when a cluster is asked for.
"""

from __future__ import annotations

__all__ = ["ClusterError", "require_dask"]


class ClusterError(RuntimeError):
    """A cluster run cannot start or go on; a one-line reason with the way out."""


def require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ClusterError(
            "--cluster needs Dask distributed: pip install 'tippingpoint[cluster]'"
        ) from None
