"""A bare uvloop protocol that writes one constant response per read: the ceiling a
Python server on uvloop can reach, for benchmarks/serve_throughput.py. Not a server
(no parsing, no framing): a measuring stick. Usage: python bare_pong.py PORT"""

from __future__ import annotations

import asyncio
import sys

import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong"


class Pong(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(RESPONSE)  # type: ignore[attr-defined]


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Pong, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
