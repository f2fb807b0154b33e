"""`--web`: the live page in headless Chromium (Playwright driving Debian's `chromium`)
during a real bench, `/metrics` read by prometheus_client's own parser during a real
attack, and what the server refuses: another address without --web-public, a request
without its token, a path outside the report directory."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import free_ports, tippingpoint_cmd
from tests.test_bench import CHROMIUM_FLAGS
from tippingpoint.cli.base import cli
from tippingpoint.cli.web import parse_address
from tippingpoint.hdr import Histogram
from tippingpoint.stream import Interval, decode
from tippingpoint.web.feed import LiveFeed
from tippingpoint.web.metrics import METRICS
from tippingpoint.web.server import THREAD_NAME, WebServer

ROOT = Path(__file__).resolve().parent.parent


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """A request line sent as written (no client normalises its path)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def drain(proc: subprocess.Popen[str]) -> list[str]:
    """The rest of ``proc``'s stderr, read in a thread (a full pipe would stop it)."""
    lines: list[str] = []
    assert proc.stderr is not None
    stream = proc.stderr
    threading.Thread(target=lambda: lines.extend(stream), daemon=True).start()
    return lines


def wait_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> re.Match[str]:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r}: {''.join(seen)[-2000:]}")


# --- refused ------------------------------------------------------------------------


def test_addresses_are_parsed_and_another_address_needs_the_flag() -> None:
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_address("8089") == ("127.0.0.1", 8089)
    assert parse_address(":8089") == ("127.0.0.1", 8089)
    assert parse_address("[::1]:8089") == ("::1", 8089)
    assert parse_address("127.0.0.5") == ("127.0.0.5", 0)
    with pytest.raises(ValueError, match="put it before --web"):
        parse_address("scenario.toml")
    result = CliRunner().invoke(
        cli,
        ["attack", "http://127.0.0.1:9/", "--duration", "1s", "--web", "0.0.0.0:0"],
    )
    assert result.exit_code == 2
    assert "not a loopback address" in result.output and "--web-public" in result.output
    assert result.output.count("\n") == 1, result.output


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[WebServer, Path]]:
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("<p>the final report</p>")
    (tmp_path / "secret.txt").write_text("not to be served")
    (report / "out").symlink_to(tmp_path / "secret.txt")
    feed = LiveFeed("t", "attack", "host")
    web = WebServer(feed, "127.0.0.1", 0, "s3cret", report)
    web.start()
    yield web, tmp_path
    feed.end("finished")
    web.stop()


def test_every_request_needs_the_token_when_one_is_set(
    server: tuple[WebServer, Path],
) -> None:
    web, _ = server
    base = f"http://127.0.0.1:{web.port}"
    for path in ("/", "/metrics", "/events", "/report/index.html"):
        status, body = get(base + path)
        assert status == 401 and "token" in body, (path, status)
        assert get(base + path + "?token=wrong")[0] == 401
    assert get(base + "/metrics?token=s3cret")[0] == 200
    assert get(base + "/metrics", {"Authorization": "Bearer s3cret"})[0] == 200
    status, body = get(base + "/report/index.html?token=s3cret")
    assert status == 200 and "the final report" in body
    assert web.url == f"http://127.0.0.1:{web.port}/?token=s3cret"


def test_only_the_report_directory_is_served(server: tuple[WebServer, Path]) -> None:
    web, tmp = server
    for path in (
        "/report/../secret.txt",
        "/report/%2e%2e/secret.txt",
        "/report/..%2fsecret.txt",
        "/report/out",  # a link out of the directory
        "/report/" + str(tmp / "secret.txt"),
        "/report/%2F" + str(tmp / "secret.txt").lstrip("/"),
        "/../secret.txt",
    ):
        status, body = raw_get(web.port, path + "?token=s3cret")
        assert status in (403, 404), (path, status)
        assert b"not to be served" not in body, path
    assert raw_get(web.port, "/report/out?token=s3cret")[0] == 403  # the check, not a 404
    assert raw_get(web.port, "/report/?token=s3cret")[0] == 200


# --- /metrics during a real attack --------------------------------------------------


