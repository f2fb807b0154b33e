"""What running through a Dask cluster costs an attack: the same attack locally
(`--processes N`) and through a local cluster of N workers (`--cluster`), in the
client's CPU per request and in p99 send lateness.

`serve` runs on CPU 1; the attack's processes (local) or the cluster's workers and
their shard processes (cluster) on CPU 0. Both runs alternate, --runs times; medians.
Start-up skew is the spread of the shards' first sends against their plan (shard k's
first hit is due at k/rate): how far from one instant the processes (fork) or the
workers' clean processes (spawn, each on its machine's clock) begin. CPU per request is
all the client side's CPU over the requests done ("shards only":
the sending processes' own, from their records): the attack command
and the processes it waited for (local), plus, through the cluster, every nanny, worker and
shard process's CPU during the run (the relaying of records included). The scheduler,
which runs in the `cluster local` process itself and in a fleet on a machine of its own,
is not counted.

    python benchmarks/cluster_overhead.py --rate 40000 --duration 10 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from common import machine, median, need, pinned, start, stop, tippingpoint, wait_port
from tippingpoint.stream import Interval, decode

PORTS = "8282-8285"


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``'s descendants (and what they waited for)."""
    total = 0.0
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            continue
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_skew(first: dict[int, int], rate: int) -> float:
    """Start-up skew in ms: the spread of the shards' first sends against their plan
    (shard k of P sends hit k first, at k/rate s)."""
    late = [first[k] / 1000 - k * 1000 / rate for k in first]
    return max(late) - min(late)


def measure(stream: Path, cpu_s: float, rate: int) -> tuple[float, float, int, float, float]:
    """(µs of client CPU per request, p99 lateness in ms, requests, µs of the shards' own
    CPU per request while they send, start-up skew in ms) of one stream."""
    done = shard_us = 0
    first: dict[int, int] = {}
    for line in stream.read_bytes().splitlines():
        record = decode(line)
        if isinstance(record, Interval):
            done += record.done
            shard_us += record.cpu_us or 0
            if record.first_send >= 0:
                first[record.process] = min(first.get(record.process, 1 << 62), record.first_send)
    report = subprocess.run(
        [*tippingpoint(), "report", "--type", "json", str(stream)],
        capture_output=True,
        check=True,
    )
    summary = json.loads(report.stdout)
    return (
        cpu_s * 1e6 / max(1, done),
        summary["lateness"]["99th"] / 1e6,
        done,
        shard_us / max(1, done),
        start_skew(first, rate),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=40_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    need("taskset")
    results: dict[str, list[tuple[float, float, int, float, float]]] = {
        "local": [],
        "cluster": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = start(
            pinned(1, [*tippingpoint(), "serve", "--ports", PORTS, "--processes", "1"]),
            Path(tmp) / "serve.log",
        )
        cluster = subprocess.Popen(
            pinned(0, [*tippingpoint(), "cluster", "local", "--workers", str(args.workers)]),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_port(8285)
            assert cluster.stdout is not None
            address = cluster.stdout.readline().decode().strip()
            # What the cluster costs doing nothing (its ticks and heartbeats) over 10 s.
            time.sleep(3)
            before = tree_cpu(cluster.pid)
            time.sleep(10)
            idle = tree_cpu(cluster.pid) - before
            attack = [
                *tippingpoint(), "attack", "http://127.0.0.1:8282/", "--rate", str(args.rate),
                "--duration", f"{args.duration}s",
            ]  # fmt: skip
            for run in range(args.runs):
                for how in ("local", "cluster"):
                    out = Path(tmp) / f"{how}-{run}.jsonl"
                    extra = (
                        ["--processes", str(args.workers)]
                        if how == "local"
                        else ["--cluster", address]
                    )
                    before = children_cpu() + (tree_cpu(cluster.pid) if how == "cluster" else 0)
                    subprocess.run(
                        pinned(0, [*attack, *extra, "-o", str(out)]),
                        check=True,
                        capture_output=True,
                    )
                    after = children_cpu() + (tree_cpu(cluster.pid) if how == "cluster" else 0)
                    results[how].append(measure(out, after - before, args.rate))
        finally:
            cluster.send_signal(signal.SIGTERM)
            try:
                cluster.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(cluster.pid, signal.SIGKILL)
            stop(server)
    print(f"machine: {machine()}")
    print(f"the cluster's nannies and workers alone, idle: {idle * 10:.1f} % of a core")
    print(
        f"{args.rate:,}/s for {args.duration} s, {args.workers} processes (local) or workers "
        f"(cluster) on CPU 0, serve on CPU 1; medians of {args.runs} runs"
    )
    print(
        f"{'':8} {'µs CPU/request':>15} {'shards only':>12} {'p99 lateness ms':>16} "
        f"{'requests':>10} {'start skew ms':>14}"
    )
    for how, rows in results.items():
        cpu = median([r[0] for r in rows])
        own = median([r[3] for r in rows])
        late = median([r[1] for r in rows])
        done = int(median([r[2] for r in rows]))
        skew = median([r[4] for r in rows])
        print(f"{how:8} {cpu:15.2f} {own:12.2f} {late:16.3f} {done:>10,} {skew:14.3f}")
    local_cpu = median([r[0] for r in results["local"]])
    cluster_cpu = median([r[0] for r in results["cluster"]])
    local_late = median([r[1] for r in results["local"]])
    cluster_late = median([r[1] for r in results["cluster"]])
    print(
        f"cluster / local: CPU per request {cluster_cpu / local_cpu:.3f}x, "
        f"p99 lateness {cluster_late - local_late:+.3f} ms"
    )


if __name__ == "__main__":
    main()
