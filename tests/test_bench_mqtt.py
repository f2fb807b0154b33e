"""The bench's MQTT experiments through real HAProxy, in front of real mosquitto (two
instances) and `serve --mqtt`, plain and TLS, and their HTML report in headless
Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_ports, run_tp
from tests.test_bench import console_errors, dump_dom
from tippingpoint.bench import ScenarioError, parse_scenario, plan_holds


def _frontends() -> str:
    ports = free_ports(8)
    return f"""
[bench]
title = "MQTT bench"
open_files = 1200   # HAProxy: 500 connections per instance; clients: 1,136 per process
[proxy]
http = "127.0.0.1:{ports[0]}"
https = "127.0.0.1:{ports[1]}"
mqtt = "127.0.0.1:{ports[2]}"
mqtts = "127.0.0.1:{ports[3]}"
[client]
processes = 1
"""


def _backends(kind: str) -> str:
    http, mqtt = free_ports(2), free_ports(2)
    return f"""
[backends]
ports = "{http[0]}-{http[1]}"
mqtt = "{kind}"
mqtt_ports = "{mqtt[0]}-{mqtt[1]}"
"""


MOSQUITTO_EXPERIMENTS = """
[[experiment]]
name = "delivery, plain"
kind = "mqtt-sweep"
frontend = "mqtt"
qos = 1
sessions = 10
start = 200
step = "x2"
step_duration = "2s"
max_steps = 2
refine = 0
[[experiment]]
name = "delivery, TLS"
kind = "mqtt-sweep"
frontend = "mqtts"
sessions = 10
start = 200
step = "x2"
step_duration = "2s"
max_steps = 2
refine = 0
[[experiment]]
name = "sessions, plain"
kind = "mqtt-hold"
frontend = "mqtt"
connections = 1500
connect_rate = 1500
duration = "6s"
keepalive = "2s"
[[experiment]]
name = "sessions, TLS"
kind = "mqtt-hold"
frontend = "mqtts"
connections = 600
connect_rate = 600
duration = "5s"
keepalive = "2s"
[[experiment]]
name = "storm"
kind = "connect-storm"
frontend = "mqtt"
start = 100
step = "x2"
step_duration = "1s"
max_steps = 2
refine = 0
"""


def _run(tmp: Path, text: str) -> tuple[Path, str]:
    path = tmp / "mqtt.toml"
    path.write_text(text)
    out = tmp / "report"
    result = run_tp("bench", str(path), "-o", str(out), timeout=300)
    output = result.stderr.decode() + result.stdout.decode()
    assert result.returncode == 0, output[-3000:]
    return out, output


@pytest.fixture(scope="module")
def mosquitto_bench(tmp_path_factory: Any) -> tuple[Path, str]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    tmp = tmp_path_factory.mktemp("mqtt-bench")
    return _run(tmp, _frontends() + _backends("mosquitto") + MOSQUITTO_EXPERIMENTS)


def _summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "summary.json").read_text()))


def test_a_sweep_through_the_proxy_meets_subscribers_on_one_of_two_brokers(
    mosquitto_bench: tuple[Path, str],
) -> None:
    out, output = mosquitto_bench
    assert "bench: started pids" in output and "mosquitto" in output
    config = (out / "haproxy.cfg").read_text()
    # Sessions with a user name stick to one broker: a run's publishers and subscribers
    # meet there; both mosquitto instances stand behind the frontend.
    assert "stick on req.payload(0,0),mqtt_field_value(connect,username)" in config
    assert config.count("    server m") == 2
    assert "mqtt_is_valid" in config
    experiments = _summary(out)["experiments"]
    for exp in experiments[:2]:
        steps = exp["sweep"]["steps"]
        # A step past the knee runs again to confirm it, a disturbed one to measure it.
        assert [s["offered"] for s in steps if not s["repeat"]] == [200, 400], exp["name"]
        # Every message reached its subscriber: none lost between the two brokers.
        assert all(s["success"] == 1.0 and s["achieved"] > 150 for s in steps), steps
        assert all(s["proxy_cpu_pct"] is not None for s in steps)
        assert exp["unit"] == "messages/s" and exp["latency"] == "delivery latency"
    assert "mqtts://" in experiments[1]["description"]
    assert (out / "02-mqtt-sweep" / "step-01-400.jsonl").stat().st_size > 0


def test_sessions_are_held_through_the_proxy_plain_and_tls(
    mosquitto_bench: tuple[Path, str],
) -> None:
    out, output = mosquitto_bench
    summary = _summary(out)
    rows = dict(summary["summary"])
    for name, held in (("sessions, plain", 1500), ("sessions, TLS", 600)):
        assert re.search(
            rf"peak established {held:,} of {held:,}, .*; lost 0; failures none", rows[name]
        ), rows[name]
        exp = next(e for e in summary["experiments"] if e["name"] == name)
        assert max(exp["hold"]["established"]) == held
        assert "PINGRESP latency" in exp["report"]
        # Pings every 2 s: PINGRESP latency over time has figures once sessions are up.
        assert any(p > 0 for p in exp["hold"]["request_p99_ms"])
        cost = exp["cost"]
        assert cost is not None and cost["held"] == held and cost["rss_bytes"] > 0
    assert re.search(
        r"1,500 MQTT sessions through HAProxy cost [\d.]+ GiB of HAProxy memory",
        rows["sessions, plain"],
    )
    assert "600 MQTT sessions over TLS through HAProxy cost" in rows["sessions, TLS"]
    assert "at keepalive 2 s" in rows["sessions, TLS"]
    # 1,500 sessions with 1,200 descriptors: more clients and HAProxy instances, and
    # (mosquitto cannot share a port) the scenario's two brokers.
    assert "started 0 more backend process(es) and" in output
    monitor = [json.loads(x) for x in (out / "monitor.jsonl").read_text().splitlines()]
    held = [m for m in monitor if m.get("step") == "hold 2"]
    assert held and max(m["mosquitto"]["clients_connected"] for m in held) >= 1500


def test_a_connect_storm_steps_the_rate_of_new_sessions(
    mosquitto_bench: tuple[Path, str],
) -> None:
    out, _ = mosquitto_bench
    storm = _summary(out)["experiments"][4]
    steps = storm["sweep"]["steps"]
    # A step judged past the knee runs again to confirm it, a disturbed one to measure it.
    assert [s["offered"] for s in steps if not s["repeat"]] == [100, 200]
    assert all(s["repeat"] in ("confirm", "disturbed") for s in steps if s["repeat"]), steps
    assert all(s["success"] == 1.0 and s["p99_ms"] > 0 for s in steps), steps
    assert storm["unit"] == "new sessions/s"
    records = [
        json.loads(x)
        for x in (out / "05-connect-storm" / "step-01-200.jsonl").read_text().splitlines()
    ]
    assert (
        max(r["established"] for r in records if r["type"] == "hold" and not r.get("final")) == 200
    )


def test_the_mqtt_report_renders_in_chromium(mosquitto_bench: tuple[Path, str]) -> None:
    out, _ = mosquitto_bench
    page = (out / "index.html").as_uri()
    dom = dump_dom(page)
    # 3 charts per MQTT sweep or storm, 2 per hold (sessions, PINGRESP) and 4 for the
    # machine.
    charts = re.search(r'data-charts="(\d+)"', dom.stdout)
    assert charts is not None and int(charts.group(1)) == 3 * 3 + 2 * 2 + 4, dom.stdout[:500]
    assert not console_errors(dom), console_errors(dom)
    for text in (
        "delivery latency against offered rate",
        "HAProxy CPU per 1,000 messages/s",
        "sessions established over time",
        "PINGRESP latency over time",
        "open latency (tcp + mqtt) against offered rate",
        "What each connection costs HAProxy",
    ):
        assert text in dom.stdout, text


def test_serve_answers_the_echo_through_tls(tmp_path: Path) -> None:
    text = (
        _frontends()
        + _backends("serve")
        + """
