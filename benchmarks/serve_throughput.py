"""Backend throughput: tippingpoint serve vs the article's Node.js server vs nginx.

Each server runs alone on CPU 1 (one process / one worker); wrk runs on CPU 0 with
one thread and 200 keep-alive connections. The servers take turns, round after round,
so that drift of a noisy machine hits them all alike. Prints medians and ratios.

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

from common import HOST, ROOT, machine, median, need, pinned, start, stop, tippingpoint, wait_port

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


def servers(tmp: Path) -> dict[str, tuple[list[str], int]]:
    node = shutil.which("node") or "nodejs"
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp, host=HOST, port=18283))
    return {
        "tippingpoint serve": (
            [*tippingpoint(), "serve", "--ports", "18281", "--processes", "1"],
            18281,
        ),
        "node (article)": ([node, str(ROOT / "benchmarks/node/pingpong.js"), "18282"], 18282),
        "nginx 1 worker": (["nginx", "-c", str(tmp / "nginx.conf")], 18283),
        "bare uvloop (no parsing)": (
            [sys.executable, str(ROOT / "benchmarks/bare_pong.py"), "18284"],
            18284,
        ),
    }


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
    args = parser.parse_args()
    need("wrk", "nginx", "taskset")
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        table = servers(Path(tmpdir))
        for run in range(args.runs):
            for name, (cmd, port) in table.items():
                proc = start(pinned(1, cmd))
                try:
                    wait_port(port)
                    wrk(port, 1, args.connections)  # warm-up
                    rate = wrk(port, args.duration, args.connections)
                finally:
                    stop(proc)
                results.setdefault(name, []).append(rate)
                print(f"run {run + 1}: {name:20s} {rate:10,.0f} req/s", flush=True)
    print(f"\nmachine: {machine()}")
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration}s on CPU 0, server on CPU 1, "
        f"median of {args.runs}\n"
    )
    ours = median(results["tippingpoint serve"])
    print("| server | req/s (median) | runs | tippingpoint / this |")
    print("|---|---|---|---|")
    for name, rates in results.items():
        m = median(rates)
        runs = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"| {name} | {m:,.0f} | {runs} | {ours / m:.2f}x |")


if __name__ == "__main__":
    main()
