"""The ``serve`` supervisor: forks the workers, serves metrics, forwards signals.

Workers are forked before any event loop exists. Each asks the kernel for SIGTERM
when the supervisor dies (``PR_SET_PDEATHSIG``), so no worker outlives it even on
SIGKILL. On SIGINT/SIGTERM the supervisor stops the workers and exits 0.
"""

from __future__ import annotations

import asyncio
import functools
import os
import select
import signal
import socket
import time
from typing import Final

from tippingpoint.limits import raise_nofile
from tippingpoint.listeners import PortBusy, check_free
from tippingpoint.procs import describe_status, fork_child
from tippingpoint.server.config import ServeConfig
from tippingpoint.server.metrics import render_prometheus
from tippingpoint.server.stats import SharedStats
from tippingpoint.server.worker import describe_ports, run_worker
from tippingpoint.server.worker import log as _log

__all__ = ["ServeError", "serve"]

_STARTUP_TIMEOUT: Final = 30.0
_STOP_GRACE: Final = 5.0


class ServeError(Exception):
    """A one-line reason why the server could not start."""


def _fork_worker(
    config: ServeConfig, index: int, shared: SharedStats, ready_w: int, ready_r: int, nofile: int
) -> int:
    return fork_child(
        functools.partial(run_worker, config, index, shared, ready_w, nofile), [ready_r]
    )


def _stop_workers(pids: dict[int, int], shared: SharedStats) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + _STOP_GRACE
    while pids and time.monotonic() < deadline:
        _reap(pids, shared, log=False)
        if pids:
            time.sleep(0.02)
    for pid in list(pids):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        pids.pop(pid, None)


def _reap(pids: dict[int, int], shared: SharedStats, log: bool) -> list[tuple[int, int, int]]:
    """Collect exited workers: ``[(index, pid, status)]``."""
    gone = []
    for pid in list(pids):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            index = pids.pop(pid)
            row = shared.row(index)
            if row["alive"]:
                shared.mark_dead(index)
            gone.append((index, pid, status))
            if log:
                _log(f"worker {index} pid {pid} {describe_status(status)}")
    return gone


def _start(config: ServeConfig) -> tuple[dict[int, int], SharedStats]:
    soft, _hard = raise_nofile()
    shared = SharedStats(config.processes)
    ready_r, ready_w = os.pipe()
    pids: dict[int, int] = {}
    try:
        for index in range(config.processes):
            pids[_fork_worker(config, index, shared, ready_w, ready_r, soft)] = index
    finally:
        os.close(ready_w)
    ready = 0
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    try:
        while ready < config.processes:
            if time.monotonic() > deadline:
                raise ServeError("workers did not start within 30 s")
            readable, _, _ = select.select([ready_r], [], [], 0.05)
            if readable:
                ready += len(os.read(ready_r, 64))
            gone = _reap(pids, shared, log=False)
            if gone:
                index, _pid, status = gone[0]
                raise ServeError(
                    f"worker {index} failed to start ({describe_status(status)}); "
                    "see its message above"
                )
    except BaseException:
        _stop_workers(pids, shared)
        raise
    finally:
        os.close(ready_r)
    return pids, shared


async def _metrics_handler(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shared: SharedStats
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
        if path.split(b"?")[0] in (b"/metrics", b"/"):
            body = render_prometheus([shared.row(i) for i in range(shared.rows)]).encode()
            status = "200 OK"
            ctype = "text/plain; version=0.0.4; charset=utf-8"
        else:
            body, status, ctype = b"not found: try /metrics\n", "404 Not Found", "text/plain"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        pass
    finally:
        writer.close()


async def _statsd_loop(config: ServeConfig, shared: SharedStats) -> None:
    assert config.statsd is not None
    host, port = config.statsd
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = 0
    try:
        while True:
            await asyncio.sleep(1.0)
            total = shared.requests()
            if total > sent:
                try:
                    sock.sendto(f"{config.statsd_metric}:{total - sent}|c".encode(), (host, port))
                except OSError:
                    pass
                sent = total
    finally:
        sock.close()


async def _supervise(config: ServeConfig, pids: dict[int, int], shared: SharedStats) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = []
    server = None
    if config.metrics_port is not None:
        server = await asyncio.start_server(
            lambda r, w: _metrics_handler(r, w, shared), config.metrics_host, config.metrics_port
        )
        _log(f"metrics on http://{config.metrics_host}:{config.metrics_port}/metrics")
    if config.statsd is not None:
        tasks.append(loop.create_task(_statsd_loop(config, shared)))
    code = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except TimeoutError:
            pass
        _reap(pids, shared, log=True)
        if not pids:
            _log("all workers have exited; stopping")
            code = 1
            break
    if server is not None:
        server.close()
    for task in tasks:
        task.cancel()
    return code


def serve(config: ServeConfig) -> int:
    """Run the backend until SIGINT/SIGTERM; the process exit code."""
    if not config.share_ports:
        try:
            check_free(config.host, config.ports, "serve", "--share-ports")
        except PortBusy as e:
            raise ServeError(str(e)) from None
    try:
        pids, shared = _start(config)
    except OSError as e:
        raise ServeError(f"cannot start workers: {e}") from None
    _log(f"{config.processes} worker(s) ready on {config.host}:{describe_ports(config.ports)}")
    try:
        return asyncio.run(_supervise(config, pids, shared))
    except OSError as e:
        _log(f"cannot serve metrics on {config.metrics_host}:{config.metrics_port}: {e.strerror}")
        return 2
    finally:
        _stop_workers(pids, shared)
