"""Faults as users meet them, with real HAProxy and real backends: a port already taken,
a relative output directory, a backend or HAProxy killed mid-run, a full disk, and the
bench interrupted or killed. Each shows what the user sees, that nothing is lost and
that nothing is left running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import HOST, free_ports, run_tp, start_server, tippingpoint_cmd
from tippingpoint.listeners import listeners


def tiny_scenario(tmp: Path, *experiments: str) -> Path:
    ports = free_ports(4)
    text = f"""
[bench]
title = "tiny"
[backends]
ports = "{ports[0]}-{ports[1]}"
[proxy]
http = "127.0.0.1:{ports[2]}"
https = "127.0.0.1:{ports[3]}"
""" + "".join(experiments)
    path = tmp / "tiny.toml"
    path.write_text(text)
    return path


ATTACK = """
[[experiment]]
name = "steady"
kind = "attack"
frontend = "http"
rate = 200
duration = "{duration}"
"""


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return out


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def bench_proc(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_bench(
    started: list[subprocess.Popen[bytes]], scenario: Path, cwd: Path, *args: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        tippingpoint_cmd("bench", str(scenario), *args),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    started.append(proc)
    return proc


def started_children(proc: subprocess.Popen[bytes], need: set[str]) -> list[psutil.Process]:
    """The bench's descendants once its backends, HAProxy and the attack's children run."""

    def ready() -> bool:
        names = " ".join(" ".join(p.cmdline()) for p in descendants(proc.pid) if p.is_running())
        return all(n in names for n in need)

    wait_for(ready, 30, f"the bench to start {need}")
    time.sleep(0.3)
    return descendants(proc.pid)


# Ports already taken


def test_listeners_finds_the_process_on_a_port() -> None:
    [port] = free_ports(1)
    with socket.socket() as s:
        s.bind((HOST, port))
        s.listen()
        [found] = listeners(HOST, [port])
        assert found.pid == os.getpid() and "pytest" in (found.command or "")
        assert listeners("0.0.0.0", [port])  # a wildcard server would share it too
        assert not listeners("127.0.0.2", [port])
    assert not listeners(HOST, [port])


def test_a_second_serve_on_a_taken_port_is_refused_and_may_join_on_purpose() -> None:
    first = start_server(["--processes", "1"], free_ports(1), metrics=False)
    try:
        second = run_tp("serve", "--ports", str(first.port), "--processes", "1", timeout=30)
        err = second.stderr.decode()
        assert second.returncode == 2 and len(err.strip().splitlines()) == 1, err
        assert f"port {first.port} is taken: pid {first.worker_pids[0]} (" in err
        assert "tippingpoint serve" in err and "--share-ports" in err
        joined = start_server(["--processes", "1", "--share-ports"], first.ports, metrics=False)
        joined.stop()
    finally:
        first.stop()


def test_proxy_refuses_a_taken_frontend_and_takes_a_relative_dir(serve, tmp_path: Path) -> None:
    backend = serve(metrics=False)
    taken = run_tp(
        "proxy", "--backends", f"127.0.0.1:{backend.port}", "--http", f"127.0.0.1:{backend.port}",
        "--https", "", "--dir", str(tmp_path / "p1"),
    )  # fmt: skip
    assert taken.returncode == 2 and b"is taken: pid" in taken.stderr, taken.stderr
    http = free_ports(1)[0]
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "proxy",
            "--backends",
            f"127.0.0.1:{backend.port}",
            "--http",
            f"127.0.0.1:{http}",
            "--https",
            f"127.0.0.1:{free_ports(1)[0]}",
            "--dir",
            "relative/proxy",
        ),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: bool(listeners(HOST, [http])) or proc.poll() is not None, 30, "HAProxy")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        config = (tmp_path / "relative/proxy/haproxy-0.cfg").read_text()
        sock = os.path.realpath(tmp_path / "relative/proxy/haproxy-0.sock")
        assert f"stats socket {sock} " in config and sock.startswith("/")
        stats = run_tp("proxy", "stats", "--dir", str(tmp_path / "relative/proxy"), "--json")
        assert stats.returncode == 0, stats.stderr
        assert f"crt {tmp_path}/relative/proxy/tls/" in config
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_bench_refuses_a_stale_backend_on_its_ports(tmp_path: Path) -> None:
    scenario = tiny_scenario(tmp_path, ATTACK.format(duration="1s"))
    port = int(scenario.read_text().split('ports = "')[1].split("-")[0])
    stale = start_server(["--processes", "1"], [port], metrics=False)
    try:
        result = run_tp("bench", str(scenario), "-o", str(tmp_path / "out"), timeout=60)
    finally:
        stale.stop()
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"tippingpoint: bench: backends: port {port} is taken: pid {stale.worker_pids[0]} ("
        )
    ), err
    # The advice is the bench's own: its ports are the scenario's, it has no --share-ports.
    assert err.strip().endswith("set other ports in the scenario ([backends] ports)"), err
    assert "--share-ports" not in err and "Traceback" not in err


# The README's relative paths


def test_bench_writes_its_default_relative_report_dir(tmp_path: Path) -> None:
    scenario = tiny_scenario(tmp_path, ATTACK.format(duration="1s"))
    result = subprocess.run(
        tippingpoint_cmd("bench", "tiny.toml"), cwd=tmp_path, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert scenario.exists()
    report = tmp_path / "tippingpoint-report"
    assert (report / "index.html").stat().st_size > 100_000
    summary = json.loads((report / "summary.json").read_text())
    assert summary["summary"][0][1].startswith("200 requests, success 100.00%")
    socket_line = next(
        line for line in (report / "haproxy.cfg").read_text().splitlines() if "stats socket" in line
    )
    assert socket_line.split()[2].startswith("/")
    # A deep directory's sockets live under a short path, linked from the report.
    assert os.path.realpath(report / "proxy/haproxy-0.sock") == socket_line.split()[2]


# Processes killed mid-run


def test_a_backend_killed_mid_step_is_counted_and_the_sweep_ends(
    serve, proxy, tmp_path: Path
) -> None:
    backend = serve(ports=2, metrics=False)
    px = proxy(backend.ports, "--https", "")
    out = tmp_path / "sweep"
    sweep = subprocess.Popen(
        tippingpoint_cmd(
            "sweep",
            f"http://127.0.0.1:{px.http_port}/ping",
            "--start",
            "400",
            "--step",
            "x2",
            "--step-duration",
            "4s",
            "--max-steps",
            "3",
            "--refine",
            "0",
            "--processes",
            "1",
            "--timeout",
            "3s",
            "--out",
            str(out),
            "--json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2.0)  # in the first step
    os.kill(backend.worker_pids[0], signal.SIGKILL)
    stdout, stderr = sweep.communicate(timeout=60)
    assert sweep.returncode == 0, stderr.decode()[-2000:]
    result = json.loads(stdout)
    first = result["steps"][0]
    assert first["success"] < 0.999 and "success" in first["verdict"]
    assert len(result["steps"]) == 1 and result["tipping_point"] is None
    assert not result["client_limited"]
    report = run_tp("report", "--type", "json", str(out / "step-00-400.jsonl"))
    assert report.returncode == 0
    summary = json.loads(report.stdout)
    failures = {**summary["error_counts"], **summary["status_codes"]}
    assert set(failures) - {"200"}, summary  # by kind: resets and HAProxy's 502/503
    # The backend replaced its worker at once, and said so.
    assert "worker 0 restarted as pid" in backend.log()


def test_haproxy_killed_mid_experiment_ends_the_bench_with_its_report(
    tmp_path: Path, bench_proc: list[subprocess.Popen[bytes]]
) -> None:
    scenario = tiny_scenario(
        tmp_path, ATTACK.format(duration="5s"), ATTACK.format(duration="1s").replace("steady", "2")
    )
    proc = start_bench(bench_proc, scenario, tmp_path, "-o", "report")
    children = started_children(proc, {"haproxy", "serve"})
    wait_for(lambda: (tmp_path / "report/01-attack/attack.jsonl").exists(), 30, "the attack")
    time.sleep(1.5)
    [haproxy] = [p for p in children if p.name() == "haproxy"]
    haproxy.kill()
    _, stderr = proc.communicate(timeout=60)
    err = stderr.decode()
    assert proc.returncode == 1, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"tippingpoint: bench: proxy pid {haproxy.pid} killed by signal 9 (SIGKILL) "
        "during 'steady'; the report has what ran: "
    ), last
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "report/summary.json").read_text())
    assert [row[0] for row in summary["summary"]] == ["steady"]
    assert "killed by signal 9" in summary["failure"]
    assert "stopped early" in (tmp_path / "report/index.html").read_text()
    time.sleep(2)
    assert not alive(children)


def test_a_backend_worker_killed_mid_bench_is_replaced_and_reported(
    tmp_path: Path, bench_proc: list[subprocess.Popen[bytes]]
) -> None:
    scenario = tiny_scenario(tmp_path, ATTACK.format(duration="4s"))
    proc = start_bench(bench_proc, scenario, tmp_path, "-o", "report")
    children = started_children(proc, {"haproxy", "serve"})
    wait_for(lambda: (tmp_path / "report/01-attack/attack.jsonl").exists(), 30, "the attack")
    time.sleep(1.0)
    # serve's supervisor and its worker: the worker is the serve process whose parent is
    # also a serve process.
    serves = [p for p in children if "serve" in " ".join(p.cmdline())]
    [worker] = [p for p in serves if p.ppid() in {q.pid for q in serves}]
    worker.kill()
    _, stderr = proc.communicate(timeout=60)
    err = stderr.decode()
    assert proc.returncode == 0, err[-2000:]
    assert "bench: backends: worker 0 restarted as pid" in err
    summary = json.loads((tmp_path / "report/summary.json").read_text())
    [row] = summary["summary"]
    assert row[1].endswith("(backends: 1 worker(s) died and were restarted during it)"), row
    assert summary["experiments"][0]["worker_restarts"]
    time.sleep(2)
    assert not alive(children + descendants(proc.pid))


# A full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_ends_the_attack_with_one_line_and_keeps_what_was_written(
    serve, small_disk: Path
) -> None:
    backend = serve(metrics=False)
    stream = small_disk / "attack.jsonl"
    result = run_tp(
        "attack", f"{backend.url}/ping", "--rate", "2000", "--duration", "20s", "-o", str(stream),
        timeout=60,
    )  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert len(err.strip().splitlines()) == 1, err
    assert f"cannot write {stream}: No space left on device" in err
    assert "readable: tippingpoint report" in err and "Traceback" not in err
    report = run_tp("report", "--type", "json", str(stream))
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["requests"] > 0


def test_an_unwritable_or_full_report_dir_is_one_line(tmp_path: Path, small_disk: Path) -> None:
    scenario = tiny_scenario(tmp_path, ATTACK.format(duration="1s"))
    blocked = run_tp("bench", str(scenario), "-o", "/dev/null/report", timeout=60)
    err = blocked.stderr.decode()
    assert blocked.returncode == 1 and "cannot write the report" in err, err
    assert len(err.strip().splitlines()) == 1
    (small_disk / "filler").write_bytes(b"x" * 20_000)
    full = run_tp("bench", str(scenario), "-o", str(small_disk / "report"), timeout=60)
    err = full.stderr.decode()
    assert full.returncode == 1 and "No space left on device" in err, err
    assert "Traceback" not in err
    assert not listeners(HOST, [int(scenario.read_text().split('ports = "')[1].split("-")[0])])


# Killed or interrupted: the stream and the processes


def test_a_killed_attack_leaves_a_stream_report_reads(serve, tmp_path: Path) -> None:
    backend = serve(metrics=False)
    stream = tmp_path / "attack.jsonl"
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "attack",
            f"{backend.url}/ping",
            "--rate",
            "500",
            "--duration",
            "20s",
            "-o",
            str(stream),
        ),
        stderr=subprocess.PIPE,
    )
    wait_for(lambda: stream.exists() and stream.read_text().count("\n") >= 3, 30, "records")
    children = descendants(proc.pid)
    proc.kill()
    proc.wait(10)
    with stream.open("ab") as f:
        f.write(b'{"type":"interval","t":')  # the line a crash cut
    report = run_tp("report", "--type", "json", str(stream))
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["requests"] > 0
    assert b"warning: " in report.stderr and b"truncated last line" in report.stderr
    time.sleep(2)
    assert not alive(children)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_bench_leaves_nothing_running(
    sig: signal.Signals, tmp_path: Path, bench_proc: list[subprocess.Popen[bytes]]
) -> None:
    scenario = tiny_scenario(
        tmp_path,
        ATTACK.format(duration="20s"),
        """
[[experiment]]
name = "held"
kind = "hold"
connections = 100
connect_rate = 100
duration = "5s"
""",
    )
    proc = start_bench(bench_proc, scenario, tmp_path, "-o", "report")
    wait_for(lambda: (tmp_path / "report/01-attack/attack.jsonl").exists(), 30, "the attack")
    children = started_children(proc, {"haproxy", "serve"})
    assert len(children) >= 4  # serve supervisor and worker, HAProxy, an attack process
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    time.sleep(2)
    assert not alive(children), stderr.decode()[-2000:]
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        last = stderr.decode().strip().splitlines()[-1]
        assert "interrupted; everything started has been stopped" in last
        summary = json.loads((tmp_path / "report/summary.json").read_text())
        assert summary["summary"][0][0] == "steady"  # the interrupted attack's result
