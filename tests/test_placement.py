"""Where the bench's processes run, read back from /proc by the test itself: HAProxy's
threads, the backends and the bench on the CPUs the scenario gives them; a process
placed elsewhere refused; a foreign load on the system under test's core during one
step makes that step disturbed, not the knee."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import free_ports, run_tp, tippingpoint_cmd
from tippingpoint.cores import Ledger, read_stat_cpus
from tippingpoint.placement import (
    PlacementError,
    affinity_of,
    cpu_list,
    descendants,
    parse_cpu_list,
    verify,
)

two_cpus = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="placement needs two CPUs to place apart"
)


def test_cpu_lists_read_and_write_as_the_kernel_does() -> None:
    assert parse_cpu_list("0-2,5\n") == {0, 1, 2, 5}
    assert cpu_list({5, 0, 1, 2}) == "0-2,5" and cpu_list(()) == "none"
    assert parse_cpu_list(cpu_list({1, 3, 4})) == {1, 3, 4}
    stat = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 10 0 5 100 3 0 2 7 0 0\ncpu1 1 0 1 50 0 0 0 0 0 0\n"
    assert read_stat_cpus(stat) == {0: (103, 7), 1: (50, 0)}


def test_verify_reads_every_thread_and_refuses_one_astray() -> None:
    mine = affinity_of(os.getpid())
    assert os.getpid() in mine and all(mine.values())
    allowed = frozenset(os.sched_getaffinity(0))
    placed = verify("test", [os.getpid()], allowed, children=False)
    assert placed.seen <= allowed and placed.threads >= 1
    if len(allowed) > 1:
        with pytest.raises(PlacementError, match=r"test pid \d+ may run on CPUs .* asked"):
            verify("test", [os.getpid()], {min(allowed)}, children=False)


@two_cpus
def test_serve_and_proxy_run_where_they_are_told(tmp_path: Path) -> None:
    ports = free_ports(4)
    serve = subprocess.Popen(
        tippingpoint_cmd(
            "serve", "--ports", f"{ports[0]}-{ports[1]}", "--processes", "2", "--cpus", "1"
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    proxy = None
    try:
        assert serve.stderr is not None
        line = ""
        while "ready on" not in line:
            line = serve.stderr.readline()
            assert line, "serve ended before it was ready"
        assert "on CPUs 1 (" in line
        tree = [serve.pid, *descendants(serve.pid)]
        assert len(tree) == 3  # the supervisor and two workers
        assert {c for p in tree for c in affinity_of(p).values()} == {frozenset({1})}
        proxy = subprocess.Popen(
            tippingpoint_cmd(
                "proxy", "--backends", f"127.0.0.1:{ports[0]}-{ports[1]}",
                "--http", f"127.0.0.1:{ports[2]}", "--https", "",
                "--threads", "2", "--cpus", "0-1", "--dir", str(tmp_path / "px"),
            ),
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert proxy.stderr is not None
        line = proxy.stderr.readline()
        assert "on CPUs 0-1 (read from /proc)" in line, line
        haproxy = descendants(proxy.pid)
        assert len(haproxy) == 1
        threads = affinity_of(haproxy[0])
        # Thread k on the k-th CPU, as cpu-map 1/k would (HAProxy ignores it under -db).
        assert [threads[t] for t in sorted(threads)] == [frozenset({0}), frozenset({1})]
    finally:
        for proc in (proxy, serve):
            if proc is not None:
                proc.terminate()
                proc.wait(20)


def _scenario(tmp: Path, experiments: str, proxy_threads: int = 2) -> Path:
    ports = free_ports(4)
    path = tmp / "placed.toml"
    path.write_text(f"""
