"""One backend worker process: one event loop, listeners on every port, the sweep.

Connections carry a deadline in whole-second ticks; one sweep a second closes
those past it (idle keep-alive timeout, header-read timeout). That costs one
integer per connection instead of a timer handle each.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import random
import signal
import sys
from collections.abc import Callable
from typing import Final

from tippingpoint.loops import new_loop
from tippingpoint.server.config import ServeConfig
from tippingpoint.server.mqtt import MQTTProtocol
from tippingpoint.server.protocol import BufferedPongProtocol, Conn, PongProtocol
from tippingpoint.server.responses import Responses
from tippingpoint.server.stats import SharedStats, WorkerStats
from tippingpoint.server.ws import upgrade as ws_upgrade
from tippingpoint.wire.ws import Handshake

__all__ = ["Worker", "describe_listeners", "describe_ports", "log", "new_loop", "run_worker"]

_QUARTERS_PER_TICK: Final = 4
_RESERVED_FDS: Final = 32


def describe_ports(ports: tuple[int, ...]) -> str:
    """``(8282, 8283, 8284, 9000)`` -> ``"8282-8284,9000"``."""
    parts: list[str] = []
    start = prev = ports[0]
    for port in (*ports[1:], -1):
        if port == prev + 1:
            prev = port
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = port
    return ",".join(parts)


def describe_listeners(config: ServeConfig) -> str:
    """``"8282-8284 (HTTP), 1883 (MQTT)"``, or just the HTTP ports."""
    http = describe_ports(config.ports) if config.ports else ""
    if not config.mqtt_ports:
        return http
    mqtt = f"{describe_ports(config.mqtt_ports)} (MQTT)"
    return f"{http} (HTTP), {mqtt}" if http else mqtt


class Worker:
    """State shared by the connections of one process (read on the hot path)."""

    def __init__(
        self,
        config: ServeConfig,
        index: int,
        shared: SharedStats,
        loop: asyncio.AbstractEventLoop,
        loop_name: str,
        nofile: int,
    ) -> None:
        self.config = config
        self.index = index
        self.shared = shared
        self.loop = loop
        self.loop_name = loop_name
        self.stats = WorkerStats()
        self.conns: set[Conn] = set()
        self.tick = 0
        self.idle_ticks = math.ceil(config.idle_timeout)
        self.header_ticks = math.ceil(config.header_timeout)
        # Deadlines for connections touched during this tick: one shared int object each,
        # instead of a new int per connection.
        self.idle_deadline = self.idle_ticks
        self.header_deadline = self.header_ticks
        self.nofile = nofile
        capacity = max(1, nofile - len(config.ports) - len(config.mqtt_ports) - _RESERVED_FDS)
        if config.max_connections is not None:
            capacity = min(capacity, config.max_connections)
        self.capacity = capacity
        self.resume_level = max(0, capacity - max(1, capacity // 10))
        self.paused = False
        self.responses = Responses()
        self.read_buffer = memoryview(bytearray(64 * 1024))
        self.protocol: type[PongProtocol] = (
            PongProtocol if loop_name == "uvloop" else BufferedPongProtocol
        )
        self.servers: list[asyncio.AbstractServer] = []
        self.stop = asyncio.Event()
        self._quarter = 0
        self._listening = False
        rand = random.random

        def random_ms(sleep_max: int) -> float:
            # A whole number of milliseconds, uniform in [0, sleep_max + 1].
            return int(rand() * (sleep_max + 2)) / 1000.0

        self.random_ms: Callable[[int], float] = random_ms
        self.upgrade: Callable[[Conn, asyncio.Transport, Handshake, bytes], None] | None = (
            functools.partial(ws_upgrade, self) if config.ws else None
        )
        self.stats.pid = os.getpid()
        self.stats.alive = 1
        self.stats.capacity = capacity

    # Lifecycle

    async def run(self, ready_fd: int | None) -> None:
        await self._listen()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop.set)
        ports = describe_listeners(self.config)
        log(
            f"worker {self.index} pid {os.getpid()} listening on {self.config.host}:{ports} "
            f"({self.loop_name}), open-file limit {self.nofile}, "
            f"capacity {self.capacity} connections"
        )
        if ready_fd is not None:
            os.write(ready_fd, b"r")
            os.close(ready_fd)
        self.loop.call_later(0.25, self._on_quarter)
        await self.stop.wait()
        await self._shutdown()

    async def _listen(self) -> None:
        http = functools.partial(self.protocol, self)
        mqtt = functools.partial(MQTTProtocol, self)
        listeners: list[tuple[int, Callable[[], asyncio.BaseProtocol]]] = [
            *((port, http) for port in self.config.ports),
            *((port, mqtt) for port in self.config.mqtt_ports),
        ]
        servers: list[asyncio.AbstractServer] = []
        try:
            for port, factory in listeners:
                servers.append(
                    await self.loop.create_server(
                        factory,
                        self.config.host,
                        port,
                        reuse_port=True,
                        backlog=self.config.backlog,
                    )
                )
        except BaseException:
            for server in servers:
                server.close()
            raise
        self.servers = servers
        self._listening = True

    async def _shutdown(self) -> None:
        for server in self.servers:
            server.close()
        self.servers = []
        for conn in list(self.conns):
            conn.shutdown()
        for _ in range(100):
            if not self.conns:
                break
            await asyncio.sleep(0.01)
        self.stats.alive = 0
        self.shared.publish(self.index, self.stats)

    # Capacity

    def opened(self, conn: Conn) -> None:
        """A connection (HTTP or MQTT) was accepted: count it, stop accepting at capacity."""
        self.stats.accepted += 1
        self.conns.add(conn)
        if len(self.conns) >= self.capacity:
            self.pause_accepting()

    def closed(self, conn: Conn, exc: Exception | None) -> None:
        """A connection is gone: count it, accept again below the resume level."""
        stats = self.stats
        stats.closed += 1
        if exc is not None:
            stats.conn_errors += 1
        self.conns.discard(conn)
        if self.paused and len(self.conns) <= self.resume_level:
            self.resume_accepting()

    def pause_accepting(self) -> None:
        if self.paused:
            return
        self.paused = True
        self.stats.accept_paused = 1
        self.stats.accept_pauses += 1
        for server in self.servers:
            server.close()
        self.servers = []
        self._listening = False
        log(
            f"worker {self.index}: at capacity ({len(self.conns)} connections), "
            f"not accepting until below {self.resume_level}"
        )
        self.shared.publish(self.index, self.stats)

    def resume_accepting(self) -> None:
        if not self.paused or self.stop.is_set():
            return
        self.paused = False
        self.stats.accept_paused = 0
        self.loop.create_task(self._relisten())

    async def _relisten(self) -> None:
        while not self._listening and not self.paused and not self.stop.is_set():
            try:
                await self._listen()
            except OSError as e:
                log(f"worker {self.index}: cannot listen again ({e.strerror}); retrying in 1 s")
                await asyncio.sleep(1)
        if self.paused:
            for server in self.servers:
                server.close()
            self.servers = []
            self._listening = False
        self.shared.publish(self.index, self.stats)

    # Clock: publish counters 4 times a second, sweep deadlines once a second

    def _on_quarter(self) -> None:
        if self.stop.is_set():
            return
        self._quarter += 1
        if self._quarter % _QUARTERS_PER_TICK == 0:
            self.tick += 1
            self.idle_deadline = self.tick + self.idle_ticks
            self.header_deadline = self.tick + self.header_ticks
            self.responses = self.responses.refreshed()
            self._sweep()
        self.shared.publish(self.index, self.stats)
        self.loop.call_later(0.25, self._on_quarter)

    def _sweep(self) -> None:
        tick = self.tick
        for conn in [c for c in self.conns if c.deadline < tick]:
            conn.expire()


def log(message: str) -> None:
    """One line on stderr; the server logs only start-up, capacity and exits."""
    print(f"tippingpoint serve: {message}", file=sys.stderr, flush=True)


def run_worker(
    config: ServeConfig, index: int, shared: SharedStats, ready_fd: int | None, nofile: int
) -> int:
    """Serve until SIGTERM/SIGINT; the exit code of the worker process."""
    loop, name = new_loop(config.loop)
    asyncio.set_event_loop(loop)
    worker = Worker(config, index, shared, loop, name, nofile)
    try:
        loop.run_until_complete(worker.run(ready_fd))
    except OSError as e:
        log(
            f"worker {index}: cannot listen on {config.host} ports "
            f"{describe_listeners(config)}: {e.strerror or e} "
            "(is another server using them? choose other --ports)"
        )
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        loop.close()
    return 0