def test_metrics_parse_during_a_run_and_count_exactly(serve: Any, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    server = serve()
    port = free_ports(1)[0]
    results = tmp_path / "results.jsonl"
    args = ["attack", server.url + "/", "--rate", "500", "--duration", "3s", "-o", str(results)]
    proc = subprocess.Popen(
        tippingpoint_cmd(*args, "--web", f"127.0.0.1:{port}", "--web-linger", "30s"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = wait_line(proc, r"live page (http://\S+)")
        drain(proc)
        metrics = first.group(1).rstrip("/") + "/metrics"
        during: list[float] = []
        ended = 0.0
        deadline = time.monotonic() + 40
        while not ended and time.monotonic() < deadline:
            time.sleep(0.7)
            status, text = get(metrics)
            assert status == 200
            families = {f.name: f for f in text_string_to_metric_families(text)}
            sent = families.get("tippingpoint_sent")  # the parser drops _total
            if sent is not None:
                during.append(sent.samples[0].value)
            ended = families["tippingpoint_run_ended"].samples[0].value
        assert ended == 1.0
        assert len(during) >= 3 and during == sorted(during) and during[0] < during[-1]
        got = {
            (s.name, s.labels.get("status", s.labels.get("le", ""))): s.value
            for f in families.values()
            for s in f.samples
        }
        roles = {
            s.labels["role"]
            for s in families["tippingpoint_role_cpu_cores"].samples
            if s.value >= 0
        }
    finally:
        proc.send_signal(2)  # ends the linger
        assert proc.wait(timeout=20) == 0
    records = [decode(line) for line in results.read_bytes().splitlines() if line]
    intervals = [r for r in records if isinstance(r, Interval)]
    codes: Counter[int] = Counter()
    for r in intervals:
        codes.update(r.codes)
    sent = sum(r.sent for r in intervals)
    assert sent >= 1500
    assert got[("tippingpoint_sent_total", "")] == sent
    assert got[("tippingpoint_responses_total", "200")] == codes[200]
    assert got[("tippingpoint_latency_seconds_count", "")] == sum(r.done for r in intervals)
    assert got[("tippingpoint_latency_seconds_bucket", "+Inf")] == sum(r.done for r in intervals)
    assert "client" in roles  # the machine sampled, the attack's own processes a role


def test_the_grafana_dashboard_asks_only_for_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "examples" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 8
    exported = set(METRICS)
    for name, (kind, _) in METRICS.items():
        if kind in ("histogram", "summary"):
            exported |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    for expr in exprs:
        names = set(re.findall(r"\btippingpoint_[a-z_]+", expr))
        assert names, expr
        assert names <= exported, (expr, names - exported)
    used = {n for e in exprs for n in re.findall(r"\btippingpoint_[a-z_]+", e)}
    assert {"tippingpoint_latency_seconds_bucket", "tippingpoint_role_cpu_cores"} <= used


# --- the page in a real browser, during a short bench ----------------------------


def _scenario(tmp: Path) -> Path:
    ports = free_ports(3)
    path = tmp / "live.toml"
    path.write_text(
        f"""
[bench]
title = "live bench"
open_files = 1200
[backends]
ports = "{ports[0]}-{ports[0]}"
processes = 1
cpus = "1"
[proxy]
http = "127.0.0.1:{ports[1]}"
cpus = "1"
[client]
processes = 1
cpus = "0"
[[experiment]]
name = "http sweep"
kind = "sweep"
frontend = "http"
start = 200
step = "x2"
step_duration = "2s"
max_steps = 3
refine = 0
[[experiment]]
name = "steady"
kind = "attack"
frontend = "http"
rate = 200
duration = "2s"
"""
    )
    return path


def _cpus(pid: int, comm: str | None = None) -> str:
    """Where the thread named ``comm`` of ``pid`` (its main thread: None) may run."""
    task = Path(f"/proc/{pid}/task/{pid}")
    if comm is not None:
        task = next(t for t in task.parent.iterdir() if (t / "comm").read_text().strip() == comm)
    match = re.search(r"Cpus_allowed_list:\s*(\S+)", (task / "status").read_text())
    assert match is not None
    return match.group(1)


def _points(page: Any, chart: str) -> int:
    return int(
        page.evaluate(
            f"() => {{ const d = document.getElementById('{chart}');"
            " return d && d.data ? d.data[0].x.length : 0; }"
        )
    )


def test_the_live_page_grows_in_chromium_and_links_the_report(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report"
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "bench", str(_scenario(tmp_path)), "-o", str(out), "--web", "--web-linger", "60s"
        ),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        url = wait_line(proc, r"^tippingpoint: live page (http://127\.0\.0\.1:\d+/)").group(1)
        log = drain(proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("() => document.getElementById('lat-live-now')", timeout=60_000)
            page.wait_for_function(
                "() => { const d = document.getElementById('lat-live-now');"
                " return d && d.data && d.data[0].x.length >= 2; }",
                timeout=30_000,
            )
            first = _points(page, "tcp")
            # The server's thread runs where the bench placed its process (its client's
            # CPUs), read back from /proc.
            assert _cpus(proc.pid, THREAD_NAME) == _cpus(proc.pid) == "0"
            page.wait_for_timeout(3000)
            # The machine's charts gain a point a second, whichever experiment runs.
            second = _points(page, "tcp")
            assert second > first, (first, second)
            # The finished steps' verdicts, as they come.
            page.wait_for_function(
                "() => document.querySelectorAll('#report table').length >= 2", timeout=30_000
            )
            assert "within" in page.inner_text("#report") or "past" in page.inner_text("#report")
            page.wait_for_function("() => document.body.dataset.ended", timeout=120_000)
            live = page.inner_text("#live")
            assert "The run ended" in live and "finished" in live, live
            page.wait_for_timeout(1500)  # the last draw
            charts = int(page.evaluate("document.body.dataset.charts"))
            assert charts >= 8, charts  # 2 per experiment, 4 for the machine
            shot = tmp_path / "finished.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 50_000
            with page.expect_navigation():
                page.click("#final-report")
            page.wait_for_function(
                "() => document.body && document.body.dataset.charts", timeout=30_000
            )
            assert "live bench" in page.title()
            assert not errors, (errors, "".join(log)[-2000:])
            browser.close()
    finally:
        proc.send_signal(2)
        code = proc.wait(timeout=60)
    assert code == 0
    assert (out / "index.html").exists()
    assert not os.path.exists(out / "index.html.tmp")


# --- the feed alone (no I/O) ----------------------------------------------------------


def test_the_feed_draws_each_client_machine_of_a_cluster() -> None:
    """Records of two client machines: the page's rate chart has a line per machine and
    /metrics a counter per machine, the total exact."""
    from prometheus_client.parser import text_string_to_metric_families

    from tippingpoint.stream import Header
    from tippingpoint.web.metrics import render_metrics
    from tippingpoint.web.page import update

    name = 'spread "wide" \\ far'  # a label value to escape
    feed = LiveFeed("t", "attack", "here")
    feed.begin(name, "attack", "GET /", [])
    plan = {"targets": ["GET http://127.0.0.1:1/"], "pace": [], "timeout": 5.0}
    header = Header(time.time(), rate=30.0, closed_connections=None, duration=2.0,
                    requests=None, keepalive=True, processes=2,
                    max_connections_per_process=10, **plan)  # fmt: skip
    feed.record(header)
    for t in (0.0, 1.0):
        for process, host, n in ((0, "cl1", 10), (1, "cl2", 20)):
            feed.record(
                Interval(process=process, t=t, dur=1.0, sent=n, done=n, codes={200: n}, host=host)
            )
    state = feed.state()
    data = json.loads(update(state))["data"]
    timeline = data["experiments"][-1]["timeline"]
    assert timeline["rate"] == [30.0, 30.0]
    assert timeline["hosts"] == {"cl1": [10.0, 10.0], "cl2": [20.0, 20.0]}
    samples = {
        (s.name, s.labels.get("host", "")): s.value
        for f in text_string_to_metric_families(render_metrics(state))
        for s in f.samples
    }
    assert samples[("tippingpoint_sent_total", "")] == 60
    assert samples[("tippingpoint_client_sent_total", "cl1")] == 20
    assert samples[("tippingpoint_client_sent_total", "cl2")] == 40
    assert samples[("tippingpoint_achieved_per_second", "")] == 30.0
    experiments = {
        s.labels["experiment"]
        for f in text_string_to_metric_families(render_metrics(state))
        for s in f.samples
        if "experiment" in s.labels
    }
    assert experiments == {name}
    # A copy read by the server stays as it was while records keep coming: each
    # second's histogram is replaced, never changed in place.
    slow = Histogram()
    slow.record_many([900_000] * 5)  # 900 ms each
    late = Interval(process=2, t=1.0, dur=1.0, sent=5, done=5, codes={200: 5}, host="cl1")
    late.hist = {"latency": slow}
    feed.record(late)
    before = json.loads(update(state))["data"]["experiments"][-1]["timeline"]
    assert before["rate"] == [30.0, 30.0] and before["p99_ms"] == [0.0, 0.0]
    now = json.loads(update(feed.state()))["data"]["experiments"][-1]["timeline"]
    assert now["rate"] == [30.0, 35.0] and now["p99_ms"][1] > 800
