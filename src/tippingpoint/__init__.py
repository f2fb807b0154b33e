"""tippingpoint: load-test proxies and services and find their tipping point."""

import os

__all__ = ["__version__"]

__version__ = "0.1.0"

# numpy serves here for integer arithmetic on arrays only, never linear algebra: without
# this, importing it starts a BLAS thread per core, ~60 ms of CPU in every process —
# billed to the load generator. (setdefault: a value the user set is kept.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
