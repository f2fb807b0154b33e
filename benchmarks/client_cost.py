"""Client cost per request: tippingpoint attack vs wrk, ab, h2load, hey and Locust.

nginx (1 worker) answers "pong" on CPU 1; each client in turn runs on CPU 0 in a
closed loop with 50 keep-alive connections for --duration seconds. The client's CPU
time (user + sys, its whole process tree, from wait4) divided by the requests it
completed gives the cost per request. Clients take turns round after round; medians.

Beside them, benchmarks/bare_client.py: a uvloop client with nothing but the two
syscalls and one Python callback per request (no parsing, no timing, no records),
the floor any Python client on uvloop stands on.

Also the open model: `tippingpoint attack --rate R` for the same duration, with the
achieved rate and the p99 send lateness (how late requests left their schedule).

    python benchmarks/client_cost.py [--runs 3] [--duration 10] [--rate 80000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

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
from serve_throughput import NGINX_CONF

HERE = Path(__file__).resolve().parent
PORT = 18300
URL = f"http://{HOST}:{PORT}/ping"
CONNS = 50

LOCUSTFILE = textwrap.dedent("""
    from locust import constant, task
    from locust.contrib.fasthttp import FastHttpUser

    class Ping(FastHttpUser):
        wait_time = constant(0)

        @task
        def ping(self):
            self.client.get("/ping")
""")


class Cpu(NamedTuple):
    """CPU seconds of a process tree, in user space and in the kernel."""

    user: float
    sys: float

    @property
    def total(self) -> float:
        return self.user + self.sys


def timed(cmd: list[str]) -> tuple[str, Cpu]:
    """Run ``cmd``; its stdout+stderr and the CPU time of its process tree."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0:4]} failed ({proc.returncode}):\n{out[-2000:]}")
    return out, Cpu(usage.ru_utime, usage.ru_stime)


def count(pattern: str, out: str) -> int:
    match = re.search(pattern, out)
    if not match:
        raise RuntimeError(f"no match for {pattern!r} in:\n{out[-2000:]}")
    return int(match.group(1))


def clients(
    duration: int, tmp: Path, baseline: Path | None = None
) -> dict[str, Callable[[], tuple[int, Cpu]]]:
    def wrk() -> tuple[int, Cpu]:
        out, cpu = timed(pinned(0, ["wrk", "-t1", f"-c{CONNS}", f"-d{duration}s", URL]))
        return count(r"(\d+) requests in", out), cpu

    def ab() -> tuple[int, Cpu]:
        out, cpu = timed(
            pinned(
                0, ["ab", "-k", "-q", "-c", str(CONNS), "-t", str(duration), "-n", "100000000", URL]
            )
        )
        return count(r"Complete requests:\s+(\d+)", out), cpu

    def h2load() -> tuple[int, Cpu]:
        out, cpu = timed(
            pinned(0, ["h2load", "--h1", f"-c{CONNS}", "-t1", "-D", str(duration), URL])
        )
        return count(r"requests: \d+ total, \d+ started, (\d+) done", out), cpu

    def hey() -> tuple[int, Cpu]:
        out, cpu = timed(pinned(0, ["hey", "-c", str(CONNS), "-z", f"{duration}s", URL]))
        return count(r"\[200\]\s+(\d+) responses", out), cpu

    def locust() -> tuple[int, Cpu]:
        (tmp / "locustfile.py").write_text(LOCUSTFILE)
        prefix = tmp / "locust"
        _, cpu = timed(
            pinned(
                0,
                [
                    sys.executable,
                    "-m",
                    "locust",
                    "-f",
                    str(tmp / "locustfile.py"),
                    "--headless",
                    "-u",
                    str(CONNS),
                    "-r",
                    str(CONNS),
                    "-t",
                    f"{duration}s",
                    "--host",
                    f"http://{HOST}:{PORT}",
                    "--csv",
                    str(prefix),
                    "--only-summary",
                    "--loglevel",
                    "ERROR",
                ],
            )
        )
        with open(f"{prefix}_stats.csv") as f:
            rows = {row["Name"]: row for row in csv.DictReader(f)}
        return int(rows["Aggregated"]["Request Count"]), cpu

    def ours(src: Path | None = None) -> tuple[int, Cpu]:
        stream = tmp / "stream.jsonl"
        stream.unlink(missing_ok=True)
        _, cpu = timed(
            pinned(
                0,
                [
                    *tippingpoint(src),
                    "attack",
                    URL,
                    "--rate",
                    "0",
                    "--connections",
                    str(CONNS),
                    "--duration",
                    f"{duration}s",
                    "--processes",
                    "1",
                    "-o",
                    str(stream),
                ],
            )
        )
        return report(stream)["requests"], cpu

    def bare() -> tuple[int, Cpu]:
        out, cpu = timed(
            pinned(
                0,
                [
                    sys.executable,
                    str(HERE / "bare_client.py"),
                    HOST,
                    str(PORT),
                    str(CONNS),
                    str(duration),
                ],
            )
        )
        return int(out.split()[-1]), cpu

    return {
        "tippingpoint attack": ours,
        **({"tippingpoint attack (baseline)": lambda: ours(baseline)} if baseline else {}),
        "bare uvloop client (floor)": bare,
        "wrk": wrk,
        "ab": ab,
        "h2load": h2load,
        "hey": hey,
        "locust FastHttpUser": locust,
    }


