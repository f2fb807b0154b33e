"""What HAProxy's MQTT features cost it: `mqtt_is_valid` on the first packet and the
stick table on the CONNECT's client id, against a bare TCP-mode frontend.

Three HAProxy configurations in front of the same `serve --mqtt` (HAProxy and the
backend on CPU 1, the client on CPU 0):

- tcp:   mode tcp, round robin, no inspection of the first packet;
- valid: `tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }`;
- stick: valid, and `stick on req.payload(0,0),mqtt_field_value(connect,client_identifier)`.

For each, in turn within every run: `hold` opens --sessions sessions at --connect-rate
(CONNECT, CONNACK; then they close), and `attack` publishes QoS 0 --rate messages/s for
--duration over 50 sessions (echo: each is answered with a pong). HAProxy's CPU time is read
from /proc before and after: µs per session, µs per message. Medians of --runs runs.

    python benchmarks/mqtt_proxy_cost.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from common import machine, median, need, pinned, start, stop, tippingpoint, wait_port
from tippingpoint.proxy.config import Frontend, MQTTRouting, ProxyConfig
from tippingpoint.proxy.instance import ProxyFleet, find_haproxy

BACKEND = 21950
FRONTEND = 21960
SETUPS = {
    "tcp": MQTTRouting("roundrobin", validate=False),
    "valid": MQTTRouting("roundrobin", validate=True),
    "stick": MQTTRouting("client-id", validate=True),
}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(fleet: ProxyFleet, cmd: list[str]) -> float:
    """HAProxy's CPU seconds while ``cmd`` runs (to its end)."""
    before = sum(cpu_s(pid) for pid in fleet.pids)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[3:6])} failed: {done.stderr.strip()[-500:]}")
    return sum(cpu_s(pid) for pid in fleet.pids) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--connect-rate", type=int, default=2_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    need("taskset", "haproxy")
    ramp = args.sessions / args.connect_rate
    hold = [
        *tippingpoint(), "hold", f"mqtt://127.0.0.1:{FRONTEND}", "--connections",
        str(args.sessions), "--connect-rate", str(args.connect_rate), "--duration",
        f"{ramp + 2:.0f}s", "--keepalive", "0",
    ]  # fmt: skip
    publish = [
        *tippingpoint(), "attack", f"mqtt://127.0.0.1:{FRONTEND}/ping/%i", "--rate",
        str(args.rate), "--duration", f"{args.duration}s", "--connections", "50",
        "--until", "echo", "--payload-size", "64", "-o", os.devnull,
    ]  # fmt: skip
    per_session: dict[str, list[float]] = {k: [] for k in SETUPS}
    per_message: dict[str, list[float]] = {k: [] for k in SETUPS}
    with tempfile.TemporaryDirectory() as tmp:
        server = start(
            pinned(1, [*tippingpoint(), "serve", "--mqtt", str(BACKEND), "--processes", "1"]),
            Path(tmp) / "serve.log",
        )
        try:
            wait_port(BACKEND)
            for _ in range(args.runs):
                for name, setup in SETUPS.items():
                    fleet = ProxyFleet(
                        find_haproxy(),
                        Path(tmp) / name,
                        ProxyConfig(
                            servers={"mqtt": (("127.0.0.1", BACKEND),)},
                            frontends=(Frontend("mqtt", ("127.0.0.1", FRONTEND)),),
                            health_checks=False,
                            cpus=(1,),
                            mqtt=setup,
                        ),
                        1,
                    )
                    fleet.start(timeout=30)
                    try:
                        used = measure(fleet, pinned(0, hold))
                        per_session[name].append(used * 1e6 / args.sessions)
                        used = measure(fleet, pinned(0, publish))
                        per_message[name].append(used * 1e6 / (args.rate * args.duration))
                    finally:
                        fleet.stop(grace=1)
        finally:
            stop(server)
    print(f"machine: {machine()}")
    print(
        f"{args.sessions:,} sessions at {args.connect_rate:,}/s; QoS 0 echo at "
        f"{args.rate:,}/s for {args.duration} s over 50 sessions; medians of {args.runs} runs"
    )
    print(f"{'HAProxy':8} {'µs/session':>11} {'vs tcp':>7} {'µs/message':>11} {'vs tcp':>7}")
    base_s, base_m = median(per_session["tcp"]), median(per_message["tcp"])
    for name in SETUPS:
        s, m = median(per_session[name]), median(per_message[name])
        print(f"{name:8} {s:11.1f} {s / base_s:6.2f}x {m:11.2f} {m / base_m:6.2f}x")


if __name__ == "__main__":
    main()
