"""Hold N concurrent connections client -> `tippingpoint serve`, both on this machine.

The backend gets enough processes for the 20,000-descriptor limit (one per 19,000
connections) on 10 ports; `tippingpoint hold` plans its own processes and spreads its
connections over source addresses 127.0.0.2... and the 10 ports. Reported: time to
establish, connections lost, memory (kernel slab, user space of both sides), and the
processes and addresses used. Everything stops by itself after --hold seconds.

    python benchmarks/hold_connections.py --connections 1000000 --connect-rate 20000 --hold 60
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import tempfile
import time
from pathlib import Path

from common import machine, need, start, stop, tippingpoint, wait_port

PORTS = "8282-8291"


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        out[name] = int(rest.split()[0])
    return out


def tree_rss_kib(pid: int) -> int:
    out = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)], capture_output=True, text=True
    ).stdout
    return sum(int(x) for x in out.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--connect-rate", type=int, default=20_000)
    parser.add_argument("--hold", type=int, default=60)
    parser.add_argument("--request-every", default=None)
    args = parser.parse_args()
    need("taskset")
    n = args.connections
    serve_processes = max(1, math.ceil(n / 19_000))
    addresses = max(1, math.ceil(n / (28_000 * 10)) + 1)
    laddr = f"127.0.0.2-127.0.0.{1 + addresses}"
    # The ramp may take longer than N / rate when the machine is busy opening them: leave
    # it twice the time, so that the connections are held for at least --hold seconds.
    ramp = n / args.connect_rate
    duration = int(2 * ramp + args.hold + 5)
    before = meminfo()
    with tempfile.TemporaryDirectory() as tmp:
        server = start(
            [
                *tippingpoint(),
                "serve",
                "--ports",
                PORTS,
                "--processes",
                str(serve_processes),
                "--metrics-port",
                "9299",
            ],
            Path(tmp) / "serve.log",
        )
        try:
            wait_port(9299, timeout=120)
            cmd = [
                *tippingpoint(),
                "hold",
                "http://127.0.0.1:8282/",
                "--connections",
                str(n),
                "--connect-rate",
                str(args.connect_rate),
                "--duration",
                f"{duration}s",
                "--ports",
                PORTS,
                "--laddr",
                laddr,
            ]
            if args.request_every:
                cmd += ["--request-every", args.request_every]
            t0 = time.monotonic()
            hold = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            peak_slab = peak_used = serve_rss = 0
            while hold.poll() is None:
                time.sleep(2)
                m = meminfo()
                peak_slab = max(peak_slab, m["Slab"] - before["Slab"])
                peak_used = max(
                    peak_used,
                    (m["MemTotal"] - m["MemAvailable"])
                    - (before["MemTotal"] - before["MemAvailable"]),
                )
                serve_rss = max(serve_rss, tree_rss_kib(server.pid))
            out, err = hold.communicate()
            elapsed = time.monotonic() - t0
        finally:
            stop(server, timeout=60)
    print(f"machine: {machine()}")
    print(f"command: {' '.join(cmd[2:])}")
    print(err.strip().splitlines()[0] if err.strip() else "")
    print(out.strip())
    established = re.search(r"all established after (\d+) s", out)
    print(f"serve: {serve_processes} processes on 10 ports; client source addresses {laddr}")
    print(
        f"peak memory used (all processes and kernel) +{peak_used / 2**20:.2f} GiB; "
        f"kernel slab +{peak_slab / 2**20:.2f} GiB ({peak_slab * 1024 / n:,.0f} B per "
        f"connection); serve RSS {serve_rss / 2**20:.2f} GiB "
        f"({serve_rss * 1024 / n:,.0f} B per connection incl. process baselines)"
    )
    if established:
        held = duration - int(established.group(1))
        print(
            f"wall time {elapsed:.0f} s; all established after {established.group(1)} s, "
            f"then held {held} s"
        )
    else:
        print(f"wall time {elapsed:.0f} s")


if __name__ == "__main__":
    main()