def report(stream: Path) -> dict:
    out = subprocess.run(
        [*tippingpoint(), "report", "--type", "json", str(stream)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def open_model(
    rate: int, duration: int, tmp: Path, processes: int = 1, src: Path | None = None
) -> dict:
    """One constant-rate run; with more than one process the generator gets every core
    (nginx stays on CPU 1), as `--processes` would be used on this machine."""
    stream = tmp / "open.jsonl"
    stream.unlink(missing_ok=True)
    _, cpu = timed(
        pinned(
            0 if processes == 1 else f"0-{(os.cpu_count() or 2) - 1}",
            [
                *tippingpoint(src),
                "attack",
                URL,
                "--rate",
                str(rate),
                "--duration",
                f"{duration}s",
                "--processes",
                str(processes),
                "-o",
                str(stream),
            ],
        )
    )
    r = report(stream)
    return {
        "planned": rate * duration,
        "sent": r["sent"],
        "rate": r["rate"],
        "lateness_p99_ms": r["lateness"]["99th"] / 1e6,
        "lateness_p999_ms": r["lateness"]["99.9th"] / 1e6,
        "latency_p99_ms": r["latencies"]["99th"] / 1e6,
        "cpu_us": cpu.total / max(r["requests"], 1) * 1e6,
        "saturated": r["saturation"]["saturated"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rate", type=int, default=80000)
    parser.add_argument("--only", default=None, help="comma-separated client names")
    parser.add_argument(
        "--open-processes", type=int, default=1, help="--processes of the constant-rate runs"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help="root of another checkout: its `tippingpoint attack` runs too (before/after)",
    )
    args = parser.parse_args()
    baseline = baseline_src(args.baseline) if args.baseline else None
    need("wrk", "ab", "h2load", "hey", "nginx", "taskset")
    if args.only is None or "locust" in args.only:
        try:
            import locust  # noqa: F401
        except ImportError:
            sys.exit("missing locust: .venv/bin/pip install -e '.[bench]'")
    cost: dict[str, list[float]] = {}
    user: dict[str, list[float]] = {}
    kernel: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    opens: list[dict] = []
    opens_before: list[dict] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp, host=HOST, port=PORT))
        server = start(pinned(1, ["nginx", "-c", str(tmp / "nginx.conf")]))
        try:
            wait_port(PORT)
            table = clients(args.duration, tmp, baseline)
            if args.only:
                table = {k: v for k, v in table.items() if k in args.only.split(",")}
            for run in range(args.runs):
                for name, fn in table.items():
                    requests, cpu = fn()
                    cost.setdefault(name, []).append(cpu.total / requests * 1e6)
                    user.setdefault(name, []).append(cpu.user / requests * 1e6)
                    kernel.setdefault(name, []).append(cpu.sys / requests * 1e6)
                    rates.setdefault(name, []).append(requests / args.duration)
                    print(
                        f"run {run + 1}: {name:26s} {requests / args.duration:10,.0f} req/s "
                        f"{cpu.total / requests * 1e6:7.2f} us CPU/request "
                        f"(user {cpu.user / requests * 1e6:.2f}, "
                        f"sys {cpu.sys / requests * 1e6:.2f})",
                        flush=True,
                    )
                    time.sleep(1)
                if args.rate:
                    result = open_model(args.rate, args.duration, tmp, args.open_processes)
                    opens.append(result)
                    print(f"run {run + 1}: open model {args.rate}/s: {result}", flush=True)
                    if baseline is not None:
                        result = open_model(
                            args.rate, args.duration, tmp, args.open_processes, baseline
                        )
                        opens_before.append(result)
                        print(f"run {run + 1}: baseline open model: {result}", flush=True)
        finally:
            stop(server)
    print(f"\nmachine: {machine()}")
    print(
        f"nginx 1 worker on CPU 1; clients on CPU 0, {CONNS} keep-alive connections, "
        f"{args.duration} s, median of {args.runs}\n"
    )
    base = median(cost["wrk"]) if "wrk" in cost else None
    print("| client | req/s | CPU per request (user+sys) | user | sys | vs wrk | runs |")
    print("|---|---|---|---|---|---|---|")
    for name in cost:
        c = median(cost[name])
        ratio = f"{c / base:.2f}x" if base else "-"
        runs = ", ".join(f"{v:.2f}" for v in cost[name])
        print(
            f"| {name} | {median(rates[name]):,.0f} | {c:.2f} µs | {median(user[name]):.2f} µs "
            f"| {median(kernel[name]):.2f} µs | {ratio} | {runs} |"
        )
    if opens:
        print(
            f"\nopen model, --rate {args.rate} --processes {args.open_processes} for "
            f"{args.duration} s (median of {len(opens)}):"
        )
        keys = ("sent", "rate", "lateness_p99_ms", "lateness_p999_ms", "latency_p99_ms", "cpu_us")
        for key in keys:
            print(f"  {key}: {median([o[key] for o in opens]):,.3f}")
        print(f"  planned: {opens[0]['planned']:,}; saturated: {[o['saturated'] for o in opens]}")
    if opens_before:
        print("\nbaseline, same open model:")
        for key in ("rate", "lateness_p99_ms", "latency_p99_ms", "cpu_us"):
            print(f"  {key}: {median([o[key] for o in opens_before]):,.3f}")
    if "tippingpoint attack (baseline)" in cost:
        # Each round's pair ran back to back; the machine's speed drifts between rounds.
        pairs = zip(
            cost["tippingpoint attack"], cost["tippingpoint attack (baseline)"], strict=True
        )
        closed = median([after / before for after, before in pairs])
        line = "\nCPU per request, this tree against the baseline (median of the rounds' "
        line += f"ratios): closed {closed * 100 - 100:+.1f} %"
        if opens_before:
            ratio = median(
                [a["cpu_us"] / b["cpu_us"] for a, b in zip(opens, opens_before, strict=True)]
            )
            line += f", open model {ratio * 100 - 100:+.1f} %"
        print(line)


if __name__ == "__main__":
    main()
