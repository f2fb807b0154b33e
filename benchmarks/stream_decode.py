"""Decoding result streams: the standard library's json against msgspec (if installed).

Lines: the interval and header records of tests/data/attack-v1.jsonl, and Vegeta JSON
results (one per request, the largest files `tippingpoint report` reads). For each, the
time per line of: json.loads, msgspec.json.decode (to dicts), and stream.decode (json
plus the typed record), median of --runs. Nothing else runs; pin it with taskset.

    taskset -c 0 python benchmarks/stream_decode.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from common import ROOT, machine, median
from tippingpoint import stream


def per_line(fn: Callable[[bytes], object], lines: list[bytes], runs: int) -> float:
    """Median over runs of the time per line, in microseconds."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(max(1, 20_000 // len(lines))):
            for line in lines:
                fn(line)
        t1 = time.perf_counter()
        times.append((t1 - t0) / (max(1, 20_000 // len(lines)) * len(lines)) * 1e6)
    return median(times)


def vegeta_lines(n: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "attack": "",
                "seq": i,
                "code": 200,
                "timestamp": "2026-11-29T21:00:00.123456789Z",
                "latency": 1_234_567 + i,
                "bytes_out": 0,
                "bytes_in": 4,
                "error": "",
                "body": None,
                "method": "GET",
                "url": "http://127.0.0.1:8080/ping",
                "headers": None,
            },
            separators=(",", ":"),
        ).encode()
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    try:
        import msgspec

        fast: Callable[[bytes], object] | None = msgspec.json.decode
    except ImportError:
        fast = None
        print("msgspec is not installed: pip install msgspec to compare")
    attack = (ROOT / "tests/data/attack-v1.jsonl").read_bytes().splitlines()
    sets = {"interval records (with histograms)": attack, "Vegeta results": vegeta_lines(1000)}
    print(f"machine: {machine()}\n")
    print("| lines | json.loads | msgspec.json.decode | stream.decode | msgspec / json |")
    print("|---|---|---|---|---|")
    for name, lines in sets.items():
        std = per_line(json.loads, lines, args.runs)
        typed = per_line(stream.decode, lines, args.runs)
        other = per_line(fast, lines, args.runs) if fast else float("nan")
        size = sum(map(len, lines)) / len(lines)
        print(
            f"| {name}, {size:.0f} B | {std:.2f} µs | {other:.2f} µs | {typed:.2f} µs "
            f"| {other / std:.2f}x |"
        )


if __name__ == "__main__":
    main()
