"""`--cluster`: runs spread over a local Dask cluster of 3 workers (loopback only)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_tp, tippingpoint_cmd
from tippingpoint.hdr import Histogram
from tippingpoint.stream import Header, HoldHeader, Interval, decode

pytest.importorskip("distributed", reason="pip install 'tippingpoint[cluster]'")


def _start_cluster(workers: int, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        tippingpoint_cmd("cluster", "local", "--workers", str(workers), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().decode().strip()
    assert first.startswith(("tcp://127.0.0.1:", "tls://127.0.0.1:")), first
    return proc, first


def _stop_cluster(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    proc, address = _start_cluster(3)
    yield address
    _stop_cluster(proc)


def _records(path: Path) -> list[Any]:
    return [decode(line) for line in path.read_bytes().splitlines()]


def test_an_attack_on_three_workers_sends_exactly_its_plan(
    cluster: str, serve: Any, tmp_path: Path
) -> None:
    server = serve()
    out = tmp_path / "cluster.jsonl"
    result = run_tp(
        "attack", server.url, "--rate", "3000", "--duration", "5s", "--cluster", cluster,
        "-o", str(out), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    log = result.stderr.decode()
    assert log.count("clock offset") == 3 and "source addresses 127.0.1.2-127.0.1.254" in log
    # The server counted exactly the plan: 3,000/s for 5 s.
    assert server.metrics()['tippingpoint_serve_requests_total{code="200"}'] == 15_000
    records = _records(out)
    header = records[0]
    assert isinstance(header, Header) and header.processes == 3
    assert sorted(w["shard"] for w in header.cluster) == [0, 1, 2]
    assert all(abs(w["clock_offset_ms"]) < 50 for w in header.cluster)
    intervals = [r for r in records if isinstance(r, Interval)]
    assert {r.process for r in intervals} == {0, 1, 2}
    assert all(r.host for r in intervals)
    # The merged report is the sum of the shards: requests and the latency histogram.
    report = json.loads(run_tp("report", "--type", "json", str(out)).stdout)
    assert report["requests"] == sum(r.done for r in intervals) == 15_000
    merged = Histogram()
    for r in intervals:
        merged.add(r.histogram("latency"))
    assert report["latencies"]["max"] == merged.max * 1000
    assert report["latencies"]["99th"] == merged.percentile(99) * 1000
    # Each shard sent its interleaved third: hits k, k+3, ...
    per_shard = {k: sum(r.sent for r in intervals if r.process == k) for k in range(3)}
    assert per_shard == {0: 5000, 1: 5000, 2: 5000}


def test_a_lost_worker_is_noticed_and_its_missing_share_said(serve: Any, tmp_path: Path) -> None:
    from distributed import Client

    proc, address = _start_cluster(3)
    try:
        with Client(address, timeout="10s") as client:
            pids = client.run(os.getpid)
        server = serve()
        out = tmp_path / "lost.jsonl"
        attack = subprocess.Popen(
            tippingpoint_cmd(
                "attack", server.url, "--rate", "600", "--duration", "8s", "--cluster",
                address, "-o", str(out),
            ),
            stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(6)  # start-up, then a few seconds of load
        victim = sorted(pids)[0]
        os.kill(pids[victim], signal.SIGKILL)
        killed = time.time()
        _, err = attack.communicate(timeout=120)
        log = err.decode()
        assert attack.returncode == 1, log[-2000:]
        assert f"worker {victim}" in log and "was lost" in log, log[-2000:]
        assert "requests of the run's plan are missing from then on" in log
        # The other shards went on to the end: more than two thirds of the plan.
        served = server.metrics()['tippingpoint_serve_requests_total{code="200"}']
        assert 2 * 4800 / 3 < served < 4800, served
        # Noticed within 2 s of the kill (the log says when, from the run's time zero).
        found = re.search(r"was lost ([\d.]+) s into the run", log)
        assert found is not None
        header = _records(out)[0]
        assert header.start + float(found[1]) - killed < 2.0
    finally:
        _stop_cluster(proc)


def test_a_plaintext_scheduler_off_loopback_is_refused() -> None:
    # The rule is about where the scheduler is: a host said not to be loopback stands
    # in for one elsewhere, and nothing connects anywhere.
    from tippingpoint.cluster import ClusterError
    from tippingpoint.cluster.address import check_address

    def elsewhere(host: str) -> bool:
        return False

    with pytest.raises(ClusterError, match="runs whatever anyone sends it: use tls://"):
        check_address("tcp://127.0.0.1:8786", local=elsewhere)
    address, warning = check_address("127.0.0.1:8786", insecure=True, local=elsewhere)
    assert address == "tcp://127.0.0.1:8786"
    assert warning is not None and "anyone who reaches it can run code" in warning
    assert check_address("tls://127.0.0.1:8786", local=elsewhere) == ("tls://127.0.0.1:8786", None)
    # On loopback a plaintext scheduler is accepted as it is.
    assert check_address("tcp://127.0.0.1:8786") == ("tcp://127.0.0.1:8786", None)
    assert check_address("tcp://localhost:8786")[1] is None
    with pytest.raises(ClusterError, match="give a Dask scheduler address"):
        check_address("http://127.0.0.1")


def test_the_refusal_is_one_line_on_the_command_line(cluster: str) -> None:
    # --insecure-cluster on loopback is not needed, and a bad address says what to give.
    result = run_tp(
        "attack", "http://127.0.0.1:9/", "--rate", "10", "--duration", "1s",
        "--cluster", "ftp://127.0.0.1:8786", timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    err = result.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "give a Dask scheduler address" in err, err


def test_a_hold_of_60000_connections_through_the_cluster(
    cluster: str, serve: Any, tmp_path: Path
) -> None:
    # 60,000 sockets on each side: more than one process's 20,000 descriptors, so each
    # worker runs several hold processes, from its own source addresses.
    server = serve(processes=5)
    out = tmp_path / "hold.jsonl"
    result = run_tp(
        "hold", server.url, "--connections", "60000", "--connect-rate", "20000",
        "--duration", "9s", "--cluster", cluster, "-o", str(out), timeout=180,
    )  # fmt: skip
    log = result.stderr.decode()
    assert result.returncode == 0, log[-3000:]
    assert "peak established 60,000 of 60,000" in result.stdout.decode()
    assert "lost 0; failures none" in result.stdout.decode()
    assert server.metrics()["tippingpoint_serve_connections_accepted_total"] == 60_000
    # Shared evenly: 20,000 per worker, over fleet-wide shard numbers.
    assert log.count(": 20,000 connections in ") == 3, log[-3000:]
    header, *records = _records(out)
    # The stream's header places the shards and says each worker's clock offset.
    assert isinstance(header, HoldHeader) and header.connections == 60_000
    assert len(header.cluster) == 3 and all(abs(w["clock_offset_ms"]) < 50 for w in header.cluster)
    placed = sorted(k for w in header.cluster for k in w["shards"])
    assert placed == list(range(header.processes))
    finals = [r for r in records if getattr(r, "final", False)]
    assert sorted(r.process for r in finals) == placed
    assert len(finals) >= 6 and sum(r.opened for r in finals) == 60_000
    assert all(r.host for r in finals)  # every record says its client machine


def test_ctrl_c_stops_every_shard_on_every_worker(cluster: str, serve: Any, tmp_path: Path) -> None:
    from distributed import Client

    server = serve(processes=2)
    hold = subprocess.Popen(
        tippingpoint_cmd(
            "hold", server.url, "--connections", "3000", "--connect-rate", "3000",
            "--duration", "60s", "--cluster", cluster, "-o", str(tmp_path / "h.jsonl"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(7)
    with Client(cluster, timeout="10s") as client:
        running = client.run(_shard_processes)
    assert sum(len(p) for p in running.values()) >= 6, running  # a run's process, a shard
    hold.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    out, err = hold.communicate(timeout=60)
    assert time.monotonic() - stopped < 15  # stopped, not run to its 60 s end
    assert hold.returncode == 130, err.decode()[-2000:]
    assert "stopping every shard" in err.decode()
    assert "peak established 3,000 of 3,000" in out.decode()
    with Client(cluster, timeout="10s") as client:
        left = client.run(_shard_processes)
    assert all(not p for p in left.values()), left
    metrics = server.metrics()
    assert metrics["tippingpoint_serve_connections_closed_total"] == 3_000


def _shard_processes() -> list[int]:
    """On a worker: the live processes its zygote forked for runs, and their shards."""
    import psutil

    return [
        p.pid
        for zygote in psutil.Process().children()
        if "cluster.zygote" in " ".join(zygote.cmdline())
        for p in zygote.children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE
    ]


def test_a_sweep_on_the_cluster(cluster: str, serve: Any, tmp_path: Path) -> None:
    server = serve()
    out = tmp_path / "sweep"
    result = run_tp(
        "sweep", server.url, "--start", "600", "--step", "x2", "--step-duration", "2s",
        "--max-steps", "2", "--cluster", cluster, "--out", str(out), "--json", timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    steps = json.loads(result.stdout)["steps"]
    assert [s["offered"] for s in steps] == [600, 1200]
    # Every step ran on the three workers, and the server got exactly the steps' plans.
    assert server.metrics()['tippingpoint_serve_requests_total{code="200"}'] == 1200 + 2400
    for step in sorted(out.glob("step-*.jsonl")):
        records = _records(step)
        assert len(records[0].cluster) == 3
        assert {r.host for r in records if isinstance(r, Interval)} != {""}


def test_the_generator_verdict_names_the_host_that_fell_behind() -> None:
    from tippingpoint.report.merge import summarize

    def interval(host: str, late_us: int) -> Interval:
        lateness = Histogram()
        lateness.record_many([late_us] * 1000)
        return Interval(
            process=0 if host == "a" else 1, t=0, dur=1.0, sent=1000, done=1000,
            codes={200: 1000}, hist={"lateness": lateness.encode()}, host=host, cpu_us=300_000,
        )  # fmt: skip

    summary = summarize([("x", interval("a", 50)), ("x", interval("b", 40_000))])
    saturated, verdict = summary.saturation()
    assert saturated
    assert "on b (p95 lateness 40.0 ms, 30 % of its cores) of 2 client machines" in verdict


def test_a_bench_scenario_with_a_cluster(tmp_path: Path) -> None:
    from tests.conftest import free_ports

    ports = free_ports(4)
    scenario = tmp_path / "cluster.toml"
    scenario.write_text(f"""
