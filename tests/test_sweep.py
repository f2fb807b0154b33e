"""`tippingpoint sweep` through real HAProxy: a knee made with `rate-limit sessions`."""

from __future__ import annotations

import json
import socketserver
import statistics
import threading
import time
from pathlib import Path

from tests.conftest import run_tp


def test_sweep_finds_the_rate_limit_as_the_knee(serve, proxy, tmp_path: Path) -> None:
    backend = serve(ports=2)
    px = proxy(backend.ports, "--rate-limit", "500", "--https", "")
    out = tmp_path / "sweep"
    result = run_tp(
        "sweep",
        f"http://127.0.0.1:{px.http_port}/ping",
        "--no-keepalive",
        "--start",
        "200",
        "--step",
        "x2",
        "--step-duration",
        "2s",
        "--max-steps",
        "5",
        "--refine",
        "1",
        "--proxy-dir",
        px.dir,
        "--processes",
        "1",
        "--out",
        str(out),
        "--json",
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    sweep = json.loads(result.stdout)
    steps = sweep["steps"]
    if sweep["too_busy"]:  # another load took the cores (a busy machine): said, not measured
        assert "too busy to measure" in sweep["reason"], sweep
        return
    # x2 until past the knee, one bisection; every other run is a repeat: of a step
    # past the knee (400/s, under HAProxy's limit of 500 sessions a second, can be
    # once, on a busy machine) and of the knee's two ends.
    assert [s["offered"] for s in steps if not s["repeat"]] == [200, 400, 800, 600], steps
    assert {s["repeat"] for s in steps} <= {"", "confirm", "disturbed"}
    assert [s["offered"] for s in steps if s["repeat"] == "confirm"][-2:] == [600, 400]
    assert sweep["tipping_point"] == 400 and sweep["first_bad"] == 600
    assert sweep["last_good"] == 400
    assert sweep["confirmed"].startswith("confirmed: 600/s past the knee in 2 of 2 runs")
    assert not sweep["client_limited"]
    bad = next(s for s in steps if s["offered"] == 800)
    assert bad["achieved"] < 0.9 * 800 and "achieved" in bad["verdict"]
    good = next(s for s in steps if s["offered"] == 400 and not s["past"])
    assert good["verdict"].startswith("within the low-load latency (p99 ")
    assert "ms (without the client's own stalls) <= " in good["verdict"]
    assert good["proxy_cpu_pct"] is not None and good["packets_in_per_s"] > 400
    # The processes listening where HAProxy's servers are were found and charged as
    # the backends, not counted as foreign load.
    charged = {role for g in good["cores"]["groups"] for role in g["roles"]}
    assert {"proxy", "backends", "client"} <= charged
    assert sorted(p.name for p in out.glob("step-*.jsonl")) == [
        f"step-{i:02d}-{s['offered']:.0f}.jsonl" for i, s in enumerate(steps)
    ]
    monitor = [json.loads(line) for line in (out / "monitor.jsonl").read_text().splitlines()]
    assert len(monitor) >= 6 and all("tcp_established" in m for m in monitor)
    assert any(m.get("haproxy", {}).get("SessRate", 0) > 0 for m in monitor)
    text = run_tp("report", str(out / "step-01-400.jsonl"))
    assert b"Requests      [total, rate, throughput]                800," in text.stdout


def test_sweep_table(serve, tmp_path: Path) -> None:
    backend = serve()
    result = run_tp(
        "sweep",
        backend.url,
        "--start",
        "100",
        "--step",
        "+100",
        "--step-duration",
        "1s",
        "--max-steps",
        "2",
        "--processes",
        "1",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "offered/s  achieved/s  mean ms" in text
    assert "No tipping point: no knee found within the steps" in text


def test_bad_sweep_options() -> None:
    for args, message in (
        (["--step", "x0.5"], b"bad --step"),
        (["--slo", "p99>1ms"], b"bad SLO"),
        (["--start", "0"], b"--start must be > 0"),
    ):
        result = run_tp("sweep", "http://127.0.0.1:1/", *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr


class OneAtATime(socketserver.ThreadingTCPServer):
    """A real HTTP/1.1 keep-alive server that answers one request at a time, each after
    1 ms: its capacity is ~1,000 requests/s however many connections wait."""

    daemon_threads = True
    allow_reuse_address = True
    lock = threading.Lock()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = self.request.recv(4096)
                    if not data:
                        return
                    buf += data
                _, _, buf = buf.partition(b"\r\n\r\n")
                with OneAtATime.lock:
                    time.sleep(0.001)
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong")


def test_closed_sweep_steps_connections_to_the_knee(tmp_path: Path) -> None:
    server = OneAtATime(("127.0.0.1", 0), OneAtATime.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    out = tmp_path / "closed"
    try:
        result = run_tp(
            "sweep",
            f"http://127.0.0.1:{server.server_address[1]}/ping",
            "--closed",
            "--step-duration",
            "2s",
            "--max-steps",
            "8",
            "--refine",
            "1",
            "--processes",
            "1",
            "--out",
            str(out),
            "--json",
            timeout=240,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    sweep = json.loads(result.stdout)
    assert sweep["model"] == "closed"
    steps = sweep["steps"]
    unrefined = [s["connections"] for s in steps if not s["refined"] and not s["repeat"]]
    assert unrefined == [2**i for i in range(len(unrefined))]  # from 1, x2 by default
    assert all(s["offered"] == 0 and s["achieved"] > 0 for s in steps)
    # One request at a time: more connections only wait longer, and past a few the
    # p99 is more than 5 ms above the low-load one.
    assert not sweep["client_limited"], sweep["reason"]
    knee = sweep["knee_connections"]
    assert knee is not None and 1 <= knee < sweep["first_bad"] <= 16
    # The median of the knee's runs within it (it ran again to confirm the knee).
    at_knee = [
        s["achieved"]
        for s in steps
        if s["connections"] == knee and not s["disturbed"] and not s["past"]
    ]
    assert len(at_knee) >= 2 and sweep["tipping_point"] == statistics.median(at_knee)
    assert 400 < sweep["tipping_point"] < 1000
    assert (out / "step-00-c1.jsonl").exists()
    text = run_tp("report", str(out / "step-00-c1.jsonl")).stdout
    assert b"Success       [ratio]                                  100.00%" in text


def test_closed_sweep_table_and_options(serve) -> None:
    backend = serve()
    result = run_tp(
        "sweep", backend.url, "--closed", "--step-duration", "1s", "--max-steps", "1", timeout=60
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "connections  achieved/s  mean ms" in text
    assert "No tipping point: no knee found within the steps" in text
    for args, message in (
        (["--start", "0"], b"with --closed, a number of connections >= 1"),
        (["--max-connections", "10"], b"--closed steps the connections itself"),
        (["--max-rate", "1000"], b"--closed offers no rate"),
    ):
        result = run_tp("sweep", "http://127.0.0.1:1/", "--closed", *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
