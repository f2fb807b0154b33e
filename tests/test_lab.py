"""A lab across hosts: HAProxy, the backends and the load each on a host of its own.

A local Dask cluster whose workers stand for the hosts lb, be1, be2 and cl, each on its
own address (127.0.K.1) and source addresses. The bench starts HAProxy through lb's
worker, serve through be1's and be2's, and the load runs on cl. The process tree shows
each role under its host's worker; after success, an error, Ctrl-C and the loss of lb's
worker, nothing of the lab is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import free_ports, run_tp, tippingpoint_cmd
from tests.test_cluster import _stop_cluster

pytest.importorskip("distributed", reason="pip install 'tippingpoint[cluster]'")

HOSTS = ("lb", "be1", "be2", "cl")
ADDRESS = {name: f"127.0.{k + 1}.1" for k, name in enumerate(HOSTS)}


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    proc = subprocess.Popen(
        tippingpoint_cmd("cluster", "local", "--hosts", ",".join(HOSTS)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "TIPPINGPOINT_LAB_LEASE": "4"},  # a killed bench's roles: 4 s
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().decode().strip()
    assert address.startswith("tcp://127.0.0.1:"), address
    yield proc, address
    _stop_cluster(proc)


def _workers(address: str) -> dict[str, int]:
    """Each host's worker process, by the host it stands for (its address's)."""
    from urllib.parse import urlsplit

    from distributed import Client

    hosts = {a: name for name, a in ADDRESS.items()}
    deadline = time.monotonic() + 30  # a worker killed by a test: its nanny starts another
    with Client(address, timeout="10s") as client:
        while True:
            pids = client.run(os.getpid)
            out = {hosts[urlsplit(w).hostname or ""]: pid for w, pid in pids.items()}
            if set(out) == set(HOSTS) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert set(out) == set(HOSTS), out
    return out


def _roles_left(workers: dict[str, int]) -> list[str]:
    """HAProxy and serve processes still under a worker."""
    left = []
    for host, pid in workers.items():
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for child in children:
            try:
                line = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "haproxy" in line or " serve " in line:
                left.append(f"{host}: {child.pid} {line}")
    return left


THE_OTHERS = """
[[experiment]]
name = "TLS long requests"
kind = "attack"
frontend = "https"
rate = 50
duration = "2s"
headers = ["sleep: 100"]
[[experiment]]                # 3 HAProxy instances at 500 connections each: 2 added on lb
name = "held connections"
kind = "hold"
frontend = "http"
connections = 1500
connect_rate = 1500
duration = "3s"
[[experiment]]
name = "what TLS costs"
kind = "tls-cost"
rates = [100, 200]
step_duration = "1s"
[[experiment]]                # serve --mqtt on be1 and be2, behind lb's MQTT frontend
name = "MQTT publish"
kind = "mqtt-sweep"
frontend = "mqtt"
qos = 1
sessions = 10
start = 200
step = "x2"
step_duration = "1s"
max_steps = 2
refine = 0
"""
"""The default scenario's other kinds, small: each through the lab."""


def _scenario(
    tmp: Path, address: str, step: str = "1s", steps: int = 3, others: bool = False
) -> tuple[Path, list[int]]:
    ports = free_ports(7)
    path = tmp / "lab.toml"
    path.write_text(
        f"""
[bench]
title = "a lab of four hosts"
open_files = 1200      # HAProxy: 500 connections per instance
[hosts]
lb = "lb"
be1 = "be1"
be2 = "be2"
cl = "cl"
[backends]
ports = "{ports[0]}"
mqtt_ports = "{ports[3]},{ports[4]}"
hosts = ["be1", "be2"]
cpus = "1"
[proxy]
host = "lb"
cpus = "1"
http = "127.0.0.1:{ports[1]}"
https = "127.0.0.1:{ports[2]}"
mqtt = "127.0.0.1:{ports[5]}"
mqtts = "127.0.0.1:{ports[6]}"
rate_limit = 600       # HAProxy's sessions a second: the knee, whatever the machine
[client]
hosts = ["cl"]
[cluster]
address = "{address}"
[[experiment]]
name = "HTTP, new connection per request"
kind = "sweep"
frontend = "http"
keepalive = false
start = 200
step = "x2"
step_duration = "{step}"
max_steps = {steps}
refine = 0
"""
        + (THE_OTHERS if others else "")
    )
    return path, ports


