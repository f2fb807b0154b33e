"""One `tippingpoint serve` process holding 19,000 idle keep-alive connections.

The server runs as one worker on CPU 1. Two client processes (sources 127.0.0.2 and
127.0.0.3, each under its own 20,000-descriptor limit) open the connections, send
one request on each and keep them open. Reported: time until the server has them
all, the worker's RSS growth per connection (user space), and the kernel's socket
memory from /proc/net/sockstat. Every connection closes when the clients exit.

    python benchmarks/idle_connections.py [--connections 19000] [--hold 10]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HOST, machine, need, pinned, rss_kib, start, stop, tippingpoint, wait_port

IP_BIND_ADDRESS_NO_PORT = 24
REQUEST = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Holder(asyncio.Protocol):
    __slots__ = ("done", "got")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.got = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.got += data
        if self.got.endswith(b"pong") and not self.done.done():
            self.done.set_result(None)


async def client(port: int, laddr: str, count: int, hold: float) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(200)
    transports = []

    async def one() -> None:
        async with gate:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Bind the source address without reserving a port until connect().
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((laddr, 0))
            sock.setblocking(False)
            await loop.sock_connect(sock, (HOST, port))
            done = loop.create_future()
            transport, _ = await loop.create_connection(lambda: Holder(done), sock=sock)
            transports.append(transport)
            await asyncio.wait_for(done, 30)

    start_t = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    print(f"ready {len(transports)} {time.monotonic() - start_t:.3f}", flush=True)
    await asyncio.sleep(hold)
    for t in transports:
        t.close()


def sockstat() -> dict[str, int]:
    text = Path("/proc/net/sockstat").read_text()
    tcp = re.search(r"TCP: inuse (\d+) orphan \d+ tw \d+ alloc (\d+) mem (\d+)", text)
    assert tcp
    return {"inuse": int(tcp.group(1)), "alloc": int(tcp.group(2)), "mem_pages": int(tcp.group(3))}


def slab_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=19000)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument(
        "--client", nargs=3, metavar=("PORT", "LADDR", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.client:
        import uvloop

        port, laddr, count = args.client
        uvloop.run(client(int(port), laddr, int(count), args.hold))
        return
    need("taskset")
    port = 18290
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        server = start(
            pinned(1, [*tippingpoint(), "serve", "--ports", str(port), "--processes", "1"]), log
        )
        try:
            wait_port(port)
            worker = int(re.search(r"worker 0 pid (\d+)", log.read_text()).group(1))
            time.sleep(0.5)
            rss0, sock0, slab0 = rss_kib(worker), sockstat(), slab_kib()
            half = args.connections // 2
            clients = [
                subprocess.Popen(
                    pinned(
                        0,
                        [
                            sys.executable,
                            __file__,
                            "--hold",
                            str(args.hold),
                            "--client",
                            str(port),
                            laddr,
                            str(n),
                        ],
                    ),
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for laddr, n in (("127.0.0.2", half), ("127.0.0.3", args.connections - half))
            ]
            t0 = time.monotonic()
            times = []
            held = 0
            for c in clients:
                line = c.stdout.readline().split() if c.stdout else []
                assert line and line[0] == "ready", f"client failed: {line}"
                held += int(line[1])  # connections that got their response
                times.append(time.monotonic() - t0)
            rss1, sock1, slab1 = rss_kib(worker), sockstat(), slab_kib()
            for c in clients:
                c.wait(args.hold + 60)
        finally:
            stop(server)
    n = args.connections
    per_conn = (rss1 - rss0) * 1024 / n
    print(f"machine: {machine()}")
    print(f"connections held: {held} of {n} (clients: 2 processes, sources 127.0.0.2-3)")
    print(f"time to establish and answer all: {max(times):.2f} s ({n / max(times):,.0f} conn/s)")
    print(
        f"server worker RSS: {rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB: "
        f"{per_conn:,.0f} B per connection (user space)"
    )
    print(
        f"kernel TCP sockets in use: {sock0['inuse']} -> {sock1['inuse']}; "
        f"slab {slab0 / 1024:.0f} -> {slab1 / 1024:.0f} MiB: "
        f"{(slab1 - slab0) * 1024 / n:,.0f} B per connection (both ends)"
    )


if __name__ == "__main__":
    main()
