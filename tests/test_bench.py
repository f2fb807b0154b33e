"""`tippingpoint bench`: the whole bench on a small scenario, and its HTML report in
headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import free_ports, run_tp
from tippingpoint.bench import DEFAULT_SCENARIO, ScenarioError, parse_scenario

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def dump_dom(page: str) -> subprocess.CompletedProcess[str]:
    """The page as headless Chromium renders it, its console on stderr."""
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=15000",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                page,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom


def console_errors(dom: subprocess.CompletedProcess[str]) -> list[str]:
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    return [line for line in console if "rror" in line or "Uncaught" in line]


def scenario(tmp: Path) -> Path:
    ports = free_ports(4)
    text = f"""
[bench]
title = "small bench"
open_files = 1200   # HAProxy: 500 connections per instance; clients: 1,136 per process
[backends]
ports = "{ports[0]}-{ports[1]}"
processes = 1
[proxy]
http = "127.0.0.1:{ports[2]}"
https = "127.0.0.1:{ports[3]}"
[client]
processes = 1
[[experiment]]
name = "http sweep"
kind = "sweep"
frontend = "http"
start = 200
step = "x2"
step_duration = "1s"
max_steps = 2
refine = 0
[[experiment]]
name = "http closed loop"
kind = "sweep"
frontend = "http"
closed = true
start = 2
step_duration = "1s"
max_steps = 2
refine = 0
[[experiment]]
name = "tls long requests"
kind = "attack"
frontend = "https"
rate = 100
duration = "2s"
headers = ["sleep: 300", "times: 1"]
[[experiment]]
name = "held connections"
kind = "hold"
frontend = "http"
connections = 3000
connect_rate = 3000
duration = "5s"
request_every = "2s"
[[experiment]]
name = "what tls costs"
kind = "tls-cost"
rates = [200, 400]
step_duration = "2s"
"""
    path = tmp / "small.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "report"
    result = run_tp("bench", str(scenario(tmp)), "-o", str(out), timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"report: " in result.stdout
    return out, result.stderr.decode() + result.stdout.decode()


@pytest.fixture(scope="module")
def report_dir(bench_run: tuple[Path, str]) -> Path:
    return bench_run[0]


def test_bench_writes_the_report_and_cleans_up(report_dir: Path) -> None:
    names = {p.name for p in report_dir.iterdir()}
    assert {
        "index.html",
        "haproxy.cfg",
        "monitor.jsonl",
        "summary.json",
        "serve.log",
        "01-sweep",
        "02-sweep",
        "03-attack",
        "04-hold",
        "05-tls-cost",
        "tls",
    } <= names
    summary = json.loads((report_dir / "summary.json").read_text())
    assert [row[0] for row in summary["summary"]] == [
        "http sweep",
        "http closed loop",
        "tls long requests",
        "held connections",
        "what tls costs",
    ]
    # Each entry says what the report draws it by; a step's length where it has steps.
    heads = [
        (e["shape"], e["frontend"], e["tls"], e["step_duration"]) for e in summary["experiments"]
    ]
    assert heads == [
        ("sweep", "http", False, 1.0),
        ("sweep", "http", False, 1.0),
        ("attack", "https", True, None),
        ("hold", "http", False, None),
        ("tls-cost", "http", False, 2.0),
    ]
    sweep = summary["experiments"][0]["sweep"]
    # A step judged past the knee runs again to confirm it, a disturbed one to measure
    # it: on a busy machine 400/s may run up to three times, each run marked.
    firsts = [s["offered"] for s in sweep["steps"] if not s["repeat"]]
    assert firsts == [200, 400], sweep["steps"]
    assert all(s["repeat"] in ("confirm", "disturbed") for s in sweep["steps"][2:])
    assert all(s["success"] == 1.0 for s in sweep["steps"])
    closed = summary["experiments"][1]["sweep"]
    assert closed["model"] == "closed"
    firsts = [s["connections"] for s in closed["steps"] if not s["repeat"]]
    if closed["too_busy"]:  # another load took the cores (a busy machine): said, not measured
        assert "too busy to measure" in closed["reason"] and firsts[0] == 2, closed
    else:
        assert firsts == [2, 4], closed["steps"]  # x2 by default
    assert all(s["success"] == 1.0 and s["achieved"] > 0 for s in closed["steps"])
    assert "200 requests, success 100.00%" in summary["summary"][2][1]
    monitor = [json.loads(x) for x in (report_dir / "monitor.jsonl").read_text().splitlines()]
    assert any(m["roles"]["proxy"]["processes"] >= 1 for m in monitor)
    assert any(m["roles"]["backends"]["processes"] >= 2 for m in monitor)  # supervisor + worker
    # Nothing left running: no HAProxy with this report's config, no serve on its ports.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(report_dir / "proxy") not in ps
    assert str(report_dir / "04-hold") not in ps


def test_a_hold_gets_the_processes_and_instances_its_plan_needs(
    bench_run: tuple[Path, str],
) -> None:
    report_dir, output = bench_run
    # 3,000 connections with 1,200 descriptors per process: 3 clients and 3 backends
    # (1,136 each), 8 HAProxy instances (500 connections each, planned 85 % full).
    assert "8 HAProxy instance(s)" in output and "3 client process(es)" in output
    assert "started 2 more backend process(es) and 7 more HAProxy instance(s)" in output
    summary = json.loads((report_dir / "summary.json").read_text())
    row = summary["summary"][3][1]
    # The row: what the connections cost HAProxy, then the hold's own result.
    assert re.match(
        r"3,000 connections through HAProxy cost [\d.]+ GiB of HAProxy memory .* and "
        r"[\d.]+ % of a core with a request every 2 s each; peak established 3,000 of 3,000, "
        r"all established after \d s, planned 1 s at 3,000/s; lost 0; failures none",
        row,
    ), row
    hold = summary["experiments"][3]
    assert max(hold["hold"]["established"]) == 3000
    assert re.search(r"requests [\d,]+ \(200: [\d,]+\)", hold["report"])
    stream = (report_dir / "04-hold" / "hold.jsonl").read_text()
    header, *records = [json.loads(x) for x in stream.splitlines()]
    assert header["type"] == "hold-start" and header["processes"] == 3
    assert {r["process"] for r in records} == {0, 1, 2}
    monitor = [json.loads(x) for x in (report_dir / "monitor.jsonl").read_text().splitlines()]
    held = [m for m in monitor if m.get("step") == "hold 3"]
    # The hold's own processes are started before its sampling starts: in every sample.
    assert held and all(m["roles"]["proxy (hold)"]["processes"] == 7 for m in held)
    assert max(m["tcp_established"] for m in held) >= 6000  # both ends of every connection


def test_tls_cost_measures_each_protocol_at_each_rate(report_dir: Path) -> None:
    summary = json.loads((report_dir / "summary.json").read_text())
    cost = summary["experiments"][4]["tls_cost"]
    ways = {w["key"]: w["steps"] for w in cost["protocols"]}
    assert [s["offered"] for s in ways["http"]] == [200, 400]
    assert [s["offered"] for s in ways["tls"]] == [200, 400]
    for steps in ways.values():
        for step in steps:
            assert step["success"] == 1.0 and step["proxy_cpu_pct"] is not None
    # A new TLS connection is a handshake for HAProxy: a request on one costs more
    # HAProxy CPU than one on a kept connection, by hundreds of µs with ECDSA.
    assert cost["handshake_us"] is not None and cost["handshake_us"] > 100, cost
    assert "Each new TLS connection costs" in summary["summary"][4][1]
    for way in ("http", "tls", "tls-new"):
        assert (report_dir / "05-tls-cost" / way / "step-00-200.jsonl").stat().st_size > 0


def test_the_html_report_renders_in_chromium(report_dir: Path) -> None:
    page = (report_dir / "index.html").as_uri()
    dom = dump_dom(page)
    # 2 charts per sweep, attack or tls-cost, 2 per hold (established, request latency
    # over time) and 4 for the machine, all drawn by plotly.
    charts = re.search(r'data-charts="(\d+)"', dom.stdout)
    assert charts is not None and int(charts.group(1)) == 14, dom.stdout[:500]
    assert dom.stdout.count('class="main-svg"') >= 14
    assert "held connections: request latency over time" in dom.stdout
    assert "throughput against connections" in dom.stdout  # the closed sweep's chart
    assert "HAProxy CPU against offered rate" in dom.stdout  # the tls-cost chart
    assert "TLS, new connection per request" in dom.stdout  # one of its lines
    assert not console_errors(dom), console_errors(dom)
    assert "Tipping point" in dom.stdout or "No tipping point" in dom.stdout
    shot = report_dir / "screenshot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=15000",
                "--window-size=1280,3000",
                f"--screenshot={shot}",
                page,
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
    assert shot.stat().st_size > 50_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(report_dir / "index.html") > 1_000_000  # plotly.js is inside


def test_a_scenario_s_typos_are_refused_with_their_line_and_the_nearest_key() -> None:
    """An unknown key or table is a typo until proved otherwise: silently ignored, it ran
    another bench than the one written."""
    sweep = '[[experiment]]\nkind = "sweep"\n'
    for text, message in (
        (sweep + "rat = 50", "line 3: experiment[0]: unknown key rat: did you mean rate?"),
        (
            "[proxy]\nthread = 1\n" + sweep,
            "line 2: proxy: unknown key thread: did you mean threads?",
        ),
        ("[clinet]\nprocesses = 2\n" + sweep, "line 1: unknown table clinet: did you mean client?"),
        (
            sweep + 'name = "a"\n[[experiment]]\nkind = "attack"\nnmae = "b"',
            "line 6: experiment[1]: unknown key nmae: did you mean name?",
        ),
        ('[[experiment]]\nname = "x"\nrate = 5', 'line 1: experiment[0] ("x"): kind is required'),
        (
            sweep + 'name = "a"\n' + sweep + 'name = "a"',
            "line 4: experiment[1] (\"a\"): the name 'a' is taken by experiment[0]",
        ),
        ("[backends]\nprocesses = 'one'\n" + sweep, "line 2: backends.processes: a whole number"),
        (sweep + "max_steps = 2.5", "line 3: experiment[0].max_steps: a whole number >= 1"),
        (sweep + "refine = true", "line 3: experiment[0].refine: a whole number >= 0, got True"),
        ("title = 'x'\n" + sweep, "line 1: unknown key title: it belongs in [bench]"),
        # A key another kind reads: a hold would ignore a rate, and run another hold.
        (
            '[[experiment]]\nkind = "hold"\nconnections = 10\nrate = 5',
            "line 4: experiment[0]: kind hold does not read rate (its keys: frontend, timeout, "
            "method, path",
        ),
        (
            '[[experiment]]\nkind = "mqtt-hold"\nqos = 1',
            "line 3: experiment[0]: kind mqtt-hold does not read qos",
        ),
    ):
        with pytest.raises(ScenarioError) as caught:
            parse_scenario(text)
        assert str(caught.value).startswith(message), (str(caught.value), message)
    # The default scenario and every example use known keys only (the check runs first).
    assert parse_scenario(DEFAULT_SCENARIO).experiments
    for example in (Path(__file__).parent.parent / "examples").glob("*.toml"):
        assert parse_scenario(example.read_text()).experiments, example


SWEEP = "\n[[experiment]]\nkind = 'sweep'"


def test_default_scenario_parses_and_bad_ones_say_why(tmp_path: Path) -> None:
    parsed = parse_scenario(DEFAULT_SCENARIO)
    kinds = [e.kind for e in parsed.experiments]
    assert kinds == [
        "sweep",
        "sweep",
        "sweep",
        "sweep",
        "tls-cost",
        "attack",
        "hold",
        "mqtt-sweep",
        "connect-storm",
        "mqtt-hold",
    ]
    assert parsed.mqtt_backend == "serve" and parsed.listeners == ("http", "mqtt")
    assert parsed.experiments[-1].session.keepalive == 10
    assert parsed.experiments[1].spec.steps.closed and parsed.experiments[1].spec.steps.start == 8
    assert parsed.experiments[3].request.keepalive is False
    for text, message in (
        ("[bench", "not valid TOML"),
        ("", "no [[experiment]]"),
        ('[[experiment]]\nkind = "soak"', "use sweep, attack, hold, tls-cost, mqtt-sweep"),
        ('[[experiment]]\nkind = "tls-cost"\nrates = []', "a list of offered rates"),
        ('[[experiment]]\nkind = "sweep"\nstep = "x0"', "bad --step"),
        ('[proxy]\nhttp_reuse = "sometimes"' + SWEEP, "proxy.http_reuse"),
        ('[[experiment]]\nkind = "attack"\nclosed = true', "kind attack does not read closed"),
        (SWEEP + "\nclosed = true\nstart = 0.5", "whole number of connections"),
        ("[[matrix]]\nthreads = 2" + SWEEP, "each setup needs a name"),
        ("[[matrix]]\nname = 'a'\nport = 1" + SWEEP, "matrix[0].port: a setup sets"),
        ("[[matrix]]\nname = 'a'\ncert = 'dsa'" + SWEEP, "matrix[0].cert"),
        ("[[matrix]]\nname = 'a'\n[[matrix]]\nname = 'a'" + SWEEP, "same name"),
    ):
        with pytest.raises(ScenarioError, match=re.escape(message)):
            parse_scenario(text)
    examples = Path(__file__).parent.parent / "examples"
    for example in examples.glob("*.toml"):
        parse_scenario(example.read_text())
    cores = parse_scenario((examples / "cores.toml").read_text())
    assert [(s.name, s.threads, s.cpus) for s in cores.setups] == [
        ("1 thread, CPU 1", 1, (1,)),
        ("2 threads, CPUs 0-1", 2, (0, 1)),
    ]
    assert cores.setups[1].apply(cores).proxy_threads == 2
    printed = run_tp("bench", "--print-scenario")
    assert printed.returncode == 0 and printed.stdout.decode() == DEFAULT_SCENARIO
    assert parse_scenario(printed.stdout.decode()) == parsed
    bad = tmp_path / "bad.toml"
    bad.write_text("[[experiment]]\nkind = 'nope'\n")
    result = run_tp("bench", str(bad))
    assert result.returncode == 2 and b"use sweep, attack, hold, tls-cost" in result.stderr
    ramp = tmp_path / "ramp.toml"
    ramp.write_text(
        "[[experiment]]\nkind = 'hold'\nconnections = 100000\nconnect_rate = 1000\n"
        "duration = '60s'\n"
    )
    result = run_tp("bench", str(ramp), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert b"100,000 connections at 1,000/s take 100 s to open" in result.stderr
    huge = tmp_path / "huge.toml"
    huge.write_text(
        "[[experiment]]\nkind = 'hold'\nconnections = 5000000\nconnect_rate = 100000\n"
        "duration = '600s'\n"
    )
    result = run_tp("bench", str(huge), "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and b"this plan cannot fit" in result.stderr
    assert b"GiB are available" in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything started


def matrix_scenario(tmp: Path) -> Path:
    ports = free_ports(4)
    text = f"""
