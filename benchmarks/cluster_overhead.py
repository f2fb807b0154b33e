"""What running through a Dask cluster costs an attack: the same attack locally
(`--processes N`) and through a local cluster of N workers (`--cluster`), in the
client's CPU per request and in p99 send lateness.

`serve` runs on CPU 1; the attack's processes (local, from the same source addresses as
the workers have) or the cluster's workers and their shard processes (cluster) on CPU 0.
A third run, "local+neighbour", is the local one with a process beside it on the sending
core that burns --neighbour % of it in 10 ms beats: a control for the lateness, telling
what any small neighbour does to a core this busy. The runs alternate, --runs times;
medians. With --split, the cluster's Dask processes (scheduler, nannies, workers) run on
CPU 1 with `serve`, and only its shards on CPU 0 (each worker's zygote is pinned there,
and the processes it forks inherit it): a client machine whose Dask worker has a core of
its own.

Start-up skew is the spread of the shards' first sends against their plan (shard k's
first hit is due at k/rate): how far from one instant the processes begin (forked by the
attack locally; by each worker's zygote, each on its machine's clock, through the
cluster). CPU per request is all the client side's CPU over the requests done: the attack
command and the processes it waited for (local), plus, through the cluster, every worker,
zygote and shard process's CPU during the run (the relaying of records included); "shards
only" is the sending processes' own, from their records. The scheduler and the nannies,
which run in the `cluster local` process itself (the scheduler, in a fleet, on a machine
of its own), are not counted. "Steady" is the CPU over the run's steady window only, from
5 s after time zero to 5 s before its end: what each request costs once the fixed
start-up costs (the client importing Dask, surveying the workers) are paid.

    python benchmarks/cluster_overhead.py --rate 40000 --duration 30 --runs 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from common import (
    machine,
    median,
    need,
    pinned,
    start,
    start_cluster,
    stop,
    stop_cluster,
    tippingpoint,
    wait_port,
)
from tippingpoint.cluster.local import worker_laddrs
from tippingpoint.stream import Header, Interval, decode

PORTS = "8282-8285"
STEADY_MARGIN_S = 5


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


def neighbour(percent: float) -> subprocess.Popen[bytes]:
    """A process on CPU 0 that wakes every 10 ms and burns ``percent`` % of a core: as
    much extra work as the cluster's relaying, with none of Dask, to tell what any such
    neighbour does to the p99 lateness of a core this busy."""
    spin = percent / 100 * 0.010
    code = (
        "import time\n"
        "while True:\n"
        f"    end = time.perf_counter() + {spin}\n"
        "    while time.perf_counter() < end: pass\n"
        "    time.sleep(0.010)\n"
    )
    return subprocess.Popen(pinned(0, [sys.executable, "-c", code]))


def zygotes(address: str) -> list[int]:
    """Every worker's zygote (started now), the PIDs."""
    from distributed import Client

    from tippingpoint.cluster.shard import prepare

    with Client(address, timeout="10s") as client:
        return list(client.run(prepare).values())


def sample_cpu(proc: subprocess.Popen[bytes], watched: list[int]) -> list[tuple[float, float]]:
    """(epoch, CPU seconds of the attack command, its processes and the ``watched``
    trees) every 0.25 s until the attack ends."""
    samples = []
    me = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            cpu = me.cpu_times()
            total = cpu.user + cpu.system + tree_cpu(proc.pid)
        except psutil.NoSuchProcess:
            break
        samples.append((time.time(), total + sum(tree_cpu(p) for p in watched)))
        time.sleep(0.25)
    proc.wait()
    return samples


def at(samples: list[tuple[float, float]], when: float) -> float:
    """CPU seconds at epoch ``when``, between the two samples around it."""
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t0 <= when <= t1:
            return c0 + (c1 - c0) * (when - t0) / (t1 - t0)
    raise SystemExit("the run's steady window is outside its samples: use a longer --duration")


