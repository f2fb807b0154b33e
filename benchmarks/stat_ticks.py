"""How much of a load generator's CPU the kernel's tick sampling sees.

``/proc/stat`` counts a CPU's idle time exactly (from its tickless idle periods) but its
user, system and softirq time by sampling a tick. A load generator wakes for a few
hundred microseconds at a time and is rarely busy when the tick comes. This runs
``tippingpoint serve`` on CPU 1 and ``tippingpoint attack --rate R`` on CPU 0 for
``--duration`` seconds, and prints, for CPU 0 over the attack: the ticks of user, nice,
system, irq and softirq time; the busy time from the idle and steal counters (wall - idle
- steal, what ``tippingpoint.cores`` reads); and the CPU time charged to the attack's
process tree (from wait4, scaled to the scheduler's exact run time). Medians of ``--runs``.

    python benchmarks/stat_ticks.py [--rate 30000] [--duration 6] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from common import HOST, machine, median, need, pinned, start, stop, tippingpoint, wait_port

PORT = 18391
HZ = os.sysconf("SC_CLK_TCK")


def cpu_ticks(cpu: int) -> tuple[int, int]:
    """``(sampled busy ticks, idle + iowait + steal ticks)`` of one CPU."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            f = [int(x) for x in line.split()[1:9]]
            user, nice, system, idle, iowait, irq, softirq, steal = f
            return user + nice + system + irq + softirq, idle + iowait + steal
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def one_run(rate: int, duration: float) -> tuple[float, float, float]:
    """Seconds of CPU 0: sampled busy ticks, busy from the idle counters, charged."""
    cmd = pinned(
        0,
        [
            *tippingpoint(),
            "attack",
            f"http://{HOST}:{PORT}/",
            "--rate",
            str(rate),
            "--duration",
            f"{duration}s",
            "--processes",
            "1",
            "-o",
            os.devnull,
        ],
    )
    sampled0, idle0 = cpu_ticks(0)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampled1, idle1 = cpu_ticks(0)
    if proc.returncode != 0:
        raise RuntimeError(f"the attack exited {proc.returncode}")
    sampled = (sampled1 - sampled0) / HZ
    busy = wall - (idle1 - idle0) / HZ
    return sampled, busy, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=30_000)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    need("taskset")
    server = start(pinned(1, [*tippingpoint(), "serve", "--ports", str(PORT)]))
    try:
        wait_port(PORT)
        runs = [one_run(args.rate, args.duration) for _ in range(args.runs)]
    finally:
        stop(server)
    print(f"machine: {machine()}")
    print(f"attack --rate {args.rate:,} for {args.duration:g} s on CPU 0, serve on CPU 1")
    for i, (sampled, busy, charged) in enumerate(runs, 1):
        print(
            f"run {i}: CPU 0 sampled ticks {sampled:.2f} s, busy from idle {busy:.2f} s, "
            f"charged to the attack {charged:.2f} s"
        )
    sampled, busy, charged = (median([r[i] for r in runs]) for i in range(3))
    print(
        f"median: sampled ticks {sampled:.2f} s = {sampled / charged:.2f}x the attack's "
        f"{charged:.2f} s; busy from idle {busy:.2f} s = {busy / charged:.2f}x"
    )


if __name__ == "__main__":
    main()
