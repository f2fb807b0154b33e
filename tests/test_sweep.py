"""`tippingpoint sweep` through real HAProxy: a knee made with `rate-limit sessions`."""

from __future__ import annotations

import json
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
    offered = [s["offered"] for s in sweep["steps"]]
    assert offered == [200, 400, 800, 600]  # x2 until past the knee, then one bisection
    assert sweep["tipping_point"] == 400 and sweep["first_bad"] == 600
    assert not sweep["client_limited"]
    bad = sweep["steps"][2]
    assert bad["achieved"] < 0.9 * 800 and "achieved" in bad["verdict"]
    good = sweep["steps"][1]
    assert good["verdict"] == "within the low-load latency"
    assert good["proxy_cpu_pct"] is not None and good["packets_in_per_s"] > 400
    assert sorted(p.name for p in out.glob("step-*.jsonl")) == [
        "step-00-200.jsonl",
        "step-01-400.jsonl",
        "step-02-800.jsonl",
        "step-03-600.jsonl",
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
