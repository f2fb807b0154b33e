"""Where a cluster attack's CPU goes, by process, in its steady state: one attack through
a local cluster of 2 workers, each process's share of a core over 20 s of the middle of
the run (from 14 s after launch).

`serve` on CPU 1; the cluster (scheduler and nannies in the `cluster local` process, the
workers, their zygotes, the runs' processes and shards) and the attack command on CPU 0.

    python benchmarks/cluster_roles.py --rate 40000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from common import (
    machine,
    need,
    pinned,
    start,
    start_cluster,
    stop,
    stop_cluster,
    tippingpoint,
    wait_port,
)

WINDOW_S = 20


def role(proc: psutil.Process) -> str:
    command = " ".join(proc.cmdline())
    if "cluster.zygote" in command:  # the zygote, a run it forked, or a run's shard
        depth = 0
        parent = proc.parent()
        while parent is not None and "cluster.zygote" in " ".join(parent.cmdline()):
            depth += 1
            parent = parent.parent()
        return ("zygote", "run", "shard")[min(depth, 2)]
    if "spawn_main" in command:
        return "worker"
    if "resource_tracker" in command:
        return "resource tracker"
    if "cluster local" in command:
        return "scheduler and nannies"
    return "attack command (the client)"


def snapshot(roots: list[int]) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds) of the trees under ``roots``."""
    out = {}
    for root in roots:
        try:
            top = psutil.Process(root)
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                cpu = proc.cpu_times()
                out[proc.pid] = (role(proc), cpu.user + cpu.system)
            except psutil.NoSuchProcess:
                continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=40_000)
    args = parser.parse_args()
    need("taskset")
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        server = start(
            pinned(1, [*tippingpoint(), "serve", "--ports", "8282-8285", "--processes", "1"]),
            Path(tmp) / "serve.log",
        )
        cluster, address = start_cluster(2, cpu=0)
        try:
            wait_port(8285)
            time.sleep(3)
            command = [
                *tippingpoint(), "attack", "http://127.0.0.1:8282/", "--rate", str(args.rate),
                "--duration", f"{WINDOW_S + 20}s", "--cluster", address,
                "-o", str(Path(tmp) / "attack.jsonl"),
            ]  # fmt: skip
            attack = subprocess.Popen(
                pinned(0, command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(14)
            before = snapshot([cluster.pid, attack.pid])
            time.sleep(WINDOW_S)
            after = snapshot([cluster.pid, attack.pid])
            attack.wait()
        finally:
            stop_cluster(cluster)
            stop(server)
    print(f"machine: {machine()}")
    print(f"{args.rate:,}/s through a local cluster of 2 workers; {WINDOW_S} s mid-run")
    print(f"{'process':30} {'% of a core':>12}")
    for pid, (name, cpu) in sorted(after.items(), key=lambda kv: kv[1][0]):
        cpu0 = before.get(pid, (name, 0.0))[1]
        print(f"{name:30} {(cpu - cpu0) / WINDOW_S * 100:12.2f}")


if __name__ == "__main__":
    main()
