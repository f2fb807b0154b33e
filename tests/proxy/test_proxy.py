"""`tippingpoint proxy`: real HAProxy from Debian, in front of `tippingpoint serve`."""

from __future__ import annotations

import os
import signal
import ssl
import stat
import subprocess
from dataclasses import replace

import httpx
import pytest

from tests.conftest import free_ports, run_tp, tippingpoint_cmd
from tippingpoint.proxy.config import ProxyConfig, derive_maxconn, render


def test_http_and_tls_through_haproxy(serve, proxy) -> None:
    backend = serve(ports=3)
    px = proxy(backend.ports)
    assert httpx.get(f"http://127.0.0.1:{px.http_port}/ping").content == b"pong"
    cert = os.path.join(px.dir, "tls", "cert.pem")
    with httpx.Client(verify=ssl.create_default_context(cafile=cert)) as client:
        response = client.get(f"https://127.0.0.1:{px.https_port}/x", headers={"times": "2"})
        assert response.content == b"pong" * 3
    key = os.path.join(px.dir, "tls", "key.pem")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    with open(cert) as f:
        assert "BEGIN CERTIFICATE" in f.read()
    stats = px.stats()
    assert stats["total"]["instances"] == 1
    names = {(row["pxname"], row["svname"]) for row in stats["stat"][0]}
    assert {("api", "FRONTEND"), ("servers", "s1"), ("servers", "s3")} <= names
    servers = [row for row in stats["stat"][0] if row["svname"] in ("s1", "s2", "s3")]
    assert [row["status"].split()[0] for row in servers] == ["UP", "UP", "UP"], servers


def test_instances_share_the_ports_and_stop_cleanly(serve, proxy) -> None:
    backend = serve()
    px = proxy(backend.ports, "--instances", "2", "--cert-type", "rsa")
    for _ in range(20):
        with httpx.Client() as client:  # new connections: the kernel spreads them
            assert client.get(f"http://127.0.0.1:{px.http_port}/").content == b"pong"
    stats = px.stats()
    assert stats["total"]["instances"] == 2
    pids = [int(i["Pid"]) for i in stats["instances"]]
    assert all(float(i["CumConns"]) > 0 for i in stats["instances"]), stats["instances"]
    px.proc.send_signal(signal.SIGTERM)
    assert px.proc.wait(30) == 0
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", os.path.join(px.dir, "tls", "cert.pem")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "rsaEncryption" in result.stdout and "2048 bit" in result.stdout


def test_rendered_config_and_maxconn() -> None:
    from pathlib import Path

    config = ProxyConfig(
        servers={"http": (("127.0.0.1", 8282), ("127.0.0.1", 8283))},
        cert_bundle=Path("/x/bundle.pem"),
        nbthread=2,
        cpus=(1,),
        rate_limit_sessions=6000,
        log=True,
        maxconn=derive_maxconn(20_000),
    )
    text = render(config)
    assert "maxconn 9900" in text and "nbthread 2" in text
    assert "cpu-map 1/1 1" in text and "cpu-map 1/2 1" in text
    assert "bind 127.0.0.1:8443 ssl crt /x/bundle.pem alpn http/1.1" in text
    assert "rate-limit sessions 6000" in text and "%Tq/%Tw/%Tc/%Tr/%Tt" in text
    assert "server s2 127.0.0.1:8283 check" in text and "balance roundrobin" in text
    assert "timeout client 7200000ms" in text
    # An idle connection waits for its first request under http-request: as long as the
    # client timeout, or every held connection is cut at HAProxy's usual 30 s.
    assert "timeout http-request 7200000ms" in text
    assert "timeout http-request 5000ms" in render(replace(config, timeout_request_s=5.0))
    assert "http-reuse" not in text
    assert "    http-reuse always\n" in render(replace(config, http_reuse="always"))


def test_print_config_and_errors(tmp_path) -> None:
    result = run_tp("proxy", "--print-config", "--dir", str(tmp_path), "--https", "")
    assert result.returncode == 0 and b"frontend api" in result.stdout
    result = run_tp("proxy", "--haproxy-bin", "/nonexistent/haproxy", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert b"apt-get install haproxy" in result.stderr
    [port] = free_ports(1)
    result = run_tp(
        "proxy", "--backends", f"127.0.0.1:{port}", "--dir", str(tmp_path), "--threads", "0"
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    result = run_tp("proxy", "stats", "--dir", str(tmp_path / "nothing"))
    assert result.returncode == 2 and b"start `tippingpoint proxy` first" in result.stderr


def test_haproxy_refusing_the_config_is_a_one_line_error(tmp_path) -> None:
    # Port 1 on 127.0.0.1 needs no privilege as root, but a bad address does not parse.
    result = subprocess.run(
        tippingpoint_cmd(
            "proxy",
            "--backends",
            "127.0.0.1:8282",
            "--dir",
            str(tmp_path),
            "--http",
            "999.1.1.1:80",
            "--https",
            "",
        ),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"HAProxy refused the configuration" in result.stderr


@pytest.mark.parametrize("metric", ["CurrConns", "SessRate"])
def test_stats_cli_text(serve, proxy, metric: str) -> None:
    backend = serve()
    px = proxy(backend.ports)
    httpx.get(f"http://127.0.0.1:{px.http_port}/")
    result = run_tp("proxy", "stats", "--dir", px.dir)
    assert result.returncode == 0
    assert metric.encode() in result.stdout and b"servers/s1" in result.stdout


def test_sighup_reloads_with_new_processes(serve, proxy) -> None:
    import time

    backend = serve()
    px = proxy(backend.ports, "--https", "")
    before = [int(i["Pid"]) for i in px.stats()["instances"]]
    px.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while True:
        try:
            after = [int(i["Pid"]) for i in px.stats()["instances"]]
        except AssertionError:
            after = before
        if after != before:
            break
        assert time.monotonic() < deadline, "no reload"
        time.sleep(0.2)
    assert httpx.get(f"http://127.0.0.1:{px.http_port}/").content == b"pong"
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{pid}") for pid in before):  # the old one finishes
        assert time.monotonic() < deadline
        time.sleep(0.1)
