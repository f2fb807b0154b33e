"""A bare uvloop client: C connections in a closed loop, one constant request written
per read, responses counted, nothing parsed, timed or recorded. The floor a Python
client on uvloop can reach, for benchmarks/client_cost.py: what is left of its cost
per request is the event loop, the Python callback and the two syscalls.
Not a load generator: a measuring stick. It assumes every read is one whole response,
which holds for nginx's short "pong" on loopback.

    python bare_client.py HOST PORT CONNECTIONS SECONDS   (prints: REQUESTS)
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class Ping(asyncio.Protocol):
    count = 0

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        Ping.count += 1
        self.transport.write(self.request)  # type: ignore[union-attr]


async def main(host: str, port: int, connections: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    request = f"GET /ping HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    conns = [
        (await loop.create_connection(lambda: Ping(request), host, port))[0]
        for _ in range(connections)
    ]
    await asyncio.sleep(seconds)
    for transport in conns:
        transport.abort()
    print(Ping.count)


if __name__ == "__main__":
    host, port, connections, seconds = sys.argv[1:5]
    uvloop.run(main(host, int(port), int(connections), float(seconds)))
