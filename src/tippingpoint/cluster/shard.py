"""A worker's shards of a run on a Dask worker.

The task hands the run to the worker's zygote (:mod:`tippingpoint.cluster.zygote`: a
clean process that forks one process per run, which forks one per shard as a local run
does; forking from the multi-threaded worker itself would copy its threads' locks). The
task reads the records the shards write, one JSON line each, and sends them to the client
as they come, as structured events of the run's topic (see
:mod:`tippingpoint.cluster.fleet` for why that channel). A stop event set by the client
(Ctrl-C) is passed on as SIGTERM, on which the shards flush what they have and end.
"""

from __future__ import annotations

import os
import pickle
import selectors
import signal
import threading
import time
from dataclasses import replace
from typing import Any

from tippingpoint.cluster.facts import host_name
from tippingpoint.cluster.zygote import zygote

__all__ = ["ShardResult", "prepare", "run_shard"]

ShardResult = dict[str, Any]

_STOP_POLL_S = 5.0
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
    from distributed import Event, get_client, get_worker

    worker = get_worker()
    host = host_name()
    kind, config, shards = pickle.loads(payload)
    # Time zero on this machine's monotonic clock, from the client's wall clock.
    delay = (start_epoch + offset) - time.time()
    start_ns = time.monotonic_ns() + int(max(delay, _START_MARGIN_S) * 1e9)
    shards = [replace(s, start_ns=start_ns) for s in shards]
    pid, out, err, status = zygote().start(pickle.dumps((kind, config, shards)))
    done = threading.Event()
    threading.Thread(
        target=_stop_on,
        args=(Event(stop_name, client=get_client()), done, pid),
        daemon=True,
        name="tippingpoint-stop",
    ).start()
    lines = 0
    pending = b""
    errors = b""
    try:
        with selectors.DefaultSelector() as sel:
            # Errors too, as they come: a pipe left unread would stop the shards once full.
            sel.register(out, selectors.EVENT_READ)
            sel.register(err, selectors.EVENT_READ)
            out_open = True
            while out_open:
                for key, _ in sel.select():
                    chunk = os.read(key.fd, 1 << 20)
                    if not chunk:
                        sel.unregister(key.fd)
                        out_open = out_open and key.fd != out
                    elif key.fd == err:
                        errors = (errors + chunk)[-8192:]
                    else:
                        pending += chunk
                        *complete, pending = pending.split(b"\n")
                        if complete:
                            lines += len(complete)
                            worker.log_event(
                                topic, {"host": host, "worker": worker.address, "lines": complete}
                            )
        raw = os.read(status, 4)  # at its exit; nothing when it died without one
        errors += _drain(err)
    finally:
        done.set()
        for fd in (out, err, status):
            os.close(fd)
    code = int.from_bytes(raw, "big", signed=True) if len(raw) == 4 else 1
    said = errors.decode(errors="replace").strip().splitlines()
    if len(raw) != 4 and not said:
        said = ["the shards' process ended without an exit code (killed?)"]
    return {
        "host": host,
        "shards": [s.index for s in shards],
        "code": code,
        "lines": lines,
        "error": said[-1] if code and said else "",
    }


def prepare() -> int:
    """On a worker, before its first run: its zygote started (the engine imported ahead
    of time zero). Returns the zygote's PID."""
    return zygote().proc.pid


def _stop_on(stop: Any, done: threading.Event, pid: int) -> None:
    """Until the run is ``done``: SIGTERM to its process once the client sets ``stop``
    (Ctrl-C). A long poll of the scheduler (one request per 5 s, answered at once when
    the event is set), not a request every fraction of a second from every worker."""
    while not done.is_set():
        try:
            if not stop.wait(timeout=_STOP_POLL_S):
                continue
        except Exception:  # the scheduler is out of reach for now: ask again
            done.wait(1.0)
            continue
        if not done.is_set():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return


def _drain(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 1 << 16):
        out += chunk
    return out
