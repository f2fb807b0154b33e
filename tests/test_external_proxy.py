"""`[proxy] external`: the user's own HAProxy under test, started by no one but its owner.

The test starts HAProxy itself from a configuration written as a user writes one (a
frontend, a backend, a stats page), and the bench reads its counters from the stats CSV,
starting and stopping nothing of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_ports, run_tp
from tippingpoint.bench import ScenarioError, parse_scenario
from tippingpoint.proxy.external import parse_csv, parse_prometheus

USER_CONFIG = """
global
    maxconn 4000

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend www
    bind 127.0.0.1:{frontend}
    rate-limit sessions 600
    default_backend app

backend app
    server app1 127.0.0.1:{backend}

listen stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
"""


SWEEP = """[[experiment]]
name = "HTTP, new connection per request"
kind = "sweep"
frontend = "http"
keepalive = false
start = 200               # 200, 400, 800/s: the knee at HAProxy's 600 sessions a second
step = "x2"
step_duration = "1s"
max_steps = 3
refine = 0
"""


def _frontend_counters(stats: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{stats}/stats;csv", timeout=5) as answer:
        return parse_csv(answer.read().decode())


def test_the_bench_measures_an_external_haproxy_through_its_stats_csv(tmp_path: Path) -> None:
    backend, frontend, stats = free_ports(3)
    config = tmp_path / "haproxy.cfg"
    config.write_text(USER_CONFIG.format(frontend=frontend, backend=backend, stats=stats))
    haproxy = subprocess.Popen(
        [shutil.which("haproxy") or "haproxy", "-f", str(config), "-db"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _frontend_counters(stats)
                break
            except OSError:
                assert time.monotonic() < deadline and haproxy.poll() is None
                time.sleep(0.1)
        scenario = tmp_path / "external.toml"
        scenario.write_text(f"""
[bench]
title = "my own HAProxy"
[backends]
ports = "{backend}"
[proxy]
external = "127.0.0.1:{frontend}"
stats = "http://127.0.0.1:{stats}/stats"
{SWEEP}""")
        out = tmp_path / "report"
        result = run_tp("bench", str(scenario), "-o", str(out), timeout=180)
        log = result.stderr.decode()
        assert result.returncode == 0, log[-3000:]
        # Started and stopped by no one but the test.
        assert haproxy.poll() is None
        assert f"GET http://127.0.0.1:{frontend}/ping" in log
        summary = json.loads((out / "summary.json").read_text())
        assert "tipping point" in summary["summary"][0][1], summary["summary"]
        assert "proxy under test is external" in summary["machine"]
        assert "its CPU and memory are not seen" in summary["machine"]
        assert all(row["role"] != "proxy" for row in summary["placement"])
        assert "external" in (out / "haproxy.cfg").read_text()
        samples = [json.loads(s) for s in (out / "monitor.jsonl").read_text().splitlines()]
        totals = [s["haproxy"]["CumConns"] for s in samples if "haproxy" in s]
        assert len(totals) >= 3 and totals == sorted(totals) and totals[-1] > totals[0]
        assert max(s["haproxy"]["CurrConns"] for s in samples if "haproxy" in s) >= 0
        # What the bench read is what HAProxy itself counts: every session it took.
        sent = sum(
            json.loads(line).get("done", 0)
            for step in (out / "01-sweep").glob("step-*.jsonl")
            for line in step.read_text().splitlines()
            if '"type": "interval"' in line or '"type":"interval"' in line
        )
        final = _frontend_counters(stats)["CumConns"]
        assert totals[-1] <= final and final >= sent > 0
    finally:
        haproxy.terminate()
        haproxy.wait(10)


def test_an_external_proxy_whose_stats_do_not_answer_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    backend, frontend, stats = free_ports(3)
    scenario = tmp_path / "external.toml"
    scenario.write_text(f"""
