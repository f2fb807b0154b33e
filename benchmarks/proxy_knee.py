"""The tipping points through HAProxy (1 thread), beside wrk's maximum through it.

`tippingpoint serve` (1 process) and HAProxy (nbthread 1, `proxy --cpus 1`) share CPU
1, as the reference figures did with nginx; the load runs on CPU 0. Where they run is
read back from /proc and printed first. For HTTP (keep-alive):
wrk -t1 -c50 gives the maximum the proxy passes; `tippingpoint sweep` must find its
knee at >= 0.9x that, in <= 10 steps: the open-model sweep (rates) and the closed one
(`--closed`: connections 4, 8, 16... in a closed loop, as wrk). For TLS: the
keep-alive and the new-connection-per-request sweeps.

    python benchmarks/proxy_knee.py [--runs 3] [--step-duration 5]
    python benchmarks/proxy_knee.py --curve --step-duration 4
    python benchmarks/proxy_knee.py --cost [--runs 3]

--cost: what a request costs CPU 1 (HAProxy and serve together, their CPU time from
/proc) under wrk's closed loop, under ours, and under constant rates (the open model),
with the rate and p99 each load got.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil

from common import HOST, machine, median, need, pinned, start, stop, tippingpoint, wait_port
from tippingpoint.placement import cpu_list, cpus_of, descendants

HTTP, HTTPS = 18480, 18443


def sweep(
    url: str,
    args: argparse.Namespace,
    *extra: str,
    step: str = "x1.4",
    max_steps: int = 10,
    refine: int = 2,
) -> dict:
    out = subprocess.run(
        pinned(
            0,
            [
                *tippingpoint(),
                "sweep",
                url,
                "--step",
                step,
                "--step-duration",
                f"{args.step_duration}s",
                "--max-steps",
                str(max_steps),
                "--refine",
                str(refine),
                "--processes",
                "1",
                "--json",
                *extra,
            ],
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def wrk_max() -> float:
    out = subprocess.run(
        pinned(0, ["wrk", "-t1", "-c50", "-d10s", f"http://{HOST}:{HTTP}/ping"]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def tree_cpu(*procs: subprocess.Popen[bytes]) -> float:
    """CPU seconds (user + sys) used so far by these processes and their descendants."""
    total = 0.0
    for proc in procs:
        root = psutil.Process(proc.pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
    return total


def wrk_load(seconds: int) -> tuple[float, float]:
    out = subprocess.run(
        pinned(
            0, ["wrk", "-t1", "-c50", f"-d{seconds}s", "--latency", f"http://{HOST}:{HTTP}/ping"]
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return rate, float(p99.group(1)) * scale


def our_load(seconds: int, *args: str) -> tuple[float, float]:
    stream = subprocess.run(
        pinned(
            0,
            [
                *tippingpoint(),
                "attack",
                f"http://{HOST}:{HTTP}/ping",
                "--duration",
                f"{seconds}s",
                "--processes",
                "1",
                *args,
            ],
        ),
        capture_output=True,
        check=True,
    ).stdout
    report = json.loads(
        subprocess.run(
            [*tippingpoint(), "report", "--type", "json"],
            input=stream,
            capture_output=True,
            check=True,
        ).stdout
    )
    return report["throughput"], report["latencies"]["99th"] / 1e6


def cost(runs: int, servers: tuple[subprocess.Popen[bytes], ...]) -> None:
    seconds = 8
    loads: dict[str, Callable[[], tuple[float, float]]] = {
        "wrk -t1 -c50 (closed loop)": lambda: wrk_load(seconds),
        "tippingpoint attack --rate 0 --connections 50 (closed loop)": lambda: our_load(
            seconds, "--rate", "0", "--connections", "50"
        ),
    }
    for rate in (10_000, 20_000, 25_000, 30_000):
        loads[f"tippingpoint attack --rate {rate} (open model)"] = lambda rate=rate: our_load(
            seconds, "--rate", str(rate), "--max-connections", "128"
        )
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for run in range(runs):
        for name, load in loads.items():
            before = tree_cpu(*servers)
            rate, p99 = load()
            used = tree_cpu(*servers) - before
            per_request = used / (rate * seconds) * 1e6
            rows.setdefault(name, []).append((rate, p99, per_request))
            print(
                f"run {run + 1}: {name:62s} {rate:9,.0f}/s p99 {p99:8.2f} ms; "
                f"CPU 1: {per_request:5.1f} µs per request",
                flush=True,
            )
    print(f"\nmachine: {machine()}")
    print(
        f"HAProxy (nbthread 1) and serve (1 process) on CPU 1, the load on CPU 0, {seconds} s each,"
    )
    print(f"median of {runs}: CPU time of HAProxy + serve (user + sys) per request carried\n")
    print("| load | achieved | p99 | CPU 1 per request (HAProxy + serve) |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        print(
            f"| {name} | {median([v[0] for v in values]):,.0f}/s | "
            f"{median([v[1] for v in values]):.2f} ms | {median([v[2] for v in values]):.1f} µs |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--step-duration", type=int, default=5)
    parser.add_argument(
        "--cost",
        action="store_true",
        help="CPU 1's cost per request under closed and open-model loads",
    )
    parser.add_argument(
        "--curve",
        action="store_true",
        help="print the whole HTTP curve from 10,000/s (x1.2, no p99 rule) beside wrk, once",
    )
    args = parser.parse_args()
    need("wrk", "haproxy", "taskset")
    results: dict[str, list[float]] = {}
    steps: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        serve = start(
            pinned(1, [*tippingpoint(), "serve", "--ports", "18282-18285", "--processes", "1"])
        )
        proxy = start(
            [
                *tippingpoint(),
                "proxy",
                "--backends",
                "127.0.0.1:18282-18285",
                "--http",
                f"{HOST}:{HTTP}",
                "--https",
                f"{HOST}:{HTTPS}",
                "--cpus",
                "1",
                "--dir",
                str(tmp / "proxy"),
            ]
        )
        try:
            wait_port(18285)
            wait_port(HTTP)
            # The placement, read back: HAProxy and serve share CPU 1, the load has CPU 0.
            for role, proc in (("serve", serve), ("proxy", proxy)):
                tree = [proc.pid, *descendants(proc.pid)]
                print(f"{role}: pids {tree} on CPUs {cpu_list(cpus_of(tree[-1:]))} (/proc)")
            cacert = str(tmp / "proxy" / "tls" / "cert.pem")
            if args.cost:
                cost(args.runs, (serve, proxy))
                return
            if args.curve:
                print(f"wrk -t1 -c50 through HAProxy: {wrk_max():,.0f} req/s")
                result = sweep(
                    f"http://{HOST}:{HTTP}/ping",
                    args,
                    "--start",
                    "10000",
                    "--factor",
                    "100000",
                    "--floor",
                    "100000",
                    "--proxy-dir",
                    str(tmp / "proxy"),
                    step="x1.2",
                    max_steps=8,
                    refine=0,
                )
                print("| offered/s | achieved/s | p50 ms | p99 ms | HAProxy CPU |")
                print("|---|---|---|---|---|")
                for row in result["steps"]:
                    print(
                        f"| {row['offered']:,.0f} | {row['achieved']:,.0f} | "
                        f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['proxy_cpu_pct']} % |"
                    )
                return
            for run in range(args.runs):
                wrk = wrk_max()
                results.setdefault("wrk max, HTTP", []).append(wrk)
                cases = {
                    "HTTP keep-alive": (f"http://{HOST}:{HTTP}/ping", "--start", "5000"),
                    "HTTP closed loop (sweep --closed)": (
                        f"http://{HOST}:{HTTP}/ping",
                        "--closed",
                        "--start",
                        "4",
                    ),
                    "TLS keep-alive": (
                        f"https://{HOST}:{HTTPS}/ping",
                        "--start",
                        "3000",
                        "--cacert",
                        cacert,
                    ),
                    "TLS new connection": (
                        f"https://{HOST}:{HTTPS}/ping",
                        "--start",
                        "100",
                        "--cacert",
                        cacert,
                        "--no-keepalive",
                    ),
                }
                for name, (url, *extra) in cases.items():
                    closed = "--closed" in extra
                    result = sweep(url, args, *extra, step="x2" if closed else "x1.4")
                    value = result["tipping_point"] or 0.0
                    label = name + ("" if not result["client_limited"] else " (client limit)")
                    results.setdefault(name, []).append(value)
                    steps.setdefault(name, []).append(len(result["steps"]))
                    at = (
                        f" with {result['knee_connections']} connections"
                        if result.get("knee_connections")
                        else ""
                    )
                    print(
                        f"run {run + 1}: {label:34s} tipping point {value:9,.0f}/s{at} in "
                        f"{len(result['steps'])} steps ({result['reason']})",
                        flush=True,
                    )
                print(f"run {run + 1}: wrk -t1 -c50 through HAProxy: {wrk:,.0f} req/s", flush=True)
        finally:
            stop(proxy)
            stop(serve)
    print(f"\nmachine: {machine()}")
    wrk = median(results["wrk max, HTTP"])
    print("\n| case | tipping point (median) | runs | steps | vs wrk's max |")
    print("|---|---|---|---|---|")
    for name, values in results.items():
        if name.startswith("wrk"):
            continue
        ratio = f"{median(values) / wrk:.2f}x" if name.startswith("HTTP") else "-"
        print(
            f"| {name} | {median(values):,.0f}/s | {', '.join(f'{v:,.0f}' for v in values)} | "
            f"{', '.join(map(str, steps[name]))} | {ratio} |"
        )
    print(
        f"| wrk -t1 -c50, HTTP keep-alive | {wrk:,.0f}/s (maximum) | "
        f"{', '.join(f'{v:,.0f}' for v in results['wrk max, HTTP'])} | - | 1.00x |"
    )


if __name__ == "__main__":
    main()
