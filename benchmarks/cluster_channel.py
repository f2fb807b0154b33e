"""Which Dask channel carries a run's records from its shards to the client.

A shard sends one interval record a second (about 3 KB: its histograms). --shards tasks
run at once on a local cluster (--workers processes, --shards / --workers threads each)
and each sends --seconds records, at the same wall-clock second boundaries, through:

- events: ``Worker.log_event(topic, msg)``, received by ``Client.subscribe_topic``;
- queue: ``distributed.Queue(name).put(msg)``, read by ``Queue.get(batch=True)``.

Printed per channel: records received of those sent, and the delay from a record's
send to its arrival at the client (p50, p99, max). Loopback only; everything stops by
itself.

    python benchmarks/cluster_channel.py --shards 100 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any

from common import machine

PAYLOAD = os.urandom(1500).hex()  # ~3 KB of text, as an interval record's histograms


def shard(channel: str, name: str, k: int, start: float, seconds: int) -> int:
    from distributed import Queue, get_worker

    worker = get_worker()
    queue = Queue(name) if channel == "queue" else None
    for i in range(seconds):
        time.sleep(max(0.0, start + i + 1 - time.time()))
        message = {"shard": k, "i": i, "sent": time.time(), "record": PAYLOAD}
        if queue is not None:
            queue.put(message)
        else:
            worker.log_event(name, message)
    return seconds


def run(client: Any, channel: str, shards: int, seconds: int) -> list[float]:
    from distributed import Queue

    name = f"bench-{channel}-{time.time_ns()}"
    delays: list[float] = []
    lock = threading.Lock()

    def arrived(message: dict[str, Any]) -> None:
        with lock:
            delays.append(time.time() - message["sent"])

    queue = None
    if channel == "events":
        client.subscribe_topic(name, lambda event: arrived(event[1]))
    else:
        queue = Queue(name, client=client)
    start = time.time() + 3
    futures = [
        client.submit(shard, channel, name, k, start, seconds, pure=False) for k in range(shards)
    ]
    deadline = start + seconds + 15
    while len(delays) < shards * seconds and time.time() < deadline:
        if queue is not None:
            try:
                for message in queue.get(batch=True, timeout=0.5):
                    arrived(message)
            except TimeoutError:
                pass
        else:
            time.sleep(0.2)
    client.gather(futures)
    if channel == "events":
        client.unsubscribe_topic(name)
    return delays


def main() -> None:
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    threads = -(-args.shards // args.workers)
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=threads,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        print(f"machine: {machine()}")
        print(
            f"{args.shards} shards on {args.workers} workers, one ~3 KB record per shard per "
            f"second for {args.seconds} s"
        )
        print(f"{'channel':8} {'received':>14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for channel in ("events", "queue"):
            delays = sorted(run(client, channel, args.shards, args.seconds))
            sent = args.shards * args.seconds
            if not delays:
                print(f"{channel:8} {0:>6} of {sent:<6}")
                continue
            p50 = delays[len(delays) // 2] * 1000
            p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000
            print(
                f"{channel:8} {len(delays):>6} of {sent:<6} {p50:8.1f} {p99:8.1f} "
                f"{delays[-1] * 1000:8.1f}"
            )


if __name__ == "__main__":
    main()