[bench]
title = "on a cluster"
[backends]
ports = "{ports[0]}-{ports[1]}"
[proxy]
http = "127.0.0.1:{ports[2]}"
https = "127.0.0.1:{ports[3]}"
[cluster]
workers = 2
[[experiment]]
name = "http sweep"
kind = "sweep"
frontend = "http"
start = 300
step = "x2"
step_duration = "1s"
max_steps = 2
[[experiment]]
name = "held connections"
kind = "hold"
frontend = "http"
connections = 2000
connect_rate = 2000
duration = "4s"
""")
    out = tmp_path / "report"
    result = run_tp("bench", str(scenario), "-o", str(out), timeout=300)
    log = result.stderr.decode()
    assert result.returncode == 0, log[-3000:]
    assert "a local Dask cluster of 2 worker(s)" in log and log.count("clock offset") >= 2
    summary = json.loads((out / "summary.json").read_text())
    assert "Dask cluster of 2 worker(s)" in summary["machine"]
    # The sweep's steps ran on both workers; the hold was shared between them.
    steps = sorted((out / "01-sweep").glob("step-*.jsonl"))
    assert steps and all(len(_records(s)[0].cluster) == 2 for s in steps)
    assert log.count(": 1,000 connections in 1 process(es)") == 2, log[-3000:]
    assert "peak established 2,000 of 2,000" in log


def test_a_tls_cluster_with_mutual_authentication(serve: Any, tmp_path: Path) -> None:
    certs, stranger = tmp_path / "certs", tmp_path / "other"
    for directory in (certs, stranger):
        made = run_tp("cluster", "certs", str(directory), "--host", "127.0.0.1")
        assert made.returncode == 0, made.stderr.decode()
    for key in certs.glob("*-key.pem"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert {p.name for p in certs.glob("*-key.pem")} == {
        "ca-key.pem",
        "node-key.pem",
        "client-key.pem",
    }
    proc, address = _start_cluster(2, "--certs", str(certs))
    try:
        assert address.startswith("tls://127.0.0.1:")
        server = serve()
        result = run_tp(
            "attack", server.url, "--rate", "1000", "--duration", "2s", "--cluster", address,
            "--cluster-certs", str(certs), "-o", str(tmp_path / "a.jsonl"), timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert server.metrics()['tippingpoint_serve_requests_total{code="200"}'] == 2000
        # No client certificate: said before connecting; one from another CA: refused.
        bare = run_tp(
            "attack", server.url, "--rate", "10", "--duration", "1s", "--cluster", address
        )
        assert bare.returncode == 1
        assert b"give --cluster-certs DIR" in bare.stderr
        other = run_tp(
            "attack", server.url, "--rate", "10", "--duration", "1s", "--cluster", address,
            "--cluster-certs", str(stranger), timeout=60,
        )  # fmt: skip
        assert other.returncode == 1 and b"cannot reach the scheduler" in other.stderr
        assert len(other.stderr.decode().strip().splitlines()) == 1
        assert server.metrics()['tippingpoint_serve_requests_total{code="200"}'] == 2000
    finally:
        _stop_cluster(proc)


def test_cluster_ssh_starts_a_fleet_over_a_real_ssh_server(serve: Any, tmp_path: Path) -> None:
    import sys

    import asyncssh

    from tests.conftest import free_ports

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    host_key.write_private_key(tmp_path / "host_key")
    client_key.write_private_key(tmp_path / "client_key")
    client_key.write_public_key(tmp_path / "client_key.pub")
    ssh_port, scheduler_port = free_ports(2)
    known = tmp_path / "known_hosts"
    known.write_bytes(f"[127.0.0.1]:{ssh_port} ".encode() + host_key.export_public_key())
    sshd = subprocess.Popen(
        [sys.executable, "-m", "tests.ssh_server", str(ssh_port), str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    cluster = None
    try:
        assert sshd.stdout is not None and sshd.stdout.readline() == b"ready\n"
        cluster = subprocess.Popen(
            tippingpoint_cmd(
                "cluster", "ssh", "127.0.0.1", "127.0.0.1", "127.0.0.1", "--ssh-port",
                str(ssh_port), "--port", str(scheduler_port), "--python", sys.executable,
                "--ssh-key", str(tmp_path / "client_key"), "--known-hosts", str(known),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        assert cluster.stdout is not None
        address = cluster.stdout.readline().decode().strip()
        assert address == f"tcp://127.0.0.1:{scheduler_port}", cluster.stderr.read1().decode()
        server = serve()
        result = run_tp(
            "attack", server.url, "--rate", "1000", "--duration", "2s", "--cluster", address,
            "-o", str(tmp_path / "a.jsonl"), timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert result.stderr.decode().count("clock offset") == 2
        assert server.metrics()['tippingpoint_serve_requests_total{code="200"}'] == 2000
    finally:
        if cluster is not None:
            _stop_cluster(cluster)
        sshd.send_signal(signal.SIGTERM)
        sshd.wait(timeout=30)


def test_a_hold_that_loses_a_worker_says_what_went_with_it(serve: Any, tmp_path: Path) -> None:
    from distributed import Client

    proc, address = _start_cluster(3)
    try:
        with Client(address, timeout="10s") as client:
            pids = client.run(os.getpid)
        server = serve(processes=2)
        hold = subprocess.Popen(
            tippingpoint_cmd(
                "hold", server.url, "--connections", "3000", "--connect-rate", "3000",
                "--duration", "12s", "--cluster", address, "-o", str(tmp_path / "h.jsonl"),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(8)  # start-up, then all 3,000 held
        victim = sorted(pids)[0]
        os.kill(pids[victim], signal.SIGKILL)
        out, err = hold.communicate(timeout=120)
        log = err.decode()
        assert hold.returncode == 1, log[-2000:]
        assert f"worker {victim}" in log and "was lost" in log
        assert "with 1,000 established connections, no longer counted as held" in log, log
        summary = out.decode()
        assert "peak established 3,000 of 3,000" in summary
        assert "1,000 gone with a lost client machine" in summary, summary
        # The lost worker's connections went with it: the server saw them close.
        assert server.metrics()["tippingpoint_serve_connections_closed_total"] == 3_000
    finally:
        _stop_cluster(proc)


def test_a_hold_that_does_not_fit_the_fleet_is_refused_per_machine(
    cluster: str, serve: Any
) -> None:
    server = serve()
    result = run_tp(
        "hold", server.url, "--connections", "90000000", "--connect-rate", "1000",
        "--duration", "5s", "--cluster", cluster, timeout=60,
    )  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 1, err
    refusal = err.strip().splitlines()[-1]
    assert refusal.startswith("tippingpoint: this hold cannot fit the fleet: ")
    # Each worker's machine with its share and what it lacks.
    assert refusal.count("30,000,000 connections: ") == 3 and "GiB are available" in refusal
    assert server.metrics()["tippingpoint_serve_connections_accepted_total"] == 0


def test_doctor_checks_each_machine_of_the_cluster_through_its_workers(cluster: str) -> None:
    """`doctor --cluster`: the checks run in a worker on each host, for the share of the
    connections that host's workers would hold, printed under the host's name."""
    import socket

    result = run_tp("doctor", "--connections", "30000", "--cluster", cluster, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    out = result.stdout.decode()
    head = re.search(
        rf"^{re.escape(socket.gethostname())}: 3 worker\(s\), 30,000 of the 30,000 "
        r"connections \(checked by worker pid (\d+), tcp://127\.0\.0\.1:\d+\)$",
        out,
        re.M,
    )
    assert head is not None, out
    # A worker of the cluster, still running: not the doctor process, which has ended.
    assert os.path.exists(f"/proc/{head.group(1)}")
    checks = [line for line in out.splitlines()[1:] if line.startswith(("  ok ", "  FIX "))]
    assert any("open files per process" in line for line in checks), out
    assert any("ephemeral ports" in line for line in checks), out
    refused = run_tp("doctor", "--cluster", cluster, "--apply", timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.decode().strip().endswith("run it as root on each host")
