"""`tippingpoint hold`: connections held across processes, source addresses and ports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import run_tp, tippingpoint_cmd
from tippingpoint.engine.hold import HoldConfig, plan_hold
from tippingpoint.targets import Target


def test_plan_splits_connections_rate_and_addresses() -> None:
    config = HoldConfig(
        Target("GET", "http://127.0.0.1:8282/"),
        connections=50_000,
        connect_rate=10_000,
        duration=60,
        laddrs=tuple(f"127.0.0.{i}" for i in range(2, 8)),
    )
    shards = plan_hold(config, fd_limit=20_000, start_ns=0)
    assert len(shards) == 3  # 19,936 per process
    assert [s.connections for s in shards] == [16_667, 16_667, 16_666]
    assert all(abs(s.connect_rate - 10_000 / 3) < 1e-9 for s in shards)
    assert [len(s.laddrs) for s in shards] == [2, 2, 2]


def test_hold_keeps_connections_with_periodic_requests(serve, tmp_path: Path) -> None:
    server = serve(ports=4, processes=2)
    out = tmp_path / "hold.jsonl"
    start = time.monotonic()
    result = run_tp(
        "hold",
        server.url + "/",
        "--connections",
        "3000",
        "--connect-rate",
        "3000",
        "--duration",
        "4s",
        "--ports",
        f"{server.ports[0]}-{server.ports[-1]}",
        "--laddr",
        "127.0.0.2-127.0.0.4",
        "--processes",
        "2",
        "--request-every",
        "1s",
        "-o",
        str(out),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 30
    summary = result.stdout.decode()
    assert re.search(r"peak established 3,000 of 3,000, all established after \d s", summary)
    assert "lost 0; failures none" in summary
    assert re.search(r"connect time \(connect\(\) to established\) p50 [\d.]+ ms, p99 ", summary)
    assert re.search(r"connects started late against the plan by p50 [\d.]+ ms", summary)
    assert re.search(r"requests [\d,]+ \(200: [\d,]+\), p50 [\d.]+ ms", summary)
    header, *records = [json.loads(line) for line in out.read_text().splitlines()]
    # The hold's plan first: its start instant (t of every record counts from it).
    assert header["type"] == "hold-start" and "cluster" not in header
    assert (header["connections"], header["connect_rate"], header["processes"]) == (3000, 3000, 2)
    assert header["request_every"] == 1 and abs(header["start"] - time.time()) < 60
    assert {r["type"] for r in records} == {"hold"}
    assert {r["process"] for r in records} == {0, 1}
    answered = sum(sum(r["codes"].values()) for r in records)
    assert answered >= 3000  # every connection asked at least once a second
    assert all(set(r["codes"]) <= {"200"} for r in records)
    metrics = server.metrics()
    assert metrics["tippingpoint_serve_connections_accepted_total"] == 3000
    # The server may have answered a last few that were still in flight at the end.
    served = metrics['tippingpoint_serve_requests_total{code="200"}']
    assert answered <= served <= answered + 3000


def test_refused_connections_are_counted() -> None:
    result = run_tp(
        "hold",
        "http://127.0.0.1:1/",
        "--connections",
        "20",
        "--connect-rate",
        "10",
        "--duration",
        "3s",
        "--processes",
        "2",
    )
    # Not one held: said, with exit status 1.
    assert result.returncode == 1
    assert b"none of the 20 connections was established" in result.stderr
    # Spread over 2 processes and 3 seconds: counted once each, not once per second.
    assert b"failures refused: 20" in result.stdout


def test_hold_tls_connections(nginx) -> None:
    server = nginx(tls=True)
    cert = f"{server.dir}/cert.pem"
    result = run_tp(
        "hold",
        server.url,
        "--connections",
        "200",
        "--connect-rate",
        "400",
        "--duration",
        "2s",
        "--cacert",
        cert,
        "--request-every",
        "1s",
    )
    assert result.returncode == 0, result.stderr
    assert b"peak established 200 of 200" in result.stdout
    assert b"failures none" in result.stdout
    bad = run_tp(
        "hold", server.url, "--connections", "5", "--connect-rate", "50", "--duration", "1s"
    )
    assert b"failures tls: 5" in bad.stdout  # not verified without --cacert


def test_a_plan_that_cannot_fit_is_refused_before_connecting() -> None:
    # 200,000 connections from one source address to one port: more than any port range.
    # (Without --laddr, on loopback, hold takes the addresses its plan needs itself.)
    result = run_tp(
        "hold",
        "http://127.0.0.1:1/",
        "--connections",
        "200000",
        "--duration",
        "1s",
        "--laddr",
        "127.0.0.2",
    )
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "this plan cannot fit" in err and "source address(es)" in err
    assert "--laddr 127.0.0.2-127.0.0." in err
    assert b"failures" not in result.stdout  # not one connection was tried


def test_connections_closed_by_the_server_are_lost_and_explained(serve) -> None:
    # Closed by the server 2-3 s after opening (whole-second deadlines): the first
    # report, a second in, still sees all of them.
    server = serve("--idle-timeout", "2")
    result = run_tp(
        "hold",
        server.url + "/",
        "--connections",
        "50",
        "--connect-rate",
        "500",
        "--duration",
        "5s",
    )
    assert result.returncode == 0, result.stderr
    assert b"peak established 50 of 50" in result.stdout
    assert b"lost 50;" in result.stdout
    assert b"look at its idle timeouts" in result.stderr


def test_a_stalled_accept_shows_in_connect_time_not_in_lateness(serve) -> None:
    # A backlog of 16 and a server stopped for 1.5 s: the kernel completes 17 handshakes,
    # then drops SYNs until the server runs again; those connects wait for a retry.
    server = serve("--backlog", "16", processes=1)
    [worker] = server.worker_pids
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "hold", server.url + "/", "--connections", "600", "--connect-rate", "200",
            "--duration", "8s", "--processes", "1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        os.kill(worker, signal.SIGSTOP)
        time.sleep(1.5)
    finally:
        os.kill(worker, signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    summary = stdout.decode()
    connect = re.search(r"connect time \(connect\(\) to established\) p50 [\d.]+ ms, "
                        r"p99 ([\d.]+) ms, max ([\d.]+) ms", summary)  # fmt: skip
    assert connect is not None, summary
    assert float(connect.group(2)) >= 900, summary  # a SYN retried after a second
    late = re.search(r"started late against the plan by p50 [\d.]+ ms, p99 ([\d.]+) ms", summary)
    assert late is not None and float(late.group(1)) < 100, summary  # the client kept time
    assert "fell behind" not in summary


def test_a_client_short_of_cpu_says_it_fell_behind() -> None:
    # One process pinned to one core asked for far more connects a second than it can
    # start (each a connect() the kernel refuses, and its bookkeeping): its schedule
    # slips, and the summary says so.
    result = subprocess.run(
        [
            "taskset", "-c", "0",
            *tippingpoint_cmd(
                "hold", "https://127.0.0.1:1/", "--connections", "40000",
                "--connect-rate", "40000", "--duration", "3s", "--processes", "1",
                "--insecure",
            ),
        ],
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    summary = result.stdout.decode()
    late = re.search(r"started late against the plan by p50 [\d.]+ ms, p99 ([\d.]+) ms", summary)
    assert late is not None and float(late.group(1)) > 100, summary
    assert "the client fell behind its connect schedule (p95 lateness" in summary
    assert "a lower --connect-rate" in summary


def test_connects_held_up_by_a_slow_server_blame_the_server(serve) -> None:
    # The server stops for 3.5 s with a backlog of 16: opens pile up to the 2,000 a
    # process keeps under way, and later connects start late with the client idle. The
    # verdict names the other end, not the client's CPU.
    server = serve("--backlog", "16", processes=1)
    [worker] = server.worker_pids
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "hold", server.url + "/", "--connections", "5000", "--connect-rate", "1000",
            "--duration", "9s", "--processes", "1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        os.kill(worker, signal.SIGSTOP)
        time.sleep(3.5)
    finally:
        os.kill(worker, signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    summary = stdout.decode()
    assert "each open waited on the other end (TCP connect p99" in summary, summary
    assert "not at more client processes" in summary


def test_cpu_busy_counts_each_client_machines_own_cores() -> None:
    from tippingpoint.engine.hold import HoldTally
    from tippingpoint.stream import HoldRecord

    def second(process: int, host: str) -> HoldRecord:
        # Each process used 1 CPU-second in its first 2 s: half a core.
        return HoldRecord(
            process, t=2.0, established=10, opened=10, lost=0, cpu_us=1_000_000, host=host
        )

    # Here: 4 processes on this machine's cores (the hold's own), at most one core each.
    here = HoldTally(40, 4)
    for k in range(4):
        here.add(second(k, ""))
    cores = min(4, here.cores)
    assert here.cpu_busy() == pytest.approx(4 * 1.0 / (2.0 * cores))
    # A cluster: 3 processes on a 2-core machine and 1 on a 16-core one: 3 cores in all,
    # whatever this machine has.
    fleet = HoldTally(40, 4)
    fleet.host_cores = {"a": 2, "b": 16}
    for k, host in enumerate("aaab"):
        fleet.add(second(k, host))
    assert fleet.cpu_busy() == pytest.approx(4 * 1.0 / (2.0 * 3))