[backends]
ports = "{backend}"
[proxy]
external = "127.0.0.1:{frontend}"
stats = "http://127.0.0.1:{stats}/stats"
[[experiment]]
kind = "attack"
rate = 10
duration = "1s"
""")
    result = run_tp("bench", str(scenario), "-o", str(tmp_path / "out"), timeout=60)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0
    assert "proxy.external: cannot read" in lines[-1] and str(stats) in lines[-1], lines[-3:]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[experiment]]\nkind = "tls-cost"\nrates = [100]\n', "proxy.external: 'experiment 2'"),
        ('[[experiment]]\nkind = "sweep"\nfrontend = "https"\n', "proxy.https:"),
    ],
)
def test_what_an_external_proxy_cannot_do_is_refused(extra: str, message: str) -> None:
    text = f"""
[proxy]
external = "127.0.0.1:18080"
[[experiment]]
kind = "attack"
{extra}"""
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text)
    assert message in str(caught.value), str(caught.value)


def test_haproxys_prometheus_exporter_is_read_as_its_stats_csv() -> None:
    text = """# HELP haproxy_frontend_current_sessions Number of current sessions.
haproxy_frontend_current_sessions{proxy="www"} 12
haproxy_frontend_current_sessions{proxy="api"} 3
haproxy_frontend_sessions_total{proxy="www"} 1000
haproxy_frontend_http_requests_total{proxy="www"} 2500
haproxy_backend_current_sessions{proxy="app"} 99
"""
    counters = parse_prometheus(text)
    assert counters["CurrConns"] == 15 and counters["CumConns"] == 1000
    assert counters["CumReq"] == 2500


def test_the_bench_runs_a_users_own_haproxy_configuration_as_written(tmp_path: Path) -> None:
    backend, frontend, stats = free_ports(3)
    config = tmp_path / "my-haproxy.cfg"
    config.write_text(USER_CONFIG.format(frontend=frontend, backend=backend, stats=stats))
    scenario = tmp_path / "own.toml"
    scenario.write_text(f"""
[backends]
ports = "{backend}"
[proxy]
config = "{config}"      # its frontend (bind 127.0.0.1:{frontend}) is the load's target
cpus = "1"
{SWEEP}""")
    out = tmp_path / "report"
    result = run_tp("bench", str(scenario), "-o", str(out), timeout=180)
    log = result.stderr.decode()
    assert result.returncode == 0, log[-3000:]
    assert f"GET http://127.0.0.1:{frontend}/ping" in log
    written = (out / "haproxy.cfg").read_text()
    assert "rate-limit sessions 600" in written and "stats socket" in written
    assert "listen stats" in written  # as the user wrote it
    summary = json.loads((out / "summary.json").read_text())
    assert "tipping point" in summary["summary"][0][1], summary["summary"]
    proxy = next(r for r in summary["placement"] if r["role"] == "proxy")
    assert proxy["cpus_seen"] == "1"
    steps = summary["experiments"][0]["sweep"]["steps"]
    assert all(s["proxy_cpu_pct"] is not None for s in steps)
    from tippingpoint.listeners import listeners

    assert listeners("127.0.0.1", [frontend, stats]) == []  # stopped with the bench


def test_a_users_configuration_haproxy_refuses_is_one_line(tmp_path: Path) -> None:
    backend, frontend = free_ports(2)
    config = tmp_path / "broken.cfg"
    config.write_text(f"frontend www\n    bind 127.0.0.1:{frontend}\n    use_backend nowhere\n")
    scenario = tmp_path / "own.toml"
    scenario.write_text(f"""
[backends]
ports = "{backend}"
[proxy]
config = "{config}"
[[experiment]]
kind = "attack"
rate = 10
duration = "1s"
""")
    result = run_tp("bench", str(scenario), "-o", str(tmp_path / "out"), timeout=60)
    last = result.stderr.decode().strip().splitlines()[-1]
    assert result.returncode != 0
    assert "HAProxy refused the configuration" in last and "nowhere" in last, last
    threads = tmp_path / "threads.toml"
    threads.write_text(scenario.read_text().replace("[proxy]", "[proxy]\nthreads = 4"))
    with pytest.raises(ScenarioError, match=r"proxy\.threads: your configuration"):
        parse_scenario(threads.read_text())
