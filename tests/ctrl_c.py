"""Ctrl-C at random instants, as a terminal sends it (SIGINT to the whole process group).

Each trial starts a command, waits a random time within its start-up and run, signals
it, and checks: it ends within a bound (no hang), with status 130, no traceback, no
process of its group left, and what it wrote is readable (`tippingpoint report` takes
an attack's or a hold's stream; a sweep prints its table).

    python -m tests.ctrl_c --tries 50 attack hold sweep bench
    python -m tests.ctrl_c --tries 100 --window 0.25 attack     # its imports and start
    python -m tests.ctrl_c --tries 10 [--double] attack-cluster hold-cluster sweep-cluster

The test suite runs a few trials of each (tests/test_ctrl_c.py).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_ports, start_server, tippingpoint_cmd

BOUND_S = 30.0
"""The longest a command may take to end after the signal."""
START_S = 0.03
"""The first instant tried: before it, the Python interpreter is starting (the first
~25 ms here) and a Ctrl-C meets its own start-up, as for any Python program, before a
line of tippingpoint has run."""


@dataclass
class Trial:
    command: str
    instant: float
    code: int | None
    took: float
    problem: str

    def __str__(self) -> str:
        outcome = self.problem or "ok"
        return (
            f"{self.command:7s} at {self.instant:5.2f} s: exit {self.code}, "
            f"{self.took:4.1f} s: {outcome}"
        )


def commands(url: str, scratch: Path) -> dict[str, tuple[list[str], float]]:
    """Each command, and the window its signal is sent in (seconds after its start)."""
    return {
        "attack": (["attack", url, "--rate", "200", "--duration", "8s", "--processes", "2"], 4.0),
        "hold": (["hold", url, "--connections", "200", "--duration", "8s", "-o", "-"], 4.0),
        "sweep": (
            ["sweep", url, "--start", "100", "--step", "+100", "--step-duration", "1s"],
            5.0,
        ),
        "bench": (["bench", "--quick", "-o", str(scratch / "bench")], 12.0),
    }


def cluster_commands(url: str, address: str) -> dict[str, tuple[list[str], float]]:
    """The same over a cluster's workers (its scheduler at ``address``)."""
    on = ["--cluster", address]
    return {
        "attack-cluster": (["attack", url, "--rate", "200", "--duration", "8s", *on], 5.0),
        "hold-cluster": (
            ["hold", url, "--connections", "200", "--duration", "8s", "-o", "-", *on],
            5.0,
        ),
        "sweep-cluster": (
            ["sweep", url, "--start", "100", "--step", "+100", "--step-duration", "1s", *on],
            6.0,
        ),
    }


def trial(
    name: str, args: list[str], window: float, rng: random.Random, double: bool = False
) -> Trial:
    """One run, signalled at a random instant of ``window``; ``double``: a second Ctrl-C
    follows the first by up to half a second, as an impatient user's."""
    instant = rng.uniform(START_S, window)
    again = rng.uniform(0.0, 0.5) if double else None
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            tippingpoint_cmd(*args), stdout=out, stderr=err, start_new_session=True
        )
        time.sleep(instant)
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: the whole group
        t0 = time.monotonic()
        if again is not None:
            time.sleep(again)
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        try:
            code: int | None = proc.wait(BOUND_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return Trial(name, instant, None, BOUND_S, f"hung: still running {BOUND_S:.0f} s after")
        took = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        written, said = out.read(), err.read().decode(errors="replace")
    problem = _problem(name, code, written, said, proc.pid)
    return Trial(name, instant, code, took, problem)


def _problem(name: str, code: int | None, written: bytes, said: str, pgid: int) -> str:
    if "Traceback" in said:
        return "traceback: " + said.strip().splitlines()[-1][:200]
    if code not in (130, -signal.SIGINT):  # a shell shows both as 130
        return f"exit status {code}, not 130: " + (said.strip().splitlines() or [""])[-1][:200]
    time.sleep(0.2)
    try:
        os.killpg(pgid, 0)
        return "processes of its group are left"
    except ProcessLookupError:
        pass
    if name.startswith("hold") and written:
        from tippingpoint.stream import HoldRecord, decode

        records = [decode(line) for line in written.splitlines()]  # StreamError if not
        last = records[-1]
        if len(records) > 1 and not (isinstance(last, HoldRecord) and last.final):
            return "the hold's stream has no final record"
    if name.startswith("attack") and written:
        report = subprocess.run(
            tippingpoint_cmd("report"), input=written, capture_output=True, timeout=60
        )
        if report.returncode != 0 or b"Traceback" in report.stderr:
            return "stream not readable: " + report.stderr.decode()[-200:]
    if name.startswith("sweep") and written and b"offered/s" not in written:
        return "no table"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=["attack", "hold", "sweep", "bench"])
    parser.add_argument("--tries", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--double", action="store_true", help="a second Ctrl-C after the first")
    parser.add_argument(
        "--window", type=float, default=None, help="signal within this many seconds instead"
    )
    opts = parser.parse_args()
    seed = opts.seed if opts.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}", flush=True)
    port = free_ports(1)[0]
    server = start_server(["--processes", "1"], [port], metrics=False)
    failed = 0
    cluster = None
    try:
        with tempfile.TemporaryDirectory() as scratch:
            url = f"http://127.0.0.1:{port}/"
            table = commands(url, Path(scratch))
            if any(name.endswith("-cluster") for name in opts.names):
                cluster = subprocess.Popen(
                    tippingpoint_cmd("cluster", "local", "--workers", "2"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                assert cluster.stdout is not None
                table.update(cluster_commands(url, cluster.stdout.readline().decode().strip()))
            for name in opts.names:
                args, window = table[name]
                window = opts.window if opts.window is not None else window
                bad = 0
                for _ in range(opts.tries):
                    result = trial(name, args, window, rng, opts.double)
                    if result.problem:
                        bad += 1
                        print(result, flush=True)
                print(f"{name}: {opts.tries - bad} of {opts.tries} trials ok", flush=True)
                failed += bad
    finally:
        for proc in (server.proc, cluster):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
