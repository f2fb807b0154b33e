"""The tipping points through HAProxy (1 thread), beside wrk's maximum through it.

`tippingpoint serve` (1 process) and HAProxy (nbthread 1) share CPU 1, as the
reference figures did with nginx; the load runs on CPU 0. For HTTP (keep-alive):
wrk -t1 -c50 gives the maximum the proxy passes; `tippingpoint sweep` must find its
knee at >= 0.9x that, in <= 10 steps. For TLS: the keep-alive and the
new-connection-per-request sweeps.

    python benchmarks/proxy_knee.py [--runs 3] [--step-duration 5]
    python benchmarks/proxy_knee.py --curve --step-duration 4
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

from common import HOST, machine, median, need, pinned, start, stop, tippingpoint, wait_port

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--step-duration", type=int, default=5)
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
            cacert = str(tmp / "proxy" / "tls" / "cert.pem")
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
                    result = sweep(url, args, *extra)
                    value = result["tipping_point"] or 0.0
                    label = name + ("" if not result["client_limited"] else " (client limit)")
                    results.setdefault(name, []).append(value)
                    steps.setdefault(name, []).append(len(result["steps"]))
                    print(
                        f"run {run + 1}: {label:32s} tipping point {value:9,.0f}/s in "
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