[bench]
title = "placed"
open_files = 1200
[backends]
ports = "{ports[0]}-{ports[1]}"
processes = 1
cpus = "1"
[proxy]
threads = {proxy_threads}
cpus = "1"
http = "127.0.0.1:{ports[2]}"
https = "127.0.0.1:{ports[3]}"
[client]
cpus = "0"
{experiments}
""")
    return path


_SWEEP = """
[[experiment]]
name = "http"
kind = "sweep"
frontend = "http"
start = 1000
step = "x2"
step_duration = "2s"
max_steps = 3
refine = 0
"""


def _watch(
    bench: subprocess.Popen[str], seen: dict[str, set[frozenset[int]]], done: threading.Event
) -> None:
    """Read /proc while the experiments run: every thread of HAProxy, the backends,
    the bench and its load workers, by what their command lines say they are."""
    while not done.is_set():
        for pid in [bench.pid, *descendants(bench.pid)]:
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            role = (
                "haproxy"
                if args[0].endswith(b"haproxy")
                else "backends"
                if b"serve" in args
                else "bench"
            )
            seen.setdefault(role, set()).update(affinity_of(pid).values())
        time.sleep(0.2)


@two_cpus
def test_the_bench_runs_each_role_on_its_cpus_as_proc_says(tmp_path: Path) -> None:
    out = tmp_path / "report"
    bench = subprocess.Popen(
        tippingpoint_cmd("bench", str(_scenario(tmp_path, _SWEEP)), "-o", str(out)),
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: dict[str, set[frozenset[int]]] = {}
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(bench, seen, done))
    assert bench.stderr is not None
    log = []
    for line in bench.stderr:  # from the moment the topology is up to the sweep's end
        log.append(line)
        if "bench: started pids" in line:
            watcher.start()
        if "tipping point" in line.lower():
            done.set()
    done.set()
    watcher.join()
    err = "".join(log)
    assert bench.wait(240) == 0, err[-3000:]
    # HAProxy's two threads, the backends and the bench with the load it forks.
    assert seen["haproxy"] == {frozenset({1})}
    assert seen["backends"] == {frozenset({1})}
    assert seen["bench"] == {frozenset({0})}
    summary = json.loads((out / "summary.json").read_text())
    table = {row["role"]: row for row in summary["placement"]}
    assert set(table) == {"bench", "backends", "proxy"}
    assert table["proxy"]["threads"] == 2
    assert all(r["cpus_asked"] == r["cpus_seen"] for r in table.values())
    assert (table["proxy"]["cpus_seen"], table["bench"]["cpus_seen"]) == ("1", "0")
    steps = summary["experiments"][0]["sweep"]["steps"]
    groups = {g["cpus"]: g for g in steps[-1]["cores"]["groups"]}
    assert set(groups["1"]["roles"]) == {"proxy", "backends"}
    assert set(groups["0"]["roles"]) == {"client", "bench"}
    assert groups["0"]["roles"]["client"] > 0.02  # the load's workers, reaped, counted
    page = (out / "index.html").read_text()
    assert "Where each process ran" in page


@two_cpus
def test_a_bench_whose_haproxy_is_placed_elsewhere_is_refused(tmp_path: Path) -> None:
    # A wrapper that pins HAProxy itself, as a site's wrapper or numactl would.
    wrapper = tmp_path / "haproxy"
    wrapper.write_text('#!/bin/sh\nexec taskset -c 0 haproxy "$@"\n')
    wrapper.chmod(0o755)
    result = run_tp(
        "bench", str(_scenario(tmp_path, _SWEEP, proxy_threads=1)),
        "-o", str(tmp_path / "report"), "--haproxy-bin", str(wrapper), timeout=120,
    )  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 1, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("tippingpoint: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "HAProxy instance 0 pid" in lines[0]
    assert "may run on CPUs 0, asked 1 (read from /proc)" in lines[0]


_BURNER = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # ahead of HAProxy, 20 of 50 ms
end = time.monotonic() + 30
while time.monotonic() < end:
    burst = time.monotonic() + 0.02
    while time.monotonic() < burst:
        pass
    time.sleep(0.03)
"""


