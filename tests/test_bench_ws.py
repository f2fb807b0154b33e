"""`tippingpoint bench` with WebSocket experiments: the same kinds (sweep, hold, connect
storm) through HAProxy's HTTP and TLS frontends on ws:// and wss://, and the report that
names them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import free_ports, run_tp
from tests.test_bench import console_errors, dump_dom


def scenario(tmp: Path) -> Path:
    ports = free_ports(4)
    text = f"""
[bench]
title = "websocket bench"
open_files = 1200
[backends]
ports = "{ports[0]}-{ports[1]}"
processes = 1
[proxy]
http = "127.0.0.1:{ports[2]}"
https = "127.0.0.1:{ports[3]}"
[client]
processes = 1
[[experiment]]
name = "message rate"
kind = "sweep"
frontend = "ws"
start = 200
step = "x2"
step_duration = "1s"
max_steps = 2
refine = 0
[[experiment]]
name = "held websockets"
kind = "hold"
frontend = "wss"
connections = 1500
connect_rate = 1500
duration = "6s"
request_every = "1s"
[[experiment]]
name = "websocket storm"
kind = "connect-storm"
frontend = "ws"
start = 200
step = "x2"
step_duration = "1s"
max_steps = 2
refine = 0
"""
    path = tmp / "ws.toml"
    path.write_text(text)
    return path


def test_websocket_experiments_run_through_haproxy(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run_tp("bench", str(scenario(tmp_path)), "-o", str(out), timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    sweep, hold, storm = summary["experiments"]
    steps = sweep["sweep"]["steps"]
    assert [s["offered"] for s in steps if not s["repeat"]] == [200, 400]
    assert all(s["success"] == 1.0 for s in steps), steps
    assert (sweep["frontend"], hold["frontend"]) == ("ws", "wss")
    assert "ws://" in sweep["description"] and "wss://" in hold["description"]
    row = summary["summary"][1][1]
    assert "1,500 WebSockets over TLS through HAProxy cost" in row, row
    assert "peak established 1,500 of 1,500" in row and "lost 0" in row, row
    # A storm of new WebSockets: each step's opens all succeed, timed through the upgrade.
    steps = storm["sweep"]["steps"]
    assert [s["offered"] for s in steps if not s["repeat"]] == [200, 400], steps
    assert all(s["success"] == 1.0 and s["p99_ms"] > 0 for s in steps), steps
    assert storm["unit"] == "new WebSockets/s", storm["unit"]
    assert storm["latency"] == "open latency (tcp + websocket + messages)", storm["latency"]
    assert "new WebSockets (tcp + websocket + messages) to ws://" in storm["description"]
    dom = dump_dom((out / "index.html").as_uri())
    assert "wss://" in dom.stdout
    assert not console_errors(dom), console_errors(dom)
