"""The worker's zygote: runs forked from a clean process that imported the engine once
(real `serve`, real sockets; no Dask needed)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psutil
import pytest

from tippingpoint.cluster.zygote import Zygote
from tippingpoint.engine.runner import plan_shards
from tippingpoint.model import AttackConfig
from tippingpoint.stream import Interval, decode
from tippingpoint.targets import Target


@pytest.fixture
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


def _attack(url: str, rate: float, seconds: float, processes: int = 2) -> bytes:
    config = AttackConfig(
        targets=(Target("GET", url),), rate=rate, duration=seconds, processes=processes
    )
    plan = plan_shards(config, 20_000, 0, time.time())
    start_ns = time.monotonic_ns() + 300_000_000
    shards = [replace(s, start_ns=start_ns) for s in plan.shards]
    return pickle.dumps(("attack", config, shards))


def _finish(fds: tuple[int, int, int]) -> tuple[list[Any], int | None, str]:
    """A run's records, exit code (None: it had none) and errors, once it ends."""
    out, err, status = fds
    data = errors = b""
    while chunk := os.read(out, 1 << 16):
        data += chunk
    raw = os.read(status, 4)
    while chunk := os.read(err, 1 << 16):
        errors += chunk
    for fd in fds:
        os.close(fd)
    code = int.from_bytes(raw, "big", signed=True) if len(raw) == 4 else None
    return [decode(line) for line in data.splitlines()], code, errors.decode()


def test_runs_from_one_zygote_each_send_exactly_their_plan(zygote: Zygote, serve: Any) -> None:
    server = serve()
    for run in (1, 2):
        pid, *fds = zygote.start(_attack(server.url, 500, 2))
        assert psutil.Process(pid).ppid() == zygote.proc.pid  # forked, not a new interpreter
        records, code, errors = _finish((fds[0], fds[1], fds[2]))
        assert code == 0, errors
        intervals = [r for r in records if isinstance(r, Interval)]
        assert {r.process for r in intervals} == {0, 1}
        assert sum(r.done for r in intervals) == 1000
        assert server.metrics()['tippingpoint_serve_requests_total{code="200"}'] == 1000 * run
    assert zygote.alive()


def test_sigterm_stops_a_run_and_its_shards_flush(zygote: Zygote, serve: Any) -> None:
    server = serve()
    pid, *fds = zygote.start(_attack(server.url, 200, 60))
    time.sleep(2)
    os.kill(pid, signal.SIGTERM)
    start = time.monotonic()
    records, code, errors = _finish((fds[0], fds[1], fds[2]))
    assert time.monotonic() - start < 10
    assert code == 143, errors  # 128 + SIGTERM: stopped, its shards flushed
    finals = [r for r in records if isinstance(r, Interval) and r.final]
    assert len(finals) == 2 and all(r.interrupted for r in finals)
    sent = sum(r.sent for r in records if isinstance(r, Interval))
    assert 200 <= sent < 1000


def test_a_run_that_cannot_start_says_why(zygote: Zygote) -> None:
    _, *fds = zygote.start(b"not a pickled run")
    records, code, errors = _finish((fds[0], fds[1], fds[2]))
    assert records == [] and code is None
    assert "Error" in errors.strip().splitlines()[-1], errors
    assert zygote.alive()  # the next run is still served


def test_the_zygote_and_its_runs_die_with_the_worker(serve: Any) -> None:
    server = serve()
    payload = _attack(server.url, 100, 60, processes=1)
    # A stand-in worker process: starts its zygote and a 60 s run, then is killed.
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tippingpoint.cluster.zygote import Zygote; "
            "z = Zygote(); pid, *_ = z.start(sys.stdin.buffer.read()); "
            "print(z.proc.pid, pid, flush=True); time.sleep(120)",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(payload)
    worker.stdin.close()
    zygote_pid, run_pid = map(int, worker.stdout.readline().split())
    run = psutil.Process(run_pid)
    time.sleep(1.5)
    shards = run.children()
    assert shards
    worker.kill()
    worker.wait()
    _, alive = psutil.wait_procs([psutil.Process(zygote_pid), run, *shards], timeout=10)
    assert not alive, alive


def test_the_zygote_drops_the_allocator_setting_dask_gives_its_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as a Dask nanny sets it
    z = Zygote()
    try:
        assert "MALLOC_TRIM_THRESHOLD_" not in psutil.Process(z.proc.pid).environ()
    finally:
        z.close()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")  # a user's own choice stays
    z = Zygote()
    try:
        assert psutil.Process(z.proc.pid).environ()["MALLOC_TRIM_THRESHOLD_"] == "1048576"
    finally:
        z.close()
