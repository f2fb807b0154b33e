"""MQTT client cost per message: tippingpoint attack vs paho-mqtt, gmqtt and MQTT.js.

mosquitto runs on CPU 1; each client in turn runs on CPU 0 with 50 sessions for
--duration seconds, in two patterns:

* closed: QoS 1, each session publishes, waits for the PUBACK, publishes again;
* rate: QoS 0 at --rate messages/s in all.

The client's CPU time (user + sys, its process tree, from wait4) divided by the messages
it completed is the cost per message. Clients take turns, round after round; medians.

Then tippingpoint alone: the accuracy of one process publishing QoS 0 at --accuracy-rate
(achieved rate against the plan, p99 send lateness), and `serve --mqtt` (one process)
against mosquitto on the echo pattern at --echo-rate: each message comes back to the
client (serve: the pong; mosquitto: delivery to a subscriber), messages/s completed and
the server's CPU per message.

    python benchmarks/mqtt_client_cost.py [--runs 3] [--duration 10] [--rate 20000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from client_cost import report, timed
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
from tippingpoint.broker import BrokerConfig, BrokerFleet

HERE = Path(__file__).resolve().parent
PORT = 18400
SERVE_PORT = 18401
SESSIONS = 50
NODE = HERE / "node"


def clients(
    mode: str, port: int, duration: int, rate: int, tmp: Path, baseline: Path | None = None
) -> dict[str, Callable[[], tuple[int, float]]]:
    def ours(src: Path | None = None) -> tuple[int, float]:
        stream = tmp / "ours.jsonl"
        args = ["--qos", "1", "--rate", "0"] if mode == "closed" else ["--rate", str(rate)]
        _, usage = timed(
            pinned(
                0,
                [
                    *tippingpoint(src),
                    "attack",
                    f"mqtt://{HOST}:{port}/bench/%i",
                    *args,
                    *("--connections", str(SESSIONS), "--duration", f"{duration}s"),
                    *("--processes", "1", "-o", str(stream)),
                ],
            )
        )
        return report(stream)["requests"], usage.total

    def python_client(name: str) -> Callable[[], tuple[int, float]]:
        def run() -> tuple[int, float]:
            out, usage = timed(
                pinned(
                    0,
                    [
                        sys.executable,
                        str(HERE / "mqtt_clients.py"),
                        name,
                        mode,
                        str(port),
                        str(SESSIONS),
                        str(duration),
                        str(rate),
                    ],
                )
            )
            return int(out.split()[-1]), usage.total

        return run

    def mqttjs() -> tuple[int, float]:
        out, usage = timed(
            pinned(
                0,
                [
                    "node",
                    str(NODE / "mqtt_bench.js"),
                    mode,
                    str(port),
                    str(SESSIONS),
                    str(duration),
                    str(rate),
                ],
            )
        )
        return int(out.split()[-1]), usage.total

    return {
        "tippingpoint attack": ours,
        **({"tippingpoint attack (baseline)": lambda: ours(baseline)} if baseline else {}),
        "paho-mqtt": python_client("paho"),
        "gmqtt": python_client("gmqtt"),
        "MQTT.js": mqttjs,
    }


def accuracy(port: int, rate: int, duration: int, tmp: Path) -> dict[str, float]:
    stream = tmp / "accuracy.jsonl"
    subprocess.run(
        pinned(
            0,
            [
                *tippingpoint(),
                "attack",
                f"mqtt://{HOST}:{port}/bench/%i",
                *("--rate", str(rate), "--duration", f"{duration}s", "--qos", "0"),
                *("--connections", str(SESSIONS), "--processes", "1", "-o", str(stream)),
            ],
        ),
        check=True,
        capture_output=True,
    )
    r = report(stream)
    return {
        "achieved": r["sent"] / (r["duration"] / 1e9),
        "error_pct": (r["sent"] / (r["duration"] / 1e9) - rate) / rate * 100,
        "p99_lateness_ms": r["lateness"]["99th"] / 1e6,
    }


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def echo(port: int, pid: int, until: str, rate: int, duration: int, tmp: Path) -> dict:
    """Messages/s completed and server CPU µs per message on the echo pattern."""
    stream = tmp / "echo.jsonl"
    topic = "ping/%i" if until == "echo" else "devices/%i/data"
    extra = ["--subscribers", str(SESSIONS)] if until == "delivery" else []
    before = server_cpu(pid)
    subprocess.run(
        pinned(
            0,
            [
                *tippingpoint(),
                "attack",
                f"mqtt://{HOST}:{port}/{topic}",
                *("--rate", str(rate), "--duration", f"{duration}s", "--qos", "0"),
                *("--until", until, *extra, "--connections", str(SESSIONS)),
                *("--processes", "1", "--payload-size", "64", "-o", str(stream)),
            ],
        ),
        check=True,
        capture_output=True,
    )
    cpu = server_cpu(pid) - before
    r = report(stream)
    completed = r["status_codes"].get("200", 0)
    return {
        "messages_per_s": completed / duration,
        "server_us_per_message": cpu / max(1, completed) * 1e6,
        "lost": r["error_counts"].get("lost", 0),
        "p99_ms": r["latencies"]["99th"] / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rate", type=int, default=20000, help="QoS 0 rate of the rate pattern")
    parser.add_argument("--accuracy-rate", type=int, default=50000)
    parser.add_argument("--echo-rate", type=int, default=20000)
    parser.add_argument("--only", default=None, help="comma-separated client names")
    parser.add_argument(
        "--baseline",
        default=None,
        help="root of another checkout: its `tippingpoint attack` runs too (before/after)",
    )
    parser.add_argument(
        "--no-echo", action="store_true", help="skip the accuracy and echo runs of each round"
    )
    args = parser.parse_args()
    baseline = baseline_src(args.baseline) if args.baseline else None
    need("mosquitto", "node", "taskset")
    if not (NODE / "node_modules" / "mqtt").is_dir():
        sys.exit("missing MQTT.js: run scripts/setup-bench first (npm install in benchmarks/node)")
    cost: dict[tuple[str, str], list[float]] = {}
    rates: dict[tuple[str, str], list[float]] = {}
    accuracies: list[dict[str, float]] = []
    echoes: dict[str, list[dict]] = {"serve --mqtt": [], "mosquitto": []}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        fleet = BrokerFleet(BrokerConfig(port=PORT), tmp / "broker")
        fleet.start()
        serve = None
        try:
            broker_pid = fleet.pids[0]
            subprocess.run(
                ["taskset", "-pc", "1", str(broker_pid)], check=True, capture_output=True
            )
            serve = start(
                pinned(
                    1,
                    [*tippingpoint(), "serve", "--mqtt", str(SERVE_PORT), "--processes", "1"],
                ),
                tmp / "serve.log",
            )
            wait_port(SERVE_PORT)
            serve_pid = int(
                next(
                    line.split(" pid ")[1].split()[0]
                    for line in (tmp / "serve.log").read_text().splitlines()
                    if " pid " in line
                )
            )
            for run in range(args.runs):
                for mode in ("closed", "rate"):
                    table = clients(mode, PORT, args.duration, args.rate, tmp, baseline)
                    if args.only:
                        table = {k: v for k, v in table.items() if k in args.only.split(",")}
                    for name, fn in table.items():
                        messages, cpu = fn()
                        cost.setdefault((mode, name), []).append(cpu / messages * 1e6)
                        rates.setdefault((mode, name), []).append(messages / args.duration)
                        print(
                            f"run {run + 1}: {mode:6s} {name:20s} "
                            f"{messages / args.duration:10,.0f} msg/s "
                            f"{cpu / messages * 1e6:7.2f} us CPU/message",
                            flush=True,
                        )
                        time.sleep(1)
                if args.no_echo:
                    continue
                accuracies.append(accuracy(PORT, args.accuracy_rate, args.duration, tmp))
                print(f"run {run + 1}: accuracy {accuracies[-1]}", flush=True)
                for name, port, pid, until in (
                    ("serve --mqtt", SERVE_PORT, serve_pid, "echo"),
                    ("mosquitto", PORT, broker_pid, "delivery"),
                ):
                    result = echo(port, pid, until, args.echo_rate, args.duration, tmp)
                    echoes[name].append(result)
                    print(f"run {run + 1}: echo {name}: {result}", flush=True)
        finally:
            if serve is not None:
                stop(serve)
            fleet.stop()
    print()
    print(f"machine: {machine()}")
    print(f"command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(
        f"medians of {args.runs} runs, {args.duration} s each, {SESSIONS} sessions, "
        "client on CPU 0, server on CPU 1"
    )
    for mode, what in (("closed", "QoS 1 closed loop"), ("rate", f"QoS 0 at {args.rate:,}/s")):
        names = [name for (m, name) in cost if m == mode]
        if not names:
            continue
        print(f"\n{what}:")
        ours = (
            median(cost[(mode, "tippingpoint attack")])
            if (mode, "tippingpoint attack") in cost
            else None
        )
        python_best = min(
            (median(cost[(mode, n)]) for n in ("paho-mqtt", "gmqtt") if (mode, n) in cost),
            default=None,
        )
        for name in names:
            c = median(cost[(mode, name)])
            ratio = (
                f"  ours/this {ours / c:5.2f}x"
                if ours is not None and name != "tippingpoint attack"
                else ""
            )
            print(
                f"  {name:20s} {median(rates[(mode, name)]):10,.0f} msg/s "
                f"{c:7.2f} us/message{ratio}"
            )
        base = cost.get((mode, "tippingpoint attack (baseline)"))
        if ours is not None and base:
            rounds = [a / b for a, b in zip(cost[(mode, "tippingpoint attack")], base, strict=True)]
            print(
                f"  this tree / baseline: {median(rounds):.3f}x CPU per message "
                f"(median of {len(rounds)} rounds' ratios: "
                f"{', '.join(f'{r:.3f}' for r in rounds)})"
            )
        if ours is not None and python_best is not None:
            print(
                f"  tippingpoint / best Python client: {ours / python_best:.2f}x (target <= 0.5x)"
            )
        if ours is not None and (mode, "MQTT.js") in cost:
            print(
                f"  tippingpoint / MQTT.js: {ours / median(cost[(mode, 'MQTT.js')]):.2f}x "
                "(target <= 1.0x)"
            )
    if accuracies:
        print(
            f"\nQoS 0 at {args.accuracy_rate:,}/s from one process: achieved "
            f"{median([a['achieved'] for a in accuracies]):,.0f}/s "
            f"({median([a['error_pct'] for a in accuracies]):+.2f} %, target within 0.5 %), "
            f"p99 send lateness {median([a['p99_lateness_ms'] for a in accuracies]):.3f} ms "
            "(target < 1 ms)"
        )
    if all(echoes.values()):
        print(f"\necho pattern at {args.echo_rate:,}/s offered, QoS 0, server on CPU 1:")
        for name, results in echoes.items():
            print(
                f"  {name:14s} {median([r['messages_per_s'] for r in results]):10,.0f} msg/s "
                f"{median([r['server_us_per_message'] for r in results]):6.2f} us server "
                "CPU/message "
                f"p99 {median([r['p99_ms'] for r in results]):.2f} ms "
                f"lost {median([r['lost'] for r in results]):,.0f}"
            )
        ratio = median([r["messages_per_s"] for r in echoes["serve --mqtt"]]) / median(
            [r["messages_per_s"] for r in echoes["mosquitto"]]
        )
        print(f"  serve --mqtt / mosquitto: {ratio:.2f}x messages/s (target >= 0.5x)")


if __name__ == "__main__":
    main()
