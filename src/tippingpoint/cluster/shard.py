"""A worker's shards of a run on a Dask worker.

A Dask worker is a multi-threaded process: forking shards from a task would copy locks
held by its other threads. The task spawns a clean process instead (``python -m
tippingpoint.cluster.shard``, the run's kind, config and shards on its stdin; it dies
with the worker), which forks one process per shard as a local run does. The task reads
the records they write, one JSON line each, and sends them to the client as they come,
as structured events of the run's topic (see :mod:`tippingpoint.cluster.fleet` for why
that channel). A stop event set by the client (Ctrl-C) is passed on as SIGTERM, on
which the shards flush what they have and end.
"""

from __future__ import annotations

import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

__all__ = ["ShardResult", "run_shard"]

ShardResult = dict[str, Any]

_START_MARGIN_S = 0.05
"""A shard that would start less than this ahead (a late task) starts at once; its
lateness then shows in its records."""


def run_shard(
    payload: bytes,
    start_epoch: float,
    offset: float,
    topic: str,
    stop_name: str,
) -> ShardResult:
    """Run this worker's shards (``payload``: the pickled kind, config and shards) from
    the client's ``start_epoch``, this machine's clock being ``offset`` s ahead of the
    client's. Every record line goes to ``topic``. Returns the exit code, host and line
    count."""
    from distributed import Event, get_worker

    worker = get_worker()
    host = socket.gethostname()
    kind, config, shards = pickle.loads(payload)
    # Time zero on this machine's monotonic clock, from the client's wall clock.
    delay = (start_epoch + offset) - time.time()
    start_ns = time.monotonic_ns() + int(max(delay, _START_MARGIN_S) * 1e9)
    shards = [replace(s, start_ns=start_ns) for s in shards]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tippingpoint.cluster.shard", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(pickle.dumps((kind, config, shards)))
    proc.stdin.close()
    stop = Event(stop_name)
    lines = 0
    pending = b""
    stopped = False
    checked = time.monotonic()
    errors = b""
    with selectors.DefaultSelector() as sel:
        # stderr too, as it comes: a pipe left unread would stop the shards once full.
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        out_open = True
        while out_open:
            for key, _ in sel.select(timeout=0.2):
                chunk = os.read(key.fd, 1 << 20)
                if not chunk:
                    sel.unregister(key.fileobj)
                    out_open = out_open and key.fileobj is not proc.stdout
                elif key.fileobj is proc.stderr:
                    errors = (errors + chunk)[-8192:]
                else:
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    if complete:
                        lines += len(complete)
                        worker.log_event(
                            topic, {"host": host, "worker": worker.address, "lines": complete}
                        )
            now = time.monotonic()
            if not stopped and now - checked >= 0.5:
                checked = now
                if stop.is_set():
                    stopped = True
                    proc.send_signal(signal.SIGTERM)
    code = proc.wait()
    errors += proc.stderr.read()
    said = errors.decode(errors="replace").strip().splitlines()
    return {
        "host": host,
        "shards": [s.index for s in shards],
        "code": code,
        "lines": lines,
        "error": said[-1] if code and said else "",
    }


def _main() -> int:
    """The spawned process: kind, config and shards from stdin, one forked process per
    shard, their records to stdout. It ends with the worker that started it (SIGTERM
    from the kernel, passed on to the shards): a lost worker's load stops."""
    import functools

    from tippingpoint.engine.hold import hold_child
    from tippingpoint.engine.runner import attack_child, run_children
    from tippingpoint.limits import raise_nofile
    from tippingpoint.procs import die_with_parent

    die_with_parent(int(sys.argv[1]))
    kind, config, shards = pickle.loads(sys.stdin.buffer.read())
    raise_nofile()
    child: Callable[..., int] = attack_child if kind == "attack" else hold_child
    out = sys.stdout.buffer

    def forward(_record: object, line: bytes) -> None:
        out.write(line)
        out.flush()

    return run_children([functools.partial(child, config, s) for s in shards], forward, kind)


if __name__ == "__main__":
    sys.exit(_main())
