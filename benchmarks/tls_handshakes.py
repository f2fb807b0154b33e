"""New TLS connections per second from one client core: tippingpoint attack vs h2load.

nginx (1 worker, on CPU 1) terminates TLS 1.3 with the bench's own certificate, ECDSA
P-256 or RSA 2048, and answers "pong". Each client in turn runs on CPU 0 and opens a new
connection for every request (one full handshake each):

- h2load --h1 -n N -c N -t 1 (N connections, one request each; h2load never verifies);
- tippingpoint attack --no-keepalive --rate 0 --connections 50 --processes 1, with
  --insecure, with --cacert (verification against the bench's CA), and with --tls-resume
  (what resumption buys: abbreviated handshakes, verification on).

Handshakes/s is completed requests over the time from the first to the last; CPU per
handshake is the client's CPU time over its requests: h2load's from wait4, the attack
process's from its own records (start-up excluded). Clients take turns, round after
round; medians.

    python benchmarks/tls_handshakes.py [--runs 3] [--duration 10] [--keys ecdsa,rsa]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from client_cost import Cpu, timed
from common import (
    HOST,
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
from tippingpoint.certs import make_certificate

PORT = 18443
URL = f"https://{HOST}:{PORT}/ping"

NGINX_TLS = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    fastcgi_temp_path {dir};
    uwsgi_temp_path {dir};
    scgi_temp_path {dir};
    server {{
        listen {host}:{port} ssl reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        location / {{ return 200 "pong"; }}
    }}
}}
"""


def h2load(duration: int, expected_rate: float) -> Callable[[], tuple[int, float, Cpu]]:
    def run() -> tuple[int, float, Cpu]:
        n = max(1000, int(expected_rate * duration))
        out, cpu = timed(pinned(0, ["h2load", "--h1", "-n", str(n), "-c", str(n), "-t", "1", URL]))
        done = int(_find(r"requests: \d+ total, \d+ started, (\d+) done", out))
        elapsed = _find(r"finished in ([\d.]+)s", out)
        return done, float(elapsed), cpu

    return run


def ours(
    duration: int, tmp: Path, tls: list[str], src: Path | None = None
) -> Callable[[], tuple[int, float, Cpu]]:
    def run() -> tuple[int, float, Cpu]:
        stream = tmp / "tls.jsonl"
        stream.unlink(missing_ok=True)
        cmd = [
            *tippingpoint(src),
            "attack",
            URL,
            "--rate",
            "0",
            "--no-keepalive",
            "--connections",
            "50",
            "--processes",
            "1",
            "--duration",
            f"{duration}s",
            "-o",
            str(stream),
            *tls,
        ]
        timed(pinned(0, cmd))
        report = json.loads(
            subprocess.run(
                [*tippingpoint(), "report", "--type", "json", str(stream)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        if report["success"] < 0.999:
            raise RuntimeError(f"{cmd}: success {report['success']}: {report['errors'][:3]}")
        # The attack process's own CPU while it ran (its records' cpu_us), without the
        # second of Python start-up that h2load does not have.
        cpu_us = sum(
            r["cpu_us"]
            for r in map(json.loads, stream.read_text().splitlines())
            if r.get("type") == "interval"
        )
        return report["requests"], report["duration"] / 1e9, Cpu(cpu_us / 1e6, 0.0)

    return run


def _find(pattern: str, out: str) -> str:
    match = re.search(pattern, out)
    if not match:
        raise RuntimeError(f"no match for {pattern!r} in:\n{out[-2000:]}")
    return match.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--keys", default="ecdsa,rsa")
    parser.add_argument(
        "--baseline", default=None, help="root of another checkout: its attack runs too"
    )
    args = parser.parse_args()
    need("h2load", "nginx", "taskset")
    baseline = baseline_src(args.baseline) if args.baseline else None
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for key in args.keys.split(","):
            cert, key_file, _ = make_certificate(tmp / key, key)
            conf = tmp / f"nginx-{key}.conf"
            conf.write_text(
                NGINX_TLS.format(dir=tmp, host=HOST, port=PORT, cert=cert, key=key_file)
            )
            table = {
                "h2load": h2load(args.duration, 2000 if key == "ecdsa" else 600),
                "tippingpoint --insecure": ours(args.duration, tmp, ["--insecure"]),
                "tippingpoint --cacert": ours(args.duration, tmp, ["--cacert", str(cert)]),
                "tippingpoint --cacert --tls-resume": ours(
                    args.duration, tmp, ["--cacert", str(cert), "--tls-resume"]
                ),
            }
            if baseline is not None:
                table["baseline --insecure"] = ours(args.duration, tmp, ["--insecure"], baseline)
                table["baseline --cacert"] = ours(
                    args.duration, tmp, ["--cacert", str(cert)], baseline
                )
            server = start(pinned(1, ["nginx", "-c", str(conf)]))
            try:
                wait_port(PORT)
                for run in range(args.runs):
                    for name, fn in table.items():
                        done, elapsed, cpu = fn()
                        rate, us = done / elapsed, cpu.total / done * 1e6
                        results.setdefault((key, name), []).append((rate, us))
                        print(
                            f"run {run + 1}: {key:5s} {name:36s} {rate:8,.0f}/s "
                            f"{us:7.0f} µs CPU each",
                            flush=True,
                        )
                        time.sleep(1)
            finally:
                stop(server)
    print(f"\nmachine: {machine()}")
    print(
        f"nginx 1 worker on CPU 1, TLS 1.3; clients on CPU 0, a new connection per request, "
        f"{args.duration} s, median of {args.runs}\n"
    )
    print("| key | client | handshakes/s | CPU per handshake | vs h2load (rate) | runs |")
    print("|---|---|---|---|---|---|")
    for key in args.keys.split(","):
        base = median([r for r, _ in results[(key, "h2load")]])
        for (k, name), values in results.items():
            if k != key:
                continue
            rate = median([r for r, _ in values])
            us = median([u for _, u in values])
            runs = ", ".join(f"{r:,.0f}" for r, _ in values)
            print(f"| {key} | {name} | {rate:,.0f} | {us:,.0f} µs | {rate / base:.2f}x | {runs} |")


if __name__ == "__main__":
    sys.exit(main())