def measure(
    stream: Path, cpu_s: float, rate: int, samples: list[tuple[float, float]]
) -> tuple[float, float, int, float, float, float]:
    """(µs of client CPU per request, p99 lateness in ms, requests, µs of the shards' own
    CPU per request while they send, start-up skew in ms, µs of client CPU per request in
    the steady window: from 5 s after time zero to 5 s before the end) of one stream."""
    done = shard_us = steady_done = 0
    first: dict[int, int] = {}
    start = 0.0
    end = 0
    for line in stream.read_bytes().splitlines():
        record = decode(line)
        if isinstance(record, Header):
            start = record.start
            end = int(record.duration or 0) - STEADY_MARGIN_S
        if isinstance(record, Interval) and STEADY_MARGIN_S <= record.t < end:
            steady_done += record.done
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
    steady = at(samples, start + end) - at(samples, start + STEADY_MARGIN_S)
    return (
        cpu_s * 1e6 / max(1, done),
        summary["lateness"]["99th"] / 1e6,
        done,
        shard_us / max(1, done),
        start_skew(first, rate),
        steady * 1e6 / max(1, steady_done),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=40_000)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--split",
        action="store_true",
        help="the cluster's Dask processes on CPU 1 (with serve), only its shards on CPU 0",
    )
    parser.add_argument(
        "--neighbour",
        type=float,
        default=2.0,
        help="%% of a core the local+neighbour run's neighbour burns on the sending core",
    )
    args = parser.parse_args()
    need("taskset")
    os.sched_setaffinity(0, {1})  # this script's sampling off the sending core
    results: dict[str, list[tuple[float, float, int, float, float, float]]] = {
        "local": [],
        "local+neighbour": [],
        "cluster": [],
    }
    busy: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start(
            pinned(1, [*tippingpoint(), "serve", "--ports", PORTS, "--processes", "1"]),
            Path(tmp) / "serve.log",
        )
        cluster, address = start_cluster(args.workers, cpu=1 if args.split else 0)
        try:
            wait_port(8285)
            # What the cluster costs doing nothing (its ticks and heartbeats) over 10 s.
            time.sleep(3)
            before = tree_cpu(cluster.pid)
            time.sleep(10)
            idle = tree_cpu(cluster.pid) - before
            if args.split:
                for pid in zygotes(address):
                    os.sched_setaffinity(pid, {0})  # its runs and their shards inherit it
            attack = [
                *tippingpoint(), "attack", "http://127.0.0.1:8282/", "--rate", str(args.rate),
                "--duration", f"{args.duration}s",
            ]  # fmt: skip
            # The same source addresses as the cluster's workers have: the same binds.
            local = [
                "--processes", str(args.workers),
                "--laddr", ",".join(worker_laddrs(k) for k in range(args.workers)),
            ]  # fmt: skip
            for run in range(args.runs):
                for how in results:
                    out = Path(tmp) / f"{how}-{run}.jsonl"
                    extra = ["--cluster", address] if how == "cluster" else local
                    other = neighbour(args.neighbour) if how == "local+neighbour" else None
                    watched = [cluster.pid] if how == "cluster" else []
                    before = children_cpu() + sum(tree_cpu(p) for p in watched)
                    proc = subprocess.Popen(
                        pinned(0, [*attack, *extra, "-o", str(out)]),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    samples = sample_cpu(proc, watched)
                    if other is not None:
                        used = psutil.Process(other.pid).cpu_times()
                        lived = time.time() - psutil.Process(other.pid).create_time()
                        busy.append((used.user + used.system) / lived * 100)
                        other.kill()
                        other.wait()
                    if proc.returncode:
                        raise SystemExit(f"the {how} attack exited {proc.returncode}")
                    after = children_cpu() + sum(tree_cpu(p) for p in watched)
                    results[how].append(measure(out, after - before, args.rate, samples))
        finally:
            stop_cluster(cluster)
            stop(server)
    print(f"machine: {machine()}")
    print(f"the cluster's worker processes alone, idle: {idle * 10:.1f} % of a core")
    where = (
        "the shards on CPU 0, the workers and scheduler on CPU 1"
        if args.split
        else "the workers, their shards and the scheduler on CPU 0"
    )
    print(
        f"{args.rate:,}/s for {args.duration} s, {args.workers} processes (local) or workers "
        f"(cluster: {where}), the attack command on CPU 0, serve on CPU 1; medians of "
        f"{args.runs} runs"
    )
    print(
        f"{'':16} {'µs CPU/request':>15} {'steady':>7} {'shards only':>12} "
        f"{'p99 lateness ms':>16} {'requests':>10} {'start skew ms':>14}"
    )
    for how, rows in results.items():
        cpu = median([r[0] for r in rows])
        steady = median([r[5] for r in rows])
        own = median([r[3] for r in rows])
        late = median([r[1] for r in rows])
        done = int(median([r[2] for r in rows]))
        skew = median([r[4] for r in rows])
        print(
            f"{how:16} {cpu:15.2f} {steady:7.2f} {own:12.2f} {late:16.3f} {done:>10,} {skew:14.3f}"
        )

    def ratio(column: int) -> float:
        return median([r[column] for r in results["cluster"]]) / median(
            [r[column] for r in results["local"]]
        )

    def late(how: str) -> float:
        return median([r[1] for r in results[how]])

    print(
        f"cluster / local: CPU per request {ratio(0):.3f}x (steady {ratio(5):.3f}x, shards "
        f"{ratio(3):.3f}x), p99 lateness {late('cluster') - late('local'):+.3f} ms"
    )
    print(
        f"a neighbour burning {median(busy):.1f} % of the sending core (no Dask): p99 "
        f"lateness {late('local+neighbour') - late('local'):+.3f} ms against local"
    )


if __name__ == "__main__":
    main()
