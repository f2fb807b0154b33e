"""`tippingpoint attack` against real servers on loopback: tippingpoint serve and nginx."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.conftest import HOST, free_ports, run_tp, tippingpoint_cmd
from tippingpoint.hdr import Histogram


def records(stream: bytes) -> list[dict]:
    return [json.loads(line) for line in stream.splitlines() if line.strip()]


def report_json(stream: bytes, *files: str) -> dict:
    result = run_tp("report", "--type", "json", *files, input=None if files else stream)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def attack(*args: str, timeout: float = 120, status: int | None = 0) -> bytes:
    """The attack's stream; ``status`` 1: not one request is to succeed (the attack then
    says so on stderr and exits 1, its stream written all the same); None: either."""
    result = run_tp("attack", *args, timeout=timeout)
    if status is not None:
        assert result.returncode == status, result.stderr.decode()
    none = b"none of the" in result.stderr and b"requests succeeded" in result.stderr
    assert none == (result.returncode == 1), result.stderr.decode()
    return result.stdout


def test_constant_rate_is_accurate_as_counted_by_the_server(serve) -> None:
    server = serve(processes=1)
    stream = attack(server.url + "/ping", "--rate", "2000", "--duration", "5s", "--processes", "2")
    served = server.metrics()['tippingpoint_serve_requests_total{code="200"}']
    assert served == pytest.approx(10_000, rel=0.01)
    report = report_json(stream)
    assert report["requests"] == served
    assert report["status_codes"] == {"200": served}
    assert report["rate"] == pytest.approx(2000, rel=0.01)
    assert report["success"] == 1.0
    lines = records(stream)
    assert lines[0]["type"] == "attack" and lines[0]["processes"] == 2
    assert {r["process"] for r in lines[1:]} == {0, 1}
    # Interleaved schedules: each process sends half.
    per_process = [sum(r["sent"] for r in lines[1:] if r["process"] == k) for k in (0, 1)]
    assert per_process == [5000, 5000]


def test_rate_against_nginx(nginx) -> None:
    server = nginx()
    stream = attack(server.url, "--rate", "1000", "--duration", "3s", "--processes", "1")
    report = report_json(stream)
    assert report["requests"] == 3000
    assert len([line for line in server.access_log() if line.endswith(" 200")]) == 3000


def test_closed_model_sends_exactly_the_requests(serve) -> None:
    server = serve()
    stream = attack(
        server.url, "--rate", "0", "--connections", "8", "--requests", "3001", "--processes", "2"
    )
    report = report_json(stream)
    assert report["requests"] == report["sent"] == 3001
    assert report["connections"]["opened"] == 8
    assert server.metrics()['tippingpoint_serve_requests_total{code="200"}'] == 3001


def test_a_new_connection_per_request_keeps_the_rate(serve) -> None:
    # Each hit opens its own connection: no pool-growth budget may hold hits back (it
    # used to cap such runs near 800/s, queueing the rest for seconds).
    server = serve(processes=1)
    stream = attack(
        server.url, "--rate", "1500", "--duration", "2s", "--processes", "1", "--no-keepalive"
    )
    report = report_json(stream)
    assert report["requests"] == 3000 and report["success"] == 1.0
    assert report["rate"] == pytest.approx(1500, rel=0.02)
    assert report["queued"] == 0
    assert report["latencies"]["99th"] < 50e6  # ns
    assert report["connections"]["opened"] == 3000


def test_closed_model_counts_each_request_sent_once_on_new_connections(serve) -> None:
    server = serve()
    stream = attack(
        server.url,
        "--rate",
        "0",
        "--connections",
        "4",
        "--requests",
        "400",
        "--processes",
        "1",
        "--no-keepalive",
    )
    report = report_json(stream)
    assert report["requests"] == report["sent"] == 400
    assert report["connections"]["opened"] == 400
    assert server.metrics()['tippingpoint_serve_requests_total{code="200"}'] == 400


def test_first_byte_service_and_latency_each_counted(serve) -> None:
    server = serve(processes=1)
    # One read per response, sent on time (closed model, open connections): the three
    # times are one value.
    report = report_json(
        attack(server.url, "--rate", "0", "--connections", "2", "--requests", "400")
    )
    for name in ("service", "ttfb"):
        assert report[name]["count"] == 400
        assert report[name]["50th"] == pytest.approx(report["latencies"]["50th"], rel=0.01)
    # A response written in two parts, each after a pause of 0-200 ms (`sleep: 200`,
    # `times: 1`; 100 ms on average): the first byte comes well before the last.
    report = report_json(
        attack(server.url, "--rate", "40", "--requests", "40", "-H", "sleep: 200", "-H", "times: 1")
    )
    assert report["requests"] == 40 and report["success"] == 1.0
    assert report["ttfb"]["count"] == report["service"]["count"] == 40
    assert report["service"]["mean"] > report["ttfb"]["mean"] + 50e6
    assert report["service"]["max"] > report["ttfb"]["max"]
    assert report["latencies"]["mean"] >= report["service"]["mean"]


def test_ramp_follows_the_plan(serve) -> None:
    server = serve()
    stream = attack(server.url, "--pace", "2s@100->900, 1s@900", "--processes", "1")
    lines = [r for r in records(stream) if r["type"] == "interval"]
    total = sum(r["sent"] for r in lines)
    assert total == 100 * 2 + 800 + 900  # (100 + 900) / 2 * 2 s + 900
    sent = [r["sent"] for r in lines if not r.get("final")]
    # H(1) = 100 + 400 = 500; H(2) - H(1) = 1000 - 500... first second 300, second 700.
    assert sent[0] == pytest.approx(300, abs=3)
    assert sent[1] == pytest.approx(700, abs=3)
    assert report_json(stream)["planned"] == 1900


def test_keep_alive_reuses_and_no_keepalive_does_not(serve) -> None:
    server = serve()
    kept = report_json(attack(server.url, "--rate", "500", "--duration", "1s", "--processes", "1"))
    assert kept["connections"]["opened"] < 20
    fresh = report_json(
        attack(
            server.url, "--rate", "500", "--duration", "1s", "--processes", "1", "--no-keepalive"
        )
    )
    assert fresh["connections"]["opened"] == 500
    assert fresh["connect"]["99th"] > 0


def test_source_addresses_are_spread(nginx) -> None:
    server = nginx()
    attack(
        server.url,
        "--rate",
        "300",
        "--duration",
        "1s",
        "--no-keepalive",
        "--laddr",
        "127.0.0.2-127.0.0.4",
        "--processes",
        "2",
    )
    peers = {line.split()[0] for line in server.access_log()}
    assert peers == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}


def test_tls_verification_cacert_and_insecure(nginx) -> None:
    server = nginx(tls=True)
    cert = os.path.join(server.dir, "cert.pem")
    bad = report_json(
        attack(server.url, "--rate", "50", "--duration", "1s", "--processes", "1", status=1)
    )
    assert bad["status_codes"] == {"0": 50}
    assert "tls" in bad["error_counts"]
    good = report_json(
        attack(
            server.url, "--rate", "200", "--duration", "1s", "--processes", "1", "--cacert", cert
        )
    )
    assert good["status_codes"] == {"200": 200}
    fresh = report_json(
        attack(
            server.url,
            "--rate",
            "100",
            "--duration",
            "1s",
            "--processes",
            "1",
            "--insecure",
            "--no-keepalive",
        )
    )
    assert fresh["status_codes"] == {"200": 100}
    assert fresh["connections"]["opened"] == 100


def test_error_kinds_are_counted_not_fatal(serve) -> None:
    [port] = free_ports(1)
    refused = report_json(
        attack(
            f"http://{HOST}:{port}/", "--rate", "100", "--duration", "1s", "--processes", "1",
            status=1,
        )
    )  # fmt: skip
    assert refused["status_codes"] == {"0": 100}
    assert refused["error_counts"] == {"refused": 100}
    server = serve()
    slow = report_json(
        attack(
            server.url,
            "-H",
            "sleep: 3000",
            "--timeout",
            "300ms",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--processes",
            "1",
            status=None,  # most or all time out: either is right
        )
    )
    assert slow["error_counts"].get("timeout", 0) >= 15
    assert slow["requests"] == 20


def test_malformed_responses_are_counted(tmp_path) -> None:
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def garbage_server() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(2)
            try:
                conn.recv(4096)
                conn.sendall(b"SSH-2.0-not-http\r\n\r\n")
            except OSError:
                pass
            conn.close()

    thread = threading.Thread(target=garbage_server, daemon=True)
    thread.start()
    try:
        report = report_json(
            attack(
                f"http://{HOST}:{port}/", "--rate", "20", "--duration", "1s", "--processes", "1",
                status=1,
            )
        )  # fmt: skip
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert report["error_counts"].get("malformed", 0) == 20


def test_a_server_stall_shows_in_the_percentiles(serve) -> None:
    server = serve(processes=1)
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "attack", server.url, "--rate", "400", "--duration", "4s", "--processes", "1"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.5)
    worker = server.worker_pids[0]
    os.kill(worker, signal.SIGSTOP)
    time.sleep(1.0)
    os.kill(worker, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = report_json(out)
    # About a quarter of the requests were due during the stall and waited up to 1 s:
    # measured from their intended send time, the tail shows it.
    assert report["latencies"]["max"] > 0.9e9
    assert report["latencies"]["90th"] > 0.3e9
    assert report["requests"] == 1600


def test_sigint_stops_and_flushes(serve) -> None:
    server = serve()
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "attack", server.url, "--rate", "200", "--duration", "60s", "--processes", "2"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - start < 5
    assert proc.returncode == 130, err  # what was measured is written; the status says Ctrl-C
    assert b"Traceback" not in err
    lines = records(out)
    assert sum(1 for r in lines if r.get("final") and r.get("interrupted")) == 2
    report = report_json(out)
    assert 150 <= report["requests"] <= 500  # about 2 s of sending at 200/s
    assert report["requests"] == server.metrics()['tippingpoint_serve_requests_total{code="200"}']


def test_timeout_shorter_than_sleep_warns(serve) -> None:
    server = serve()
    result = run_tp(
        "attack",
        server.url,
        "-H",
        "sleep: 1000",
        "-H",
        "times: 2",
        "--timeout",
        "1s",
        "--requests",
        "1",
        "--rate",
        "10",
        "--processes",
        "1",
    )
    # The one request may time out (then nothing succeeded: exit 1, said) or just make it.
    assert result.returncode in (0, 1)
    assert b"beyond --timeout" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], b"give a URL or --targets"),
        (["http://127.0.0.1:1/", "--rate", "10"], b"give --duration or --requests"),
        (["http://127.0.0.1:1/", "--rate", "abc", "--duration", "1s"], b"bad rate"),
        (["ftp://x/", "--duration", "1s"], b"bad URL"),
        (["http://127.0.0.1:1/", "--pace", "10s"], b"bad pace step"),
        (["http://127.0.0.1:1/", "--duration", "1s", "--laddr", "10-20"], b"127.0.0.2-127.0.0.40"),
        (["http://127.0.0.1:1/", "--duration", "1s", "-H", "nocolon"], b"bad header"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: list[str], message: bytes) -> None:
    result = run_tp("attack", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_records_are_vegeta_json_and_agree_with_the_stream(serve, tmp_path) -> None:
    server = serve()
    path = tmp_path / "records.json"
    stream = attack(
        server.url, "--rate", "300", "--duration", "1s", "--processes", "2", "--records", str(path)
    )
    lines = path.read_text().splitlines()
    assert len(lines) == 300
    first = json.loads(lines[0])
    assert {
        "code",
        "timestamp",
        "latency",
        "bytes_in",
        "bytes_out",
        "error",
        "url",
        "method",
    } <= first.keys()
    from_records = report_json(b"", str(path))
    from_stream = report_json(stream)
    assert from_records["requests"] == from_stream["requests"] == 300
    assert from_records["status_codes"] == from_stream["status_codes"]
    # Same requests, microsecond histograms: the percentiles agree to the bucket.
    assert from_records["latencies"]["99th"] == pytest.approx(
        from_stream["latencies"]["99th"], rel=0.01
    )


def test_interval_histograms_decode(serve) -> None:
    server = serve()
    stream = attack(server.url, "--rate", "100", "--duration", "2s", "--processes", "1")
    intervals = [r for r in records(stream) if r["type"] == "interval"]
    assert len(intervals) >= 2
    total = sum(Histogram.decode(r["hist"]["latency"]).total for r in intervals)
    assert total == 200


def test_tls_session_resumption(nginx) -> None:
    server = nginx(tls=True)
    cert = os.path.join(server.dir, "cert.pem")
    common = [
        "--rate",
        "50",
        "--duration",
        "1s",
        "--processes",
        "1",
        "--cacert",
        cert,
        "--no-keepalive",
    ]
    full = report_json(attack(server.url, *common))
    assert full["status_codes"] == {"200": 50}
    assert full["connections"]["tls_resumed"] == 0
    resumed = report_json(attack(server.url, *common, "--tls-resume"))
    assert resumed["status_codes"] == {"200": 50}
    # The first handshakes are full; once a ticket has arrived, new connections resume.
    assert resumed["connections"]["tls_resumed"] >= 40
    kept = report_json(
        attack(
            server.url,
            "--rate",
            "300",
            "--duration",
            "1s",
            "--processes",
            "1",
            "--cacert",
            cert,
            "--tls-resume",
        )
    )
    assert kept["status_codes"] == {"200": 300}
    assert kept["connections"]["opened"] < 20


def test_live_view_on_a_terminal(serve) -> None:
    import pty
    import select

    server = serve()
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        tippingpoint_cmd(
            "attack", server.url, "--rate", "100", "--duration", "2s", "--processes", "1"
        ),
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    out, _ = proc.communicate(timeout=30)
    os.close(master)
    assert proc.returncode == 0
    text = screen.decode(errors="replace")
    for label in (
        "target rate",
        "100/s",
        "in flight",
        "open connections",
        "p99 (last s)",
        "on schedule",
    ):
        assert label in text, (label, text[-2000:])
    assert report_json(out)["requests"] == 200  # the stream is unaffected
