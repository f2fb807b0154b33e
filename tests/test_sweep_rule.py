"""The knee rule's figure, on recorded curves: a stall of the machine (the client's own)
must not make a knee; a server that stalls now and then must.

Three real attacks against `serve` at the same rate: undisturbed (the low-load p99), with
the backend paused 100 ms every 3 s (SIGSTOP/SIGCONT), and with the load generator itself
paused 150 ms twice. Both rules are applied to the same records: the one the sweep uses
(the p99 without the seconds in which the client stalled) and the one it used before (the
median of the per-second p99s), which hid the server's stalls.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import tippingpoint_cmd
from tippingpoint.knee import KneeRule, Step, judge
from tippingpoint.report.merge import Named, read_records, windows
from tippingpoint.sweep import _sustained

RATE = 1000
SECONDS = 7


def _attack(url: str, out: Path, during: Callable[[int], None] | None = None) -> list[Named]:
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "attack", url, "--rate", str(RATE), "--duration", f"{SECONDS}s",
            "--processes", "1", "-o", str(out),
        ),
        stderr=subprocess.PIPE,
    )  # fmt: skip
    if during is not None:
        during(proc.pid)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    with out.open() as f:
        return list(read_records([(str(out), f)]))


def _pause(pid: int, at: list[float], length: float) -> threading.Thread:
    def run() -> None:
        start = time.monotonic()
        for t in at:
            time.sleep(max(0.0, start + t - time.monotonic()))
            os.kill(pid, signal.SIGSTOP)
            time.sleep(length)
            os.kill(pid, signal.SIGCONT)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _child_of(pid: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError("the attack started no worker")


def _median_rule(records: list[Named]) -> float:
    seconds = windows(records, 1.0)[1:]
    return statistics.median(
        w.hists["latency"].percentile(99) / 1000 for _, w in seconds if w.hists["latency"].total
    )


def _past_knee(p99_ms: float, base_ms: float) -> bool:
    step = Step(RATE, RATE, 0.0, p99_ms, 1.0)
    return judge(step, base_ms, KneeRule()).past_knee


def test_a_server_stall_makes_a_knee_and_a_client_stall_does_not(
    serve: Any, tmp_path: Path
) -> None:
    server = serve(processes=1)
    [worker] = server.worker_pids
    url = server.url + "/"
    calm = _attack(url, tmp_path / "calm.jsonl")
    base_new, _ = _sustained(calm)
    base_old = _median_rule(calm)

    threads: list[threading.Thread] = []

    def pause_server(attack_pid: int) -> None:
        # 0.5 s of start-up, then pauses 1.5, 4.5 s into the run: 100 ms every 3 s.
        threads.append(_pause(worker, [2.0, 5.0], 0.1))

    server_stall = _attack(url, tmp_path / "server.jsonl", pause_server)

    def pause_client(attack_pid: int) -> None:
        threads.append(_pause(_child_of(attack_pid), [2.6, 5.3], 0.15))

    client_stall = _attack(url, tmp_path / "client.jsonl", pause_client)
    for thread in threads:
        thread.join()

    server_new, _ = _sustained(server_stall)
    client_new, client_late = _sustained(client_stall)
    # The rule the sweep uses: the server's stalls are a knee, the client's are not.
    assert _past_knee(server_new, base_new), (server_new, base_new)
    assert not _past_knee(client_new, base_new), (client_new, base_new)
    assert client_late < 1.0  # and the step is not called client-saturated either
    # The rule before: the median of the per-second p99s missed the server's stalls.
    assert not _past_knee(_median_rule(server_stall), base_old)
    # A p99 over every second, stalls of the client included, would have called the
    # client's own stall a knee.
    whole = windows(client_stall, 60.0)[0][1].hists["latency"].percentile(99) / 1000
    assert _past_knee(whole, base_new), whole
