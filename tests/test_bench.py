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


def scenario(tmp: Path) -> Path:
    ports = free_ports(4)
    text = f"""
[bench]
title = "small bench"
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
name = "tls long requests"
kind = "attack"
frontend = "https"
rate = 100
duration = "2s"
headers = ["sleep: 300", "times: 1"]
"""
    path = tmp / "small.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "report"
    result = run_tp("bench", str(scenario(tmp)), "-o", str(out), timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"report: " in result.stdout
    return out


def test_bench_writes_the_report_and_cleans_up(report_dir: Path) -> None:
    names = {p.name for p in report_dir.iterdir()}
    assert {
        "index.html",
        "haproxy.cfg",
        "monitor.jsonl",
        "summary.json",
        "serve.log",
        "01-sweep",
        "02-attack",
        "tls",
    } <= names
    summary = json.loads((report_dir / "summary.json").read_text())
    assert [row[0] for row in summary["summary"]] == ["http sweep", "tls long requests"]
    sweep = summary["experiments"][0]["sweep"]
    assert [s["offered"] for s in sweep["steps"]] == [200, 400]
    assert all(s["success"] == 1.0 for s in sweep["steps"])
    assert "200 requests, success 100.00%" in summary["summary"][1][1]
    monitor = [json.loads(x) for x in (report_dir / "monitor.jsonl").read_text().splitlines()]
    assert any(m["roles"]["proxy"]["processes"] >= 1 for m in monitor)
    assert any(m["roles"]["backends"]["processes"] >= 2 for m in monitor)  # supervisor + worker
    # Nothing left running: no HAProxy with this report's config, no serve on its ports.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(report_dir / "proxy") not in ps


def test_the_html_report_renders_in_chromium(report_dir: Path) -> None:
    page = (report_dir / "index.html").as_uri()
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
    # 2 charts per experiment and 4 for the machine, all drawn by plotly.
    charts = re.search(r'data-charts="(\d+)"', dom.stdout)
    assert charts is not None and int(charts.group(1)) == 8, dom.stdout[:500]
    assert dom.stdout.count('class="main-svg"') >= 8
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "rror" in line or "Uncaught" in line], console
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


def test_default_scenario_parses_and_bad_ones_say_why(tmp_path: Path) -> None:
    parsed = parse_scenario(DEFAULT_SCENARIO)
    assert [e.kind for e in parsed.experiments] == ["sweep", "sweep", "sweep", "attack"]
    assert parsed.experiments[2].keepalive is False
    for text, message in (
        ("[bench", "not valid TOML"),
        ("", "no [[experiment]]"),
        ('[[experiment]]\nkind = "soak"', "use sweep or attack"),
        ('[[experiment]]\nstep = "x0"', "bad --step"),
    ):
        with pytest.raises(ScenarioError, match=re.escape(message)):
            parse_scenario(text)
    for example in Path(__file__).parent.parent.joinpath("examples").glob("*.toml"):
        parse_scenario(example.read_text())
    bad = tmp_path / "bad.toml"
    bad.write_text("[[experiment]]\nkind = 'nope'\n")
    result = run_tp("bench", str(bad))
    assert result.returncode == 2 and b"use sweep or attack" in result.stderr
