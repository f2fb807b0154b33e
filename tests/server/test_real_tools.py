"""Debian's curl, wrk and ab against `tippingpoint serve`."""

from __future__ import annotations

import re
import subprocess


def run(cmd: list[str], timeout: float = 60) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def test_curl_sleep_and_times(serve) -> None:
    server = serve()
    out = run(["curl", "-sS", "--fail", "-H", "sleep: 20", "-H", "times: 2", server.url + "/ping"])
    assert out == "pongpongpong"
    out = run(["curl", "-sS", "--fail", "-d", "hello", "--http1.0", server.url + "/ping"])
    assert out == "pong"


def test_wrk_gets_only_200s(serve) -> None:
    server = serve(processes=2)
    out = run(["wrk", "-t1", "-c20", "-d1s", server.url + "/ping"])
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    assert requests > 1000
    metrics = server.metrics()
    assert metrics['tippingpoint_serve_requests_total{code="200"}'] >= requests


def test_ab_keep_alive_and_not(serve) -> None:
    server = serve()
    for flags in (["-k"], []):
        out = run(["ab", *flags, "-q", "-n", "2000", "-c", "10", server.url + "/ping"])
        assert re.search(r"Complete requests:\s+2000", out), out
        assert re.search(r"Failed requests:\s+0", out), out
        assert "Document Length:        4 bytes" in out
