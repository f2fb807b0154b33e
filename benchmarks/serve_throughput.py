"""Backend throughput: tippingpoint serve vs the article's Node.js server vs nginx.

Each server runs alone on CPU 1 (one process / one worker); wrk runs on CPU 0 with
one thread and 200 keep-alive connections. The servers take turns, round after round,
so that drift of a noisy machine hits them all alike. Prints medians and ratios, and
each server's CPU time (its process tree, user + sys) per request.

With --baseline DIR, the `tippingpoint serve` of another checkout runs in every round
too, and the change in CPU per request is the median of the rounds' ratios.

    python benchmarks/serve_throughput.py [--runs 3] [--duration 10] [--connections 200]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from common import (
    HOST,
    ROOT,
    baseline_src,
    machine,
    median,
    need,
    pinned,
    start,
    stop,
    tippingpoint,
    wait_port,
)

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    fastcgi_temp_path {dir};
    uwsgi_temp_path {dir};
    scgi_temp_path {dir};
    server {{
        listen {host}:{port} reuseport;
        location / {{ return 200 "pong"; }}
    }}
}}
"""


def servers(tmp: Path, baseline: Path | None) -> dict[str, tuple[list[str], int]]:
    node = shutil.which("node") or "nodejs"
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp, host=HOST, port=18283))
    before = {}
    if baseline is not None:
        before["tippingpoint serve (baseline)"] = (
            [*tippingpoint(baseline), "serve", "--ports", "18285", "--processes", "1"],
            18285,
        )
    return {
        "tippingpoint serve": (
            [*tippingpoint(), "serve", "--ports", "18281", "--processes", "1"],
            18281,
        ),
        **before,
        "node (article)": ([node, str(ROOT / "benchmarks/node/pingpong.js"), "18282"], 18282),
        "nginx 1 worker": (["nginx", "-c", str(tmp / "nginx.conf")], 18283),
        "bare uvloop (no parsing)": (
            [sys.executable, str(ROOT / "benchmarks/bare_pong.py"), "18284"],
            18284,
        ),
    }


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + sys) used so far by a process and its children."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def wrk(port: int, duration: int, connections: int) -> float:
    out = subprocess.run(
        pinned(
            0, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"http://{HOST}:{port}/ping"]
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--only", default=None, help="comma-separated server names")
    parser.add_argument(
        "--baseline",
        default=None,
        help="root of another checkout: its `tippingpoint serve` runs too (before/after)",
    )
    args = parser.parse_args()
    need("wrk", "nginx", "taskset")
    baseline = baseline_src(args.baseline) if args.baseline else None
    results: dict[str, list[float]] = {}
    cpu_us: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        table = servers(Path(tmpdir), baseline)
        if args.only:
            table = {k: v for k, v in table.items() if k in args.only.split(",")}
        for run in range(args.runs):
            for name, (cmd, port) in table.items():
                proc = start(pinned(1, cmd))
                try:
                    wait_port(port)
                    wrk(port, 1, args.connections)  # warm-up
                    cpu0 = tree_cpu(proc.pid)
                    rate = wrk(port, args.duration, args.connections)
                    used = tree_cpu(proc.pid) - cpu0
                finally:
                    stop(proc)
                results.setdefault(name, []).append(rate)
                per = used / (rate * args.duration) * 1e6
                cpu_us.setdefault(name, []).append(per)
                print(
                    f"run {run + 1}: {name:20s} {rate:10,.0f} req/s {per:6.2f} µs CPU/request",
                    flush=True,
                )
    print(f"\nmachine: {machine()}")
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration}s on CPU 0, server on CPU 1, "
        f"median of {args.runs}\n"
    )
    ours = median(results["tippingpoint serve"])
    print("| server | req/s (median) | CPU per request | runs (req/s) | tippingpoint / this |")
    print("|---|---|---|---|---|")
    for name, rates in results.items():
        m = median(rates)
        runs = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"| {name} | {m:,.0f} | {median(cpu_us[name]):.2f} µs | {runs} | {ours / m:.2f}x |")
    if "tippingpoint serve (baseline)" in results:
        # The server's own CPU time per request (the rate also depends on how much of the
        # core the machine lends it: on a shared VM it drifts by +-20 % between rounds).
        # Each round's pair ran back to back: the median of their ratios.
        after, before = cpu_us["tippingpoint serve"], cpu_us["tippingpoint serve (baseline)"]
        pairs = zip(after, before, strict=True)
        change = median([a / b for a, b in pairs]) - 1
        print(
            "\nCPU per request, this tree against the baseline (median of the rounds' "
            f"ratios): {change * 100:+.1f} %"
        )


if __name__ == "__main__":
    main()