@two_cpus
@pytest.mark.skipif(os.geteuid() != 0, reason="a SCHED_FIFO busy loop needs root")
def test_a_foreign_busy_loop_on_the_proxy_core_disturbs_a_step_it_is_not_the_knee(
    tmp_path: Path,
) -> None:
    sweep = _SWEEP.replace("max_steps = 3", "max_steps = 4")
    bench = subprocess.Popen(
        tippingpoint_cmd(
            "bench", str(_scenario(tmp_path, sweep, 1)), "-o", str(tmp_path / "report")
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert bench.stderr is not None
    burner = None
    log = []
    try:
        for line in bench.stderr:
            log.append(line)
            if burner is None and "1,000/s: achieved" in line:
                # The next step (2,000/s) begins now: the busy loop takes HAProxy's core
                # for its first run, and stops as soon as that run ends.
                burner = subprocess.Popen([sys.executable, "-c", _BURNER, "1"])
            if burner is not None and "2,000/s: achieved" in line:
                burner.kill()
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    assert bench.wait(60) == 0, "".join(log[-30:])
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    sweep_result = summary["experiments"][0]["sweep"]
    steps = sweep_result["steps"]
    seen = [(s["offered"], s["p99_sustained_ms"], s["sut_foreign"], s["verdict"]) for s in steps]
    disturbed = [s for s in steps if s["disturbed"]]
    assert disturbed and all(s["offered"] == 2000 for s in disturbed), seen
    assert burner is not None and f" (pid {burner.pid}) " in disturbed[0]["disturbed"]
    assert disturbed[0]["sut_foreign"] >= 0.2
    again = [s for s in steps if s["offered"] == 2000 and not s["disturbed"]]
    assert again and again[0]["repeat"] == "disturbed"
    # Not the knee: the climb went on past 2,000/s.
    assert sweep_result["first_bad"] != 2000 and any(s["offered"] == 8000 for s in steps)
    assert "<- disturbed, run again" in "".join(log)


_SPIN = "import time\nend = time.monotonic() + 0.8\nwhile time.monotonic() < end: pass"


def test_the_ledger_counts_a_child_as_the_client_and_names_a_stranger() -> None:
    ledger = Ledger(lambda: {}, os.sched_getaffinity(0))
    ledger.begin()
    child = subprocess.Popen([sys.executable, "-c", _SPIN])
    # A process that is none of ours (orphaned at once: its parent is not this one),
    # which starts and ends within the window.
    subprocess.run(["sh", "-c", f"{sys.executable} -c '{_SPIN}' & echo $!"], check=True)
    time.sleep(0.4)
    ledger.peek()
    child.wait()
    time.sleep(0.6)
    window = ledger.end()
    assert window is not None and window.seconds >= 1.0
    (group,) = window.groups
    # The child's 0.8 s of CPU in a window of ~1 s; on a busy machine it gets less.
    assert group.roles["client"] >= 0.3
    names = [(name, pid) for name, pid, cores in window.others if cores >= 0.2]
    assert any(name.startswith("python") for name, _ in names), window.others
    assert all(pid != child.pid for _, pid in names)
    assert "% of a core" in window.culprits()


@two_cpus
def test_an_attack_whose_cpu_is_full_of_another_process_is_no_ok(serve, tmp_path: Path) -> None:
    backend = serve(ports=1)
    spin = "import time\nend = time.monotonic() + 6\nwhile time.monotonic() < end: pass"
    hog = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", spin])
    try:
        time.sleep(0.3)
        stream = tmp_path / "run.jsonl"
        attack = subprocess.run(
            ["taskset", "-c", "0", *tippingpoint_cmd(
                "attack", backend.url, "--rate", "500", "--duration", "3s",
                "--processes", "1", "-o", str(stream),
            )],
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert attack.returncode == 0, attack.stderr.decode()
    finally:
        hog.kill()
        hog.wait()
    report = run_tp("report", str(stream)).stdout.decode()
    # Its own processes used a sliver of the core; the core itself had no room.
    assert "SATURATED" in report and "its CPUs were" in report, report
    seconds = [json.loads(line) for line in stream.read_text().splitlines()][1:]
    assert all(s["cpus_busy"] >= 0.9 for s in seconds if s.get("dur", 0) >= 0.9)


def test_a_process_the_kernel_cannot_place_is_refused_in_one_line() -> None:
    from tippingpoint.placement import spawn

    with pytest.raises(PlacementError, match=r"^cannot start test on CPUs 63: the kernel refused"):
        spawn(["true"], {63}, "test", subprocess.DEVNULL)
    proc = spawn(["true"], {0}, "test", subprocess.DEVNULL)
    assert proc.wait(10) == 0
