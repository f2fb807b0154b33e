"""Lean transports for held connections: one epoll set for all of a process's sockets.

A hold keeps tens of thousands of connections that say a few bytes a minute. uvloop
gives each its own transport and poll handle, most of what a held session cost
(docs/PERFORMANCE.md: 1,688 B per MQTT session before, 662 B after). Here a process
registers every held socket in one ``select.epoll`` that the event loop watches as a
single descriptor, and each socket gets
an :class:`FdTransport`: a descriptor number, its protocol and a write buffer that is
almost always empty. Reads and writes are plain ``os.read``/``os.write`` on the
descriptor. The protocols (HTTP :class:`~tippingpoint.engine.client.ClientConn`, TLS over
memory BIOs, MQTT :class:`~tippingpoint.engine.mqtt.Session`) see the asyncio transport
calls they use: ``write``, ``close``, ``abort``, ``is_closing``, ``get_extra_info``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
from typing import Any

__all__ = ["FdPoller", "FdTransport"]

_READ_SIZE = 65536
_IN = select.EPOLLIN | select.EPOLLRDHUP
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP


class FdPoller:
    """One epoll set, watched by the loop as one reader, dispatching to transports."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        self.transports: dict[int, FdTransport] = {}
        loop.add_reader(self.epoll.fileno(), self._ready)

    def attach(self, sock: socket.socket, protocol: asyncio.Protocol) -> FdTransport:
        """Take over a connected socket: ``protocol`` gets ``connection_made`` at once."""
        fd = sock.detach()
        transport = FdTransport(self, fd, protocol)
        self.transports[fd] = transport
        self.epoll.register(fd, _IN)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return transport

    def _ready(self) -> None:
        transports = self.transports
        for fd, events in self.epoll.poll(0):
            transport = transports.get(fd)
            if transport is not None:
                transport._ready(events)

    def close(self) -> None:
        for transport in list(self.transports.values()):
            transport.abort()
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()


class FdTransport:
    """A connected socket's descriptor, driven by an :class:`FdPoller`."""

    __slots__ = ("_closing", "_fd", "_pending", "_poller", "_protocol")

    def __init__(self, poller: FdPoller, fd: int, protocol: asyncio.Protocol) -> None:
        self._poller = poller
        self._fd = fd
        self._protocol = protocol
        self._pending = b""
        """Bytes the socket did not take yet (a full send buffer): sent when writable."""
        self._closing = False

    # What protocols call

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        if self._pending:
            self._pending += data
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._lost(e)
            return
        if sent < len(data):
            self._pending = data[sent:]
            self._poller.epoll.modify(self._fd, _IN | _OUT)

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        """Close once what is buffered is sent (at once if nothing is)."""
        if self._closing:
            return
        if self._pending:
            self._closing = True
            return
        self._lost(None)

    def abort(self) -> None:
        self._pending = b""
        self._lost(None)

    def pause_reading(self) -> None:
        if not self._closing:
            self._poller.epoll.modify(self._fd, _OUT if self._pending else 0)

    def resume_reading(self) -> None:
        if not self._closing:
            self._poller.epoll.modify(self._fd, _IN | (_OUT if self._pending else 0))

    # Driven by the poller

    def _ready(self, events: int) -> None:
        if events & _OUT and self._pending:
            self._flush()
        if events & (_IN | _ERR):
            self._read()

    def _read(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(e)
            return
        if data:
            self._protocol.data_received(data)
            return
        self._protocol.eof_received()
        self._lost(None)

    def _flush(self) -> None:
        try:
            sent = os.write(self._fd, self._pending)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(e)
            return
        self._pending = self._pending[sent:]
        if not self._pending:
            if self._closing:
                self._lost(None)
                return
            self._poller.epoll.modify(self._fd, _IN)

    def _lost(self, exc: Exception | None) -> None:
        fd = self._fd
        if fd < 0:
            return
        self._fd = -1
        self._closing = True
        poller = self._poller
        poller.transports.pop(fd, None)
        try:
            poller.epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        os.close(fd)
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            exc = BrokenPipeError(errno.EPIPE, "the peer closed the connection")
        poller.loop.call_soon(self._protocol.connection_lost, exc)