[bench]
title = "two setups"
[backends]
ports = "{ports[0]}-{ports[1]}"
processes = 1
[proxy]
http = "127.0.0.1:{ports[2]}"
https = "127.0.0.1:{ports[3]}"
[[matrix]]
name = "ECDSA, 1 thread"
cert = "ecdsa"
[[matrix]]
name = "RSA, 2 threads"
cert = "rsa"
threads = 2
[[experiment]]
name = "http sweep"
kind = "sweep"
frontend = "http"
start = 200
step = "x2"
step_duration = "1s"
max_steps = 2
refine = 0
[[experiment]]
name = "what tls costs"
kind = "tls-cost"
rates = [200]
step_duration = "2s"
"""
    path = tmp / "matrix.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("matrix")
    out = tmp / "report"
    result = run_tp("bench", str(matrix_scenario(tmp)), "-o", str(out), timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return out


def test_a_matrix_runs_every_experiment_on_every_setup(matrix_dir: Path) -> None:
    summary = json.loads((matrix_dir / "summary.json").read_text())
    assert summary["setups"] == ["ECDSA, 1 thread", "RSA, 2 threads"]
    assert [row[0] for row in summary["summary"]] == [
        "http sweep [ECDSA, 1 thread]",
        "what tls costs [ECDSA, 1 thread]",
        "http sweep [RSA, 2 threads]",
        "what tls costs [RSA, 2 threads]",
    ]
    assert [e["id"] for e in summary["experiments"]] == [0, 1, 2, 3]
    # Each setup ran on its own HAProxy: its configuration says so.
    config = {n: (matrix_dir / f"setup-{n}" / "haproxy.cfg").read_text() for n in (1, 2)}
    assert "nbthread 1" in config[1] and "nbthread 2" in config[2]
    key = (matrix_dir / "setup-2" / "tls" / "key.pem").read_bytes()
    assert b"PRIVATE KEY" in key and len(key) > 1500  # RSA 2048, not a P-256 key
    for exp in summary["experiments"]:
        if exp["kind"] == "tls-cost":
            assert exp["tls_cost"]["handshake_us"] is not None


def test_a_matrix_report_overlays_the_setups_in_chromium(matrix_dir: Path) -> None:
    page = (matrix_dir / "index.html").as_uri()
    dom = dump_dom(page)
    # 2 setups x (2 sweep + 2 tls-cost charts), 2 overlays, 4 for the machine.
    charts = re.search(r'data-charts="(\d+)"', dom.stdout)
    assert charts is not None and int(charts.group(1)) == 14, dom.stdout[:500]
    assert "Setups compared" in dom.stdout
    assert "a line per setup" in dom.stdout and "RSA, 2 threads p99" in dom.stdout
    assert "µs per handshake" in dom.stdout  # the comparison table's TLS cost column
    assert not console_errors(dom), console_errors(dom)
