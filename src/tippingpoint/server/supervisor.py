"""The ``serve`` supervisor: forks the workers, serves metrics, forwards signals.

Workers are forked before any event loop exists. Each asks the kernel for SIGTERM
when the supervisor dies (``PR_SET_PDEATHSIG``), so no worker outlives it even on
SIGKILL. On SIGINT/SIGTERM the supervisor stops the workers and exits 0.

A worker that dies (a crash, an OOM kill) is replaced at once, as nginx's master and
gunicorn's arbiter do, and counted in ``tippingpoint_serve_worker_restarts_total``;
its counters stay in the totals. One that dies again within a second of its start
is restarted after a delay that doubles each time (0.1 s up to 10 s).
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
from tippingpoint.placement import PlacementError, cpu_list, verify
from tippingpoint.procs import describe_status, fork_child
from tippingpoint.server.config import ServeConfig
from tippingpoint.server.metrics import render_prometheus, retire
from tippingpoint.server.stats import SharedStats
from tippingpoint.server.worker import describe_listeners, run_worker
from tippingpoint.server.worker import log as _log

__all__ = ["ServeError", "serve"]

_STARTUP_TIMEOUT: Final = 30.0
_STOP_GRACE: Final = 5.0
_QUICK_DEATH_S: Final = 1.0
_BACKOFF_FIRST_S: Final = 0.1
_BACKOFF_MAX_S: Final = 10.0


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
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    shared: SharedStats,
    restarts: _Restarts,
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
        if path.split(b"?")[0] in (b"/metrics", b"/"):
            rows = [shared.row(i) for i in range(shared.rows)]
            body = render_prometheus(rows, restarts.retired, restarts.count).encode()
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


async def _statsd_loop(config: ServeConfig, shared: SharedStats, restarts: _Restarts) -> None:
    assert config.statsd is not None
    host, port = config.statsd
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = 0
    try:
        while True:
            await asyncio.sleep(1.0)
            total = shared.requests() + sum(
                v for k, v in restarts.retired.items() if k.startswith("req_")
            )
            if total > sent:
                try:
                    sock.sendto(f"{config.statsd_metric}:{total - sent}|c".encode(), (host, port))
                except OSError:
                    pass
                sent = total
    finally:
        sock.close()


class _Restarts:
    """Replacing dead workers: counts, back-off, and what the dead leave to the totals."""

    def __init__(self, config: ServeConfig, pids: dict[int, int], shared: SharedStats) -> None:
        self.config = config
        self.pids = pids
        self.shared = shared
        self.count = 0
        self.retired: dict[str, int] = {}
        self.started = {index: time.monotonic() for index in pids.values()}
        self.quick: dict[int, int] = {}
        self.nofile = raise_nofile()[0]

    def on_death(self, index: int, loop: asyncio.AbstractEventLoop) -> None:
        for name, value in retire(self.shared.row(index)).items():
            self.retired[name] = self.retired.get(name, 0) + value
        self.shared.clear(index)
        if time.monotonic() - self.started.get(index, 0.0) < _QUICK_DEATH_S:
            self.quick[index] = self.quick.get(index, 0) + 1
        else:
            self.quick[index] = 0
        quick = self.quick[index]
        delay = 0.0 if not quick else min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (quick - 1))
        if delay:
            _log(
                f"worker {index} died within {_QUICK_DEATH_S:g} s of its start: "
                f"starting it again in {delay:g} s"
            )
        loop.call_later(delay, self.start, index)

    def start(self, index: int) -> None:
        run = functools.partial(_rerun_worker, self.config, index, self.shared, self.nofile)
        pid = fork_child(run)
        self.pids[pid] = index
        self.started[index] = time.monotonic()
        self.count += 1
        _log(f"worker {index} restarted as pid {pid}")


def _rerun_worker(config: ServeConfig, index: int, shared: SharedStats, nofile: int) -> int:
    """A replacement worker, forked from the supervisor's running event loop: it leaves
    that loop and its signal wiring behind before it starts its own."""
    asyncio.events._set_running_loop(None)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    return run_worker(config, index, shared, None, nofile)


async def _supervise(config: ServeConfig, pids: dict[int, int], shared: SharedStats) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    restarts = _Restarts(config, pids, shared)
    tasks: list[asyncio.Task[None]] = []
    server = None
    if config.metrics_port is not None:
        server = await asyncio.start_server(
            lambda r, w: _metrics_handler(r, w, shared, restarts),
            config.metrics_host,
            config.metrics_port,
        )
        _log(f"metrics on http://{config.metrics_host}:{config.metrics_port}/metrics")
    if config.statsd is not None:
        tasks.append(loop.create_task(_statsd_loop(config, shared, restarts)))
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except TimeoutError:
            pass
        if stop.is_set():
            break
        for index, _pid, _status in _reap(pids, shared, log=True):
            restarts.on_death(index, loop)
    if server is not None:
        server.close()
    for task in tasks:
        task.cancel()
    return 0


def serve(config: ServeConfig) -> int:
    """Run the backend until SIGINT/SIGTERM; the process exit code."""
    if not config.share_ports:
        try:
            check_free(config.host, config.ports + config.mqtt_ports, "serve", "--share-ports")
        except PortBusy as e:
            raise ServeError(str(e)) from None
    if config.cpus:
        try:
            os.sched_setaffinity(0, config.cpus)
        except OSError as e:
            raise ServeError(
                f"cannot run on CPUs {cpu_list(config.cpus)}: {e.strerror} (a cpuset without "
                "them?); give --cpus this machine allows"
            ) from None
    try:
        pids, shared = _start(config)
    except OSError as e:
        raise ServeError(f"cannot start workers: {e}") from None
    where = ""
    if config.cpus:
        try:
            placed = verify("serve", [os.getpid()], config.cpus)
        except PlacementError as e:
            _stop_workers(pids, shared)
            raise ServeError(str(e)) from None
        where = f" on CPUs {cpu_list(placed.seen)} ({placed.threads} threads, read from /proc)"
    _log(f"{config.processes} worker(s) ready on {config.host}:{describe_listeners(config)}{where}")
    try:
        return asyncio.run(_supervise(config, pids, shared))
    except OSError as e:
        _log(f"cannot serve metrics on {config.metrics_host}:{config.metrics_port}: {e.strerror}")
        return 2
    finally:
        _stop_workers(pids, shared)
