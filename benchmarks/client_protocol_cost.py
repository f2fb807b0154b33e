"""Python cost of the load generator's hot path, without sockets.

A connection of a closed-model attack is fed nginx's "pong" response again and again,
its writes going nowhere: each feed runs what a real response runs (framing,
latency, service time and time to first byte recorded, status counted, the next
request sent). The open model is timed the same way: hits dispatched by the pacing
loop onto idle connections, then answered. Prints microseconds per request, best of
--repeat; the difference with the socket figures of client_cost.py is the kernel.

Also the once-a-second work: encoding an interval record of 80,000 requests (its five
histograms), in all and for the largest histogram — what the pacing loop would wait
for if it were done at once (the engine spreads it over several turns of the loop).

    python benchmarks/client_protocol_cost.py [--number 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque
from time import monotonic_ns

import numpy as np

from tippingpoint.engine.attack import Engine
from tippingpoint.engine.client import ClientConn
from tippingpoint.engine.recorder import Recorder
from tippingpoint.model import AttackConfig, Shard
from tippingpoint.server.worker import new_loop
from tippingpoint.targets import Target

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 06:40:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 4\r\n"
    b"Connection: keep-alive\r\n\r\npong"
)


class NullTransport(asyncio.Transport):
    # A C method that discards, as uvloop's write is a C method: no Python frame.
    write = deque(maxlen=0).append  # type: ignore[assignment]

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def engine(loop: asyncio.AbstractEventLoop, rate: float) -> Engine:
    config = AttackConfig(
        targets=(Target("GET", "http://127.0.0.1:18300/ping"),),
        rate=rate,
        duration=3600.0,
        connections=1,
    )
    shard = Shard(
        index=0,
        count=1,
        start_ns=monotonic_ns(),
        start_epoch=time.time(),
        max_connections=1000,
        laddrs=(),
        closed_connections=1,
    )
    return Engine(config, shard, lambda record: None, loop)


def connection(eng: Engine) -> ClientConn:
    pool = eng._target_pool[0]
    conn = ClientConn(eng, pool)
    conn.connection_made(NullTransport())
    pool.conns.add(conn)
    eng._open += 1
    return conn


def closed(number: int) -> float:
    loop, _ = new_loop("uvloop")
    eng = engine(loop, 0)
    eng._closed_left = number + 1
    eng._closed_end_ns = 1 << 62
    conn = connection(eng)
    eng._closed_hit(conn, monotonic_ns())
    feed = conn.data_received
    t0 = time.perf_counter()
    for _ in range(number):
        feed(RESPONSE)
    elapsed = time.perf_counter() - t0
    assert eng.rec.done == number, eng.rec.done
    loop.close()
    return elapsed / number * 1e6


def open_model(number: int, batch: int = 20) -> float:
    """A batch of hits come due at once (one pacing tick), then their responses."""
    loop, _ = new_loop("uvloop")
    eng = engine(loop, 1000.0)
    conns = [connection(eng) for _ in range(batch)]
    eng._target_pool[0].idle.extend(conns)
    rounds = number // batch
    # The pacing loop's per-hit work: the protocol's dispatch, and the schedule's step to
    # the next hit (on the engine itself in trees before engine/schedule.py).
    schedule = getattr(eng, "_schedule", None)
    dispatch, advance = eng._dispatch, (schedule or eng)._advance
    t0 = time.perf_counter()
    for _ in range(rounds):
        now = monotonic_ns()
        for _ in range(batch):  # what one wake-up of the pacing loop does per due hit
            dispatch(0, now, now)
            advance()
        for conn in conns:
            conn.data_received(RESPONSE)
    elapsed = time.perf_counter() - t0
    assert eng.rec.done == rounds * batch, (eng.rec.done, rounds * batch)
    loop.close()
    return elapsed / (rounds * batch) * 1e6


def interval_encoding(rate: int = 80_000) -> tuple[float, float]:
    """Milliseconds to encode one second's record at ``rate``: all five, the largest."""
    rng = np.random.default_rng(1)
    rec = Recorder(0, start_ns=0)
    service = rng.lognormal(np.log(200_000), 0.8, rate).astype(np.int64)  # ns, ~0.2 ms
    lateness = rng.exponential(60_000, rate).astype(np.int64)
    rec.same2.extend(service.tolist())
    rec.latency.extend((service + lateness).tolist())
    rec.lateness.extend(lateness.tolist())
    rec.connect.extend(rng.lognormal(np.log(300_000), 0.5, 50).astype(np.int64).tolist())
    record = rec.flush(0.0, 1.0, 128, 10, encode=False)
    steps = []
    t0 = time.perf_counter()
    while True:
        t = time.perf_counter()
        done = Recorder.encode_next(record)
        steps.append(time.perf_counter() - t)
        if done:
            break
    return (time.perf_counter() - t0) * 1e3, max(steps) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name, fn in (("closed model", closed), ("open model", open_model)):
        best = min(fn(args.number) for _ in range(args.repeat))
        print(f"{name:14s} {best:6.3f} µs per request (Python, no sockets)")
    runs = [interval_encoding() for _ in range(args.repeat)]
    total, largest = min(r[0] for r in runs), min(r[1] for r in runs)
    print(
        f"interval record at 80,000/s: {total:.2f} ms to encode its 5 histograms, "
        f"{largest:.2f} ms the largest"
    )


if __name__ == "__main__":
    main()