[[experiment]]
name = "echo, TLS"
kind = "mqtt-sweep"
frontend = "mqtts"
qos = 1
sessions = 10
start = 300
step = "x2"
step_duration = "2s"
max_steps = 2
refine = 0
"""
    )
    out, _ = _run(tmp_path, text)
    exp = _summary(out)["experiments"][0]
    assert exp["latency"] == "echo latency"
    steps = exp["sweep"]["steps"]
    assert [s["offered"] for s in steps] == [300, 600]
    assert all(s["success"] == 1.0 for s in steps), steps
    assert (
        "stick on req.payload(0,0),mqtt_field_value(connect,client_identifier)"
        in (out / "haproxy.cfg").read_text()
    )
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out / "proxy") not in ps


def test_mqtt_scenarios_that_cannot_run_say_why() -> None:
    base = '[backends]\nmqtt = "mosquitto"\nmqtt_ports = "21883-21884"\n'
    cases = {
        '[[experiment]]\nkind = "mqtt-sweep"\nuntil = "echo"': "needs serve's ping/pong",
        '[[experiment]]\nkind = "mqtt-hold"\nfrontend = "https"': "goes through mqtt or mqtts",
        '[[experiment]]\nkind = "mqtt-hold"\nkeepalive = true': "MQTT's keepalive is seconds",
        '[[experiment]]\nkind = "mqtt-hold"\nrequest_every = "5s"': "ping once per keepalive",
        '[[experiment]]\nkind = "mqtt-sweep"\nqos = 3': "qos: 0, 1 or 2",
    }
    for experiment, words in cases.items():
        with pytest.raises(ScenarioError, match=re.escape(words)):
            parse_scenario(base + experiment)
    with pytest.raises(ScenarioError, match="consecutive ports"):
        parse_scenario(
            '[backends]\nmqtt = "mosquitto"\nmqtt_ports = "21883,21890"\n'
            '[[experiment]]\nkind = "mqtt-hold"'
        )
    with pytest.raises(ScenarioError, match='use "serve"'):
        parse_scenario('[backends]\nmqtt = "emqx"\n[[experiment]]\nkind = "mqtt-hold"')


def test_a_hold_needing_more_brokers_than_ports_is_refused() -> None:
    scenario = parse_scenario(
        '[backends]\nmqtt = "mosquitto"\nmqtt_ports = "21883-21884"\n'
        '[[experiment]]\nname = "big"\nkind = "mqtt-hold"\nconnections = 3000\n'
        'connect_rate = 3000\nduration = "5s"'
    )
    with pytest.raises(
        ScenarioError, match=r'3 mosquitto instances .* give 3 ports, e.g. "21883-21885"'
    ):
        plan_holds(scenario, 1200, (32768, 60999), None)
    # serve shares its ports: the same hold fits with more processes.
    served = parse_scenario(
        '[[experiment]]\nname = "big"\nkind = "mqtt-hold"\nconnections = 3000\n'
        'connect_rate = 3000\nduration = "5s"'
    )
    plan = plan_holds(served, 1200, (32768, 60999), None)[0]
    assert plan.server_processes == 3 and plan.proxy_instances == 8
