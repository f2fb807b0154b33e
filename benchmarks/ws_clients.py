"""A reference WebSocket client driven the way ws_client_cost.py measures clients.

    python benchmarks/ws_clients.py closed|rate URL CONNECTIONS SECONDS [RATE]

closed: each connection sends "ping", waits for "pong", sends again.
rate: "ping" at RATE per second in all, paced every millisecond, dealt round-robin over
the connections; each pong is counted as it comes. Prints the number of pongs received
as the last line. The client is the `websockets` library (asyncio), without compression
(the server offers none either).
"""

from __future__ import annotations

import asyncio
import sys
import time

from websockets.asyncio.client import connect


async def run(mode: str, url: str, conns: int, seconds: float, rate: float) -> int:
    clients = [await connect(url, compression=None) for _ in range(conns)]
    done = 0
    end = time.monotonic() + seconds

    async def closed(c) -> None:  # type: ignore[no-untyped-def]
        nonlocal done
        while time.monotonic() < end:
            await c.send("ping")
            await c.recv()
            done += 1

    async def reader(c) -> None:  # type: ignore[no-untyped-def]
        nonlocal done
        async for _ in c:
            done += 1

    if mode == "closed":
        await asyncio.gather(*(closed(c) for c in clients))
    else:
        readers = [asyncio.create_task(reader(c)) for c in clients]
        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) < end:
            due = int((now - start) * rate)
            while sent < due:
                await clients[sent % conns].send("ping")
                sent += 1
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.3)
        for task in readers:
            task.cancel()
    for c in clients:
        await c.close()
    return done


def main() -> None:
    mode, url, conns, seconds = sys.argv[1:5]
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(asyncio.run(run(mode, url, int(conns), float(seconds), rate)))


if __name__ == "__main__":
    main()
