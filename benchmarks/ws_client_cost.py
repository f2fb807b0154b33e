"""WebSocket client cost per message: tippingpoint attack vs websockets and Node's ws.

`serve --ws` (one process) runs on CPU 1; each client in turn runs on CPU 0 with 50
connections for --duration seconds, in two patterns:

* closed: each connection sends "ping", waits for "pong", sends again;
* rate: "ping" at --rate messages/s in all. The reference clients pace every
  millisecond; tippingpoint runs twice, with its own pacing (a wake-up per message below
  10,000/s) and with `--tick 1ms`, paced as they are.

The client's CPU time (user + sys, its process tree, from wait4) divided by the pongs
it received is the cost per message. Clients take turns, round after round; medians.
The server's placement is read back from /proc before the runs.

    python benchmarks/ws_client_cost.py [--runs 3] [--duration 10] [--rate 10000]
        [--baseline CHECKOUT]

With --baseline (the root of another checkout, e.g. `git worktree add /tmp/before HEAD~1`)
that checkout's attack runs too, in the same rounds: before and after, side by side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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

HERE = Path(__file__).resolve().parent
PORT = 18410
CONNS = 50
NODE = HERE / "node"
URL = f"ws://{HOST}:{PORT}/"


def clients(
    mode: str, duration: int, rate: int, tmp: Path, baseline: Path | None = None
) -> dict[str, Callable[[], tuple[int, float]]]:
    def ours(*extra: str, src: Path | None = None) -> tuple[int, float]:
        stream = tmp / "ours.jsonl"
        args = ["--rate", "0", "--connections", str(CONNS)]
        if mode == "rate":
            args = ["--rate", str(rate), "--max-connections", str(CONNS), *extra]
        _, usage = timed(
            pinned(
                0,
                [
                    *tippingpoint(src),
                    *("attack", URL, *args, "--duration", f"{duration}s"),
                    *("--processes", "1", "-o", str(stream)),
                ],
            )
        )
        return report(stream)["status_codes"].get("200", 0), usage.total

    def websockets_client() -> tuple[int, float]:
        cmd = [sys.executable, str(HERE / "ws_clients.py"), mode, URL, str(CONNS)]
        out, usage = timed(pinned(0, [*cmd, str(duration), str(rate)]))
        return int(out.split()[-1]), usage.total

    def node_ws() -> tuple[int, float]:
        cmd = ["node", str(NODE / "ws_bench.js"), mode, URL, str(CONNS)]
        out, usage = timed(pinned(0, [*cmd, str(duration), str(rate)]))
        return int(out.split()[-1]), usage.total

    runs: dict[str, Callable[[], tuple[int, float]]] = {"tippingpoint attack": ours}
    if baseline is not None:
        runs["tippingpoint (baseline)"] = lambda: ours(src=baseline)
    if mode == "rate":  # paced like the others: every millisecond
        runs["tippingpoint --tick 1ms"] = lambda: ours("--tick", "1ms")
        if baseline is not None:
            runs["baseline --tick 1ms"] = lambda: ours("--tick", "1ms", src=baseline)
    return {**runs, "websockets": websockets_client, "ws (Node)": node_ws}


def placement(pid: int) -> str:
    """Where the server's processes may run, read back from /proc."""
    allowed = Path(f"/proc/{pid}/status").read_text().split("Cpus_allowed_list:")[1].split()[0]
    return allowed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rate", type=int, default=10000)
    parser.add_argument("--baseline", default=None, help="another checkout's root")
    args = parser.parse_args()
    baseline = baseline_src(args.baseline) if args.baseline else None
    need("node", "taskset")
    if not (NODE / "node_modules" / "ws").is_dir():
        sys.exit("missing ws: run scripts/setup-bench first (npm install in benchmarks/node)")
    print(machine())
    results: dict[tuple[str, str], list[tuple[int, float]]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        cmd = [*tippingpoint(), "serve", "--ws", "--ports", str(PORT), "--processes", "1"]
        server = start(pinned(1, cmd))
        try:
            wait_port(PORT)
            children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
            for pid in [server.pid, *map(int, children)]:
                where = placement(pid)
                print(f"serve pid {pid}: CPUs {where}")
                if where != "1":
                    sys.exit(f"serve pid {pid} may run on CPUs {where}, not 1 alone")
            for run in range(args.runs):
                for mode in ("closed", "rate"):
                    for name, client in clients(
                        mode, args.duration, args.rate, tmp, baseline
                    ).items():
                        done, cpu = client()
                        results.setdefault((mode, name), []).append((done, cpu))
                        print(
                            f"run {run + 1} {mode:6} {name:20} {done:>9,} pongs, "
                            f"{cpu:6.2f} s CPU, {cpu / max(done, 1) * 1e6:6.1f} µs/message",
                            flush=True,
                        )
        finally:
            stop(server)
    print()
    print(f"{'pattern':7} {'client':20} {'pongs/s':>9} {'µs/message':>11} {'ours / it':>9}")
    for mode in ("closed", "rate"):
        cost = {
            name: median([cpu / max(done, 1) * 1e6 for done, cpu in runs])
            for (m, name), runs in results.items()
            if m == mode
        }
        ours = cost["tippingpoint attack"]
        for (m, name), runs in results.items():
            if m != mode:
                continue
            per_s = median([done / args.duration for done, _ in runs])
            ratio = "" if name == "tippingpoint attack" else f"{ours / cost[name]:.2f}x"
            print(f"{mode:7} {name:20} {per_s:>9,.0f} {cost[name]:>11.1f} {ratio:>9}")
    print(f"\nmedians of {args.runs} runs, {args.duration} s each, {CONNS} connections")


if __name__ == "__main__":
    main()
