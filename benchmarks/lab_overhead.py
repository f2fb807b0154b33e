"""What a lab costs a host that only runs a role: its Dask worker and the sampler the
bench runs there once a second, in % of a core and RSS, idle and under load.

A local cluster whose workers stand for the hosts lb, be and cl (`cluster local --hosts`);
the bench starts HAProxy through lb's worker (CPU 1), serve through be's (CPU 1) and runs
the load from cl (CPU 0). Its scenario is two attacks through HAProxy: 1 request a second
("idle": the lab open, every host sampled, nothing to carry) and --rate requests a second
("load"). lb's worker process is read from /proc once a second: its own CPU time (its
children, HAProxy, not counted) and RSS, over each attack's window without its first
3 s, and over 10 s before the bench started ("no lab": the worker alone). The nanny of
a local cluster runs in the `cluster local` process with the scheduler: it is not
counted (a `dask worker` deployment has a nanny process beside each worker, idle while
nothing restarts).

    python benchmarks/lab_overhead.py --runs 3 --rate 5000 --duration 20
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

HOSTS = ("lb", "be", "cl")
TP = [sys.executable, "-m", "tippingpoint"]


def scenario(address: str, rate: int, duration: int) -> str:
    return f"""
[bench]
title = "lab overhead"
[backends]
hosts = ["be"]
ports = "38282"
cpus = "1"
[proxy]
host = "lb"
cpus = "1"
http = "127.0.0.1:38080"
https = "127.0.0.1:38443"
[client]
hosts = ["cl"]
[cluster]
address = "{address}"
[[experiment]]
name = "idle"
kind = "attack"
frontend = "http"
rate = 1
duration = "{duration}s"
[[experiment]]
name = "load"
kind = "attack"
frontend = "http"
rate = {rate}
duration = "{duration}s"
"""


def lb_worker(address: str) -> int:
    from distributed import Client

    with Client(address, timeout="10s") as client:
        pids = client.run(os.getpid)
    return next(pid for w, pid in pids.items() if urlsplit(w).hostname == "127.0.1.1")


def watch(pid: int, samples: list[tuple[float, float, int]], stop: threading.Event) -> None:
    proc = psutil.Process(pid)
    while not stop.wait(1.0):
        times = proc.cpu_times()
        samples.append((time.monotonic(), times.user + times.system, proc.memory_info().rss))


def window(samples: list[tuple[float, float, int]], start: float, end: float) -> tuple[float, int]:
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        return float("nan"), 0
    (t0, c0, _), (t1, c1, _) = inside[0], inside[-1]
    return 100 * (c1 - c0) / (t1 - t0), max(s[2] for s in inside)


def one_run(rate: int, duration: int) -> dict[str, tuple[float, int]]:
    cluster = subprocess.Popen(
        [*TP, "cluster", "local", "--hosts", ",".join(HOSTS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert cluster.stdout is not None
        address = cluster.stdout.readline().decode().strip()
        pid = lb_worker(address)
        samples: list[tuple[float, float, int]] = []
        stop = threading.Event()
        thread = threading.Thread(target=watch, args=(pid, samples, stop), daemon=True)
        thread.start()
        time.sleep(11)
        marks = {"no lab": (samples[0][0], time.monotonic())}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "lab.toml"
            path.write_text(scenario(address, rate, duration))
            log = Path(tmp) / "bench.log"
            with open(log, "wb") as err:
                bench = subprocess.Popen(
                    [*TP, "bench", str(path), "-o", str(Path(tmp) / "out")], stderr=err
                )
            seen: dict[str, float] = {}
            while bench.poll() is None:
                text = log.read_text(errors="replace")
                for name in ("idle", "load"):
                    if name not in seen and f"bench: {name} (" in text:
                        seen[name] = time.monotonic()
                time.sleep(0.2)
            if bench.returncode != 0:
                raise SystemExit(log.read_text()[-2000:])
        stop.set()
        thread.join()
        for name, began in seen.items():
            marks[name] = (began + 3, began + duration)
        return {name: window(samples, *span) for name, span in marks.items()}
    finally:
        cluster.send_signal(signal.SIGTERM)
        cluster.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--duration", type=int, default=20)
    args = parser.parse_args()
    runs = [one_run(args.rate, args.duration) for _ in range(args.runs)]
    print(f"lb's Dask worker (HAProxy's host), {args.runs} runs, rate {args.rate:,}/s:")
    for name in ("no lab", "idle", "load"):
        cpu = [r[name][0] for r in runs]
        rss = [r[name][1] / 2**20 for r in runs]
        print(
            f"  {name:7s} CPU {statistics.median(cpu):5.2f} % of a core "
            f"({', '.join(f'{c:.2f}' for c in cpu)}), RSS {statistics.median(rss):.0f} MiB"
        )


if __name__ == "__main__":
    main()