def _bench(scenario: Path, out: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        return subprocess.Popen(
            tippingpoint_cmd("bench", str(scenario), "-o", str(out)),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)


def _placed(out: Path) -> list[dict[str, Any]]:
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return []
    return [row for row in summary.get("placement", []) if row.get("host")]


def _listening(ports: list[int]) -> list[str]:
    from tippingpoint.listeners import listeners

    return [
        f"{host}:{p.port} pid {p.pid}" for host in ADDRESS.values() for p in listeners(host, ports)
    ]


def test_each_role_runs_under_its_hosts_worker_and_the_report_has_each_host(
    cluster: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    workers = _workers(cluster[1])
    scenario, ports = _scenario(tmp_path, cluster[1], others=True)
    out, log = tmp_path / "report", tmp_path / "bench.log"
    bench = _bench(scenario, out, log)
    try:
        _wait_for(log, "bench: started", bench)
        rows = _placed(out)
        assert {(r["role"], r["host"]) for r in rows} == {
            ("proxy", "lb"), ("backends", "be1"), ("backends", "be2"),
        }  # fmt: skip
        for row in rows:
            for pid in row["pids"]:
                # The role is its host's worker's child, not the bench's.
                assert psutil.Process(pid).ppid() == workers[row["host"]], row
                assert row["cpus_seen"] == "1"
        proxy = psutil.Process(next(r["pids"][0] for r in rows if r["role"] == "proxy"))
        assert "haproxy" in proxy.name()
        assert bench.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if bench.poll() is None:
            bench.kill()
    text = log.read_text()
    assert "bench: started lb: proxy; be1: backends; be2: backends; cl: client" in text
    assert f"http://{ADDRESS['lb']}:{ports[1]}/ping" in text
    summary = json.loads((out / "summary.json").read_text())
    assert "tipping point" in summary["summary"][0][1], summary["summary"]
    assert [(h["host"], h["roles"]) for h in summary["hosts"]] == [
        ("lb", ["proxy"]), ("be1", ["backends"]), ("be2", ["backends"]), ("cl", ["client"]),
    ]  # fmt: skip
    samples = [json.loads(line) for line in (out / "monitor.jsonl").read_text().splitlines()]
    assert samples and all(set(s["hosts"]) == set(HOSTS) for s in samples)
    busy = [s for s in samples if s["roles"].get("proxy", {}).get("cpu_pct", 0) > 1]
    assert busy, "HAProxy's CPU on lb reached the bench's samples"
    assert all(set(s["hosts"]["lb"]["roles"]) <= {"proxy", "proxy (hold)"} for s in samples)
    # The hold's 2 added HAProxy instances ran on lb, under its worker too.
    assert any("proxy (hold)" in s["hosts"]["lb"]["roles"] for s in samples)
    rows = dict(summary["summary"])
    assert "success 100.00%" in rows["TLS long requests"], rows
    assert "peak established 1,500 of 1,500" in rows["held connections"], rows
    assert "of HAProxy memory" in rows["held connections"] and "lost 0;" in rows["held connections"]
    assert "µs of HAProxy CPU" in rows["what TLS costs"], rows
    mqtt = next(e for e in summary["experiments"] if e["name"] == "MQTT publish")["sweep"]
    assert all(s["achieved"] > 0.9 * s["offered"] for s in mqtt["steps"]), mqtt["steps"]
    assert all("1" in s["hosts"]["be1"]["cpus"] for s in samples)
    report = (out / "index.html").read_text()
    assert "<h2>The hosts</h2>" in report
    for k in range(len(HOSTS)):
        assert f'id="host-cpu-{k}"' in report and f'id="host-net-{k}"' in report
    data = json.loads(report.split('id="bench-data">')[1].split("</script>")[0])
    assert data["marks"] and data["marks"][0]["name"] == "HTTP, new connection per request"
    assert set(data["monitor"]["hosts"]) == set(HOSTS)
    assert _roles_left(workers) == [] and _listening(ports) == []


def test_a_port_taken_on_one_host_is_refused_in_one_line_naming_it(
    cluster: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    import socket

    scenario, ports = _scenario(tmp_path, cluster[1])
    with socket.socket() as sock:
        sock.bind((ADDRESS["be2"], ports[0]))
        sock.listen()
        result = run_tp("bench", str(scenario), "-o", str(tmp_path / "out"), timeout=120)
    last = result.stderr.decode().strip().splitlines()[-1]
    assert result.returncode != 0
    assert "be2" in last and str(ports[0]) in last and "[backends] ports" in last, last
    assert _roles_left(_workers(cluster[1])) == []


@pytest.mark.parametrize("how", ["a backend dies", "Ctrl-C", "kill -9", "lb's worker is lost"])
def test_nothing_is_left_after_an_error_ctrl_c_or_a_lost_host(
    cluster: tuple[subprocess.Popen[bytes], str], tmp_path: Path, how: str
) -> None:
    workers = _workers(cluster[1])
    scenario, ports = _scenario(tmp_path, cluster[1], "1s", 5)
    out, log = tmp_path / "report", tmp_path / "bench.log"
    bench = _bench(scenario, out, log)
    try:
        _wait_for(log, "achieved", bench)
        if how == "Ctrl-C":
            bench.send_signal(signal.SIGINT)
        elif how == "kill -9":
            bench.kill()
        elif how == "lb's worker is lost":
            haproxy = next(r for r in _placed(out) if r["role"] == "proxy")["pids"][0]
            os.kill(workers.pop("lb"), signal.SIGKILL)  # its nanny starts another
        else:
            be1 = next(r for r in _placed(out) if r["host"] == "be1")
            os.kill(be1["pids"][0], signal.SIGKILL)
        code = bench.wait(timeout=90)
    finally:
        if bench.poll() is None:
            bench.kill()
    lines = log.read_text().strip().splitlines()
    if how == "kill -9":
        # No one is left to stop the roles: each host stops them once the bench's lease
        # on them runs out (20 s after its last sample; 4 s in this cluster).
        assert code == -9
        deadline = time.monotonic() + 15
        while _roles_left(workers) and time.monotonic() < deadline:
            time.sleep(0.5)
    elif how == "Ctrl-C":
        assert code == 130, lines[-5:]
    elif how == "lb's worker is lost":
        assert code != 0
        last = lines[-1]
        assert "host lb (worker tcp://127.0.1.1:" in last and "the proxy on it" in last, last
        assert not psutil.pid_exists(haproxy) or psutil.Process(haproxy).status() == "zombie"
    else:
        assert code != 0 and "on host be1: backends pid" in lines[-1], lines[-5:]
    assert _roles_left(workers) == [] and _listening(ports) == []


def test_a_lab_through_a_plaintext_scheduler_off_loopback_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in test_cluster: a scheduler said not to be on loopback stands in for one
    # elsewhere (every address here stays loopback), and nothing connects anywhere.
    from tippingpoint.bench import parse_scenario, run_bench
    from tippingpoint.cluster import ClusterError, fleet
    from tippingpoint.cluster.address import check_address

    def elsewhere(address: str, insecure: bool = False) -> tuple[str, str | None]:
        return check_address(address, insecure, local=lambda host: False)

    monkeypatch.setattr(fleet, "check_address", elsewhere)
    path, _ = _scenario(tmp_path, "tcp://127.0.0.1:8786")
    scenario = parse_scenario(path.read_text())
    with pytest.raises(ClusterError) as refused:
        run_bench(scenario, tmp_path / "out", lambda line: None)
    message = str(refused.value)
    assert "a plaintext scheduler off this machine runs whatever anyone sends it" in message
    assert "tls://" in message


def test_watch_cluster_samples_every_host_through_its_worker(
    cluster: tuple[subprocess.Popen[bytes], str],
) -> None:
    _workers(cluster[1])  # every host's worker is up
    result = run_tp(
        "watch", "--cluster", cluster[1], "--duration", "3s", "--format", "csv", timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    header, *rows = result.stdout.decode().strip().splitlines()
    columns = header.split(",")
    for host in HOSTS:
        assert f"{host}_cpu_busy_pct" in columns and f"{host}_tcp_established" in columns
    assert len(rows) >= 2
    last = dict(zip(columns, rows[-1].split(","), strict=True))
    assert all(last[f"{host}_mem_used_kib"] not in ("", "0") for host in HOSTS), last
    # Nothing of the watch stays on the workers: its samplers' labs are stopped.
    from distributed import Client

    from tippingpoint.cluster import agent

    with Client(cluster[1], timeout="10s") as client:
        labs = client.run(lambda: [k for k in agent._LABS if k.startswith("watch-")])
    assert all(v == [] for v in labs.values()), labs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[proxy]\nhost = "lb"\n', "backends.hosts: the proxy runs on lb"),
        ('[backends]\nhosts = ["be1"]\n', "proxy.host: the backends run on hosts"),
        ('[hosts]\nlb = "w1"\n[proxy]\nhost = "lbb"\n', "proxy.host: 'lbb' is not a host"),
        ('[client]\nhosts = ["cl", "cl"]\n', "client.hosts: a name is given twice"),
        ("[hosts]\nlb = 3\n", "hosts.lb: the Dask worker this host is"),
    ],
)
def test_a_lab_scenario_that_cannot_run_is_refused(text: str, message: str) -> None:
    from tippingpoint.bench import ScenarioError, parse_scenario

    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text + '[[experiment]]\nkind = "attack"\n')
    assert message in str(caught.value), str(caught.value)


def test_an_external_proxy_beside_a_lab_hosts_worker_is_watched_never_stopped(
    cluster: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    import shutil

    _workers(cluster[1])
    backend, frontend, stats = free_ports(3)
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend www
    bind {ADDRESS["lb"]}:{frontend}
    rate-limit sessions 600
    default_backend app
backend app
    server be1 {ADDRESS["be1"]}:{backend}
listen stats
    bind {ADDRESS["lb"]}:{stats}
    stats enable
    stats uri /stats
""")
    haproxy = subprocess.Popen(
        [shutil.which("haproxy") or "haproxy", "-f", str(config), "-db"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        scenario = tmp_path / "external.toml"
        scenario.write_text(f"""
[hosts]
lb = "lb"
be1 = "be1"
cl = "cl"
[backends]
ports = "{backend}"
hosts = ["be1"]
[proxy]
host = "lb"            # the machine it runs on: a worker there watches it
external = "{ADDRESS["lb"]}:{frontend}"
stats = "http://{ADDRESS["lb"]}:{stats}/stats"
[client]
hosts = ["cl"]
[cluster]
address = "{cluster[1]}"
[[experiment]]
name = "HTTP, new connection per request"
kind = "sweep"
frontend = "http"
keepalive = false
start = 200
step = "x2"
step_duration = "1s"
max_steps = 3
refine = 0
""")
        out = tmp_path / "report"
        result = run_tp("bench", str(scenario), "-o", str(out), timeout=180)
        log = result.stderr.decode()
        assert result.returncode == 0, log[-3000:]
        assert haproxy.poll() is None  # watched, never stopped
        assert f"the external proxy on host lb: pids [{haproxy.pid}]" in log, log[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert "from its processes on host lb" in summary["machine"]
        assert "tipping point" in summary["summary"][0][1], summary["summary"]
        steps = summary["experiments"][0]["sweep"]["steps"]
        assert all(s["proxy_cpu_pct"] is not None for s in steps), steps
        assert max(s["proxy_cpu_pct"] for s in steps) > 1
    finally:
        haproxy.terminate()
        haproxy.wait(10)


def test_plan_cluster_plans_each_machines_share_with_its_own_figures(
    cluster: tuple[subprocess.Popen[bytes], str],
) -> None:
    _workers(cluster[1])
    fits = run_tp("plan", "--connections", "40000", "--cluster", cluster[1], timeout=60)
    out = fits.stdout.decode()
    assert fits.returncode == 0, fits.stderr.decode()[-2000:]
    assert "Per machine of the cluster (4 worker(s) on 4 machine(s)):" in out
    for host in HOSTS:
        assert f"  {host}: 1 worker(s), " in out and "10,000 connections in" in out
    assert "SHORT" not in out
    short = run_tp("plan", "--connections", "80000000", "--cluster", cluster[1], timeout=60)
    assert short.returncode == 1
    assert short.stdout.decode().count("SHORT, its share needs") == len(HOSTS)
    assert "4 machine(s) of the cluster cannot hold their share" in short.stderr.decode()
