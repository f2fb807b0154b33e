"""A WebSocket client's per-message framing: the short paths against the general ones.

Both sides are in `wire/ws.py`:

* reading: `ClientWs.feed` on a pong that arrives whole and alone (its short path)
  against the general `FrameReader` (`feed`, then `next` until None), which a frame that
  is split, masked, long or fragmented takes;
* writing: `client_frame` of "ping" (a short frame built as one integer) against the
  frame put together from its parts (`_header`, the key, `mask`), as longer ones are.

Time per call in nanoseconds, median of --runs. Nothing else runs; pin it with taskset.

    taskset -c 0 python benchmarks/ws_frame_cost.py [--runs 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from common import machine, median
from tippingpoint.wire import ws

CALLS = 200_000


def per_call(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        times.append((time.perf_counter() - t0) / CALLS * 1e9)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    pong = ws.server_frame(ws.TEXT, b"pong")
    client = ws.ClientWs()
    client.upgraded = True
    reader = ws.FrameReader(server=False)

    def general_read() -> list[tuple[int, bytes]]:
        reader.feed(pong)
        events = []
        while (event := reader.next()) is not None:
            events.append(event)
        return events

    def parts() -> bytes:
        key = ws._getrandbits(32)
        return ws._header(ws.TEXT, 4, True, 0x80) + key.to_bytes(4, "big") + ws.mask(b"ping", key)

    rows = [
        ("read a whole pong: ClientWs.feed", per_call(lambda: client.feed(pong), args.runs)),
        ("read a pong: FrameReader feed + next", per_call(general_read, args.runs)),
        (
            "write ping: client_frame",
            per_call(lambda: ws.client_frame(ws.TEXT, b"ping"), args.runs),
        ),
        ("write ping: header + key + mask", per_call(parts, args.runs)),
    ]
    for name, ns in rows:
        print(f"{name:40} {ns:7.0f} ns")
    print(f"medians of {args.runs} runs of {CALLS:,} calls")


if __name__ == "__main__":
    main()
