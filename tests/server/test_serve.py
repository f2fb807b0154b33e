"""`tippingpoint serve` over real sockets on loopback, with independent clients."""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import time

import h11
import httpx
import pytest

from tests.conftest import (
    HOST,
    Server,
    free_ports,
    read_response,
    recv_until_closed,
    start_server,
    tippingpoint_cmd,
)


def connect(server: Server, port: int | None = None) -> socket.socket:
    return socket.create_connection((HOST, port or server.port), timeout=5)


def h11_exchange(sock: socket.socket, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """One request/response with h11 as the client: it validates the framing."""
    conn = h11.Connection(h11.CLIENT)
    sock.sendall(
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x"), *headers]))
    )
    sock.sendall(conn.send(h11.EndOfMessage()))
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return status, body


def test_fast_path_answers_pong_with_fixed_length(serve) -> None:
    server = serve()
    response = httpx.get(server.url + "/ping")
    assert response.status_code == 200
    assert response.content == b"pong"
    assert response.headers["content-length"] == "4"
    assert "transfer-encoding" not in response.headers
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        assert httpx.request(method, server.url + "/any/path?x=1").content == b"pong"


def test_sleep_waits_a_random_time_up_to_n_plus_one_ms(serve) -> None:
    server = serve()
    elapsed = []
    with httpx.Client() as client:
        for _ in range(12):
            start = time.perf_counter()
            response = client.get(server.url, headers={"sleep": "200"})
            elapsed.append(time.perf_counter() - start)
            assert response.content == b"pong"
            assert response.headers["content-length"] == "4"
    assert max(elapsed) < 0.201 + 0.08
    # Uniform in [0, 201] ms: a mean far from 100 ms means the delay is not applied.
    assert 0.04 < statistics.mean(elapsed) < 0.17
    assert max(elapsed) - min(elapsed) > 0.03


def test_times_sends_k_plus_one_pongs_chunked(serve) -> None:
    server = serve()
    start = time.perf_counter()
    response = httpx.get(server.url, headers={"sleep": "40", "times": "3"})
    elapsed = time.perf_counter() - start
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == b"pong" * 4
    assert elapsed < 4 * 0.041 + 0.1
    with connect(server) as sock:
        for times in (1, 5, 0):
            status, body = h11_exchange(sock, [("sleep", "5"), ("times", str(times))])
            assert (status, body) == (200, b"pong" * (times + 1))


def test_times_writes_pongs_as_they_come(serve) -> None:
    server = serve()
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nsleep: 300\r\ntimes: 2\r\n\r\n")
        sock.settimeout(5)
        first = sock.recv(65536)
        start = time.perf_counter()  # the two pongs after the first: at most 2 x 301 ms
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Transfer-Encoding: chunked\r\n" in first
        assert first.endswith(b"\r\n\r\n4\r\npong\r\n")
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
        assert rest == b"4\r\npong\r\n4\r\npong\r\n0\r\n\r\n"
        assert time.perf_counter() - start < 0.602 + 0.1


def test_pipelined_requests_are_answered_in_order(serve) -> None:
    server = serve()
    with connect(server) as sock:
        sock.sendall(
            b"GET /1 HTTP/1.1\r\nHost: x\r\nsleep: 50\r\ntimes: 1\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nsleep: 10\r\n\r\nhello"
            b"GET /4 HTTP/1.1\r\nHost: x\r\nsleep: bad\r\n\r\n"
            b"GET /5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = recv_until_closed(sock)
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    responses = []
    for i in range(1, 6):
        conn.send(h11.Request(method="GET", target=f"/{i}", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        status, body = 0, b""
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            assert event is not h11.NEED_DATA, responses
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
        responses.append((status, body))
        if i < 5:
            conn.start_next_cycle()
    assert [r[0] for r in responses] == [200, 200, 200, 400, 200]
    assert responses[0][1] == b"pongpong"
    assert b"sleep must be a whole number" in responses[3][1]


def test_keep_alive_serves_many_requests_on_one_connection(serve) -> None:
    server = serve()
    before = server.metrics()["tippingpoint_serve_connections_accepted_total"]
    with connect(server) as sock:
        for _ in range(50):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).endswith(b"\r\n\r\npong")
    after = server.metrics()
    assert after["tippingpoint_serve_connections_accepted_total"] == before + 1
    assert after['tippingpoint_serve_requests_total{code="200"}'] >= 50


def test_http10_closes_unless_keep_alive(serve) -> None:
    server = serve()
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = recv_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"pong")
        assert b"Connection: close" in data
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert b"Connection: keep-alive" in read_response(sock)
    with connect(server) as sock:  # no chunked coding in HTTP/1.0: the close ends the body
        sock.sendall(b"GET / HTTP/1.0\r\nsleep: 5\r\ntimes: 2\r\n\r\n")
        data = recv_until_closed(sock)
        assert data.split(b"\r\n\r\n", 1)[1] == b"pongpongpong"


def test_head_has_no_body(serve) -> None:
    server = serve()
    with connect(server) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        data = sock.recv(65536)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.count(b"pong") == 1


def test_request_bodies_are_read_and_discarded(serve) -> None:
    server = serve()
    with httpx.Client() as client:
        body = os.urandom(300_000)
        assert client.post(server.url, content=body).content == b"pong"

        def chunks():
            for _ in range(10):
                yield b"x" * 10_000

        response = client.post(server.url, content=chunks())  # chunked upload
        assert response.content == b"pong"
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(1000) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ping")
        assert read_response(sock).endswith(b"pong")


def test_many_ports_all_answer(serve) -> None:
    server = serve(ports=4)
    for port in server.ports:
        assert httpx.get(f"http://{HOST}:{port}/").content == b"pong"


def test_every_process_serves(serve) -> None:
    server = serve(processes=2)
    assert len(server.worker_pids) == 2
    socks = [connect(server) for _ in range(60)]
    for sock in socks:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(sock)
    metrics = server.metrics()
    for sock in socks:
        sock.close()
    per_process = [
        v for k, v in metrics.items() if k.startswith("tippingpoint_serve_process_requests_total")
    ]
    assert len(per_process) == 2
    assert all(v > 0 for v in per_process), per_process
    assert sum(per_process) == 60
    assert metrics["tippingpoint_serve_processes"] == 2


def test_idle_keep_alive_timeout_closes(serve) -> None:
    server = serve("--idle-timeout", "1")
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(sock)
        start = time.monotonic()
        assert recv_until_closed(sock, timeout=6) == b""
        assert 0.9 < time.monotonic() - start < 3.5
    assert server.metrics()["tippingpoint_serve_idle_timeouts_total"] == 1


def test_header_timeout_answers_408_and_closes(serve) -> None:
    server = serve("--header-timeout", "1")
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        for _ in range(5):  # a slowloris: a byte now and then does not extend the deadline
            time.sleep(0.3)
            try:
                sock.sendall(b"X")
            except OSError:
                break
        data = recv_until_closed(sock, timeout=6)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - start < 3.5
    metrics = server.metrics()
    assert metrics["tippingpoint_serve_header_timeouts_total"] == 1
    assert metrics['tippingpoint_serve_requests_total{code="408"}'] == 1


def test_header_and_body_caps(serve) -> None:
    server = serve("--max-header-size", "1024", "--max-body-size", "1000")
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n")
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 431 ")
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n")
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 413 ")
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
        assert read_response(sock).endswith(b"pong")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("sleep: -5", b"sleep must be a whole number"),
        ("sleep: soon", b"sleep must be a whole number"),
        ("sleep: 3600001", b"sleep must be <= 3600000"),
        ("times: 100001", b"times must be <= 100000"),
    ],
)
def test_invalid_sleep_times_get_400_and_the_connection_lives(serve, header, reason) -> None:
    server = serve()
    with connect(server) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode())
        response = read_response(sock)
        assert response.startswith(b"HTTP/1.1 400 ")
        assert reason in response
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).endswith(b"pong")


CORPUS = [
    b"GET /\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to an HTTP port
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/3.0\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 40000 + b"\r\n\r\n",
]


@pytest.mark.parametrize("data", CORPUS)
def test_malformed_requests_get_an_error_then_close_and_the_server_lives(serve, data) -> None:
    server = serve()
    with connect(server) as sock:
        try:
            sock.sendall(data)
        except ConnectionResetError:
            pass
        response = recv_until_closed(sock)
    assert response[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 431", b"HTTP/1.1 501", b"HTTP/1.1 505")
    assert b"Connection: close" in response
    assert httpx.get(server.url).content == b"pong"
    assert server.proc.poll() is None


def test_metrics_count_requests_connections_and_bytes(serve) -> None:
    server = serve(processes=2)
    with httpx.Client() as client:
        for _ in range(7):
            client.get(server.url)
        client.get(server.url, headers={"sleep": "x"})
    with connect(server) as sock:
        sock.sendall(b"BAD\r\n\r\n")
        recv_until_closed(sock)
    m = server.metrics()
    assert m['tippingpoint_serve_requests_total{code="200"}'] == 7
    assert m['tippingpoint_serve_requests_total{code="400"}'] == 2
    assert m["tippingpoint_serve_requests_rejected_total"] == 2
    assert m["tippingpoint_serve_connections_accepted_total"] == 2
    assert m["tippingpoint_serve_connections_closed_total"] == 2
    assert m["tippingpoint_serve_connections_active"] == 0
    assert m["tippingpoint_serve_received_bytes_total"] > 7 * 30
    assert m["tippingpoint_serve_sent_bytes_total"] > 7 * 60
    assert m["tippingpoint_serve_connection_capacity"] > 1000


def test_statsd_counter(serve) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((HOST, 0))
    udp.settimeout(5)
    server = serve(
        "--statsd", f"{HOST}:{udp.getsockname()[1]}", "--statsd-metric", "ssl.server.http"
    )
    with httpx.Client() as client:
        for _ in range(5):
            client.get(server.url)
    total = 0
    while total < 5:
        name, _, rest = udp.recv(1000).decode().partition(":")
        assert name == "ssl.server.http" and rest.endswith("|c")
        total += int(rest[:-2])
    assert total == 5
    udp.close()


def test_at_capacity_a_process_stops_accepting_then_resumes(serve) -> None:
    server = serve("--max-connections", "5")
    held = [connect(server) for _ in range(5)]
    for sock in held:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(sock)
    time.sleep(0.2)
    with pytest.raises(ConnectionRefusedError):
        for _ in range(3):
            extra = connect(server)
            extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            read_response(extra)  # a connection queued before the pause may be reset instead
            extra.close()
    m = server.metrics()
    assert m["tippingpoint_serve_accept_pauses_total"] >= 1
    assert (
        m[f'tippingpoint_serve_process_accepting{{process="0",pid="{server.worker_pids[0]}"}}'] == 0
    )
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert httpx.get(server.url).content == b"pong"
            break
        except httpx.ConnectError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert "at capacity" in server.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_everything_with_exit_0(serve, sig) -> None:
    server = serve(processes=2)
    held = connect(server)
    held.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nsleep: 60000\r\n\r\n")  # a response in progress
    time.sleep(0.1)
    assert server.stop(sig) == 0
    for pid in server.worker_pids:  # stopped and reaped by the supervisor
        assert not os.path.exists(f"/proc/{pid}")
    held.close()
    assert "Traceback" not in server.log()


def test_workers_die_with_a_killed_supervisor(serve) -> None:
    server = serve(processes=2)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(5)
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{pid}") for pid in server.worker_pids):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.05)


def test_port_in_use_is_a_one_line_error() -> None:
    [port] = free_ports(1)
    blocker = socket.socket()
    blocker.bind((HOST, port))
    blocker.listen()
    try:
        result = subprocess.run(
            tippingpoint_cmd("serve", "--ports", str(port), "--processes", "1"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        blocker.close()
    assert result.returncode == 2
    assert f"port {port} is taken: pid {os.getpid()} (" in result.stderr
    assert f"kill {os.getpid()}" in result.stderr and "--share-ports" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_sharing_a_port_with_a_socket_that_does_not_share_is_a_one_line_error() -> None:
    [port] = free_ports(1)
    blocker = socket.socket()  # no SO_REUSEPORT: the kernel refuses to share it
    blocker.bind((HOST, port))
    blocker.listen()
    try:
        result = subprocess.run(
            tippingpoint_cmd("serve", "--ports", str(port), "--processes", "1", "--share-ports"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        blocker.close()
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1 ports" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ports", "80-70"], "bad port range"),
        (["--ports", "abc"], "bad port list"),
        (["--processes", "0"], "--processes must be >= 1"),
        (["--statsd", "nohost"], "use host:port"),
    ],
)
def test_bad_options_are_one_line_errors(args, message) -> None:
    result = subprocess.run(
        tippingpoint_cmd("serve", *args), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_asyncio_loop_fallback_serves(serve) -> None:
    server = serve("--loop", "asyncio")
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).endswith(b"pong")
    assert httpx.get(server.url, headers={"sleep": "5", "times": "2"}).content == b"pong" * 3
    assert "(asyncio)" in server.log()


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(tippingpoint_cmd("--version"), capture_output=True, text=True)
    assert result.returncode == 0 and "tippingpoint" in result.stdout


def test_start_server_helper_sees_a_failing_server() -> None:
    [port] = free_ports(1)
    server = start_server(["--processes", "1", "--idle-timeout", "0"], [port], False, wait=False)
    assert server.proc.wait(30) == 2
    assert "timeouts must be > 0" in server.log()
    os.unlink(server.log_path)


def test_a_killed_worker_is_replaced_and_counted(serve) -> None:
    server = serve(processes=2)
    for _ in range(50):
        assert httpx.get(server.url + "/ping").status_code == 200
    before = server.metrics()
    held = connect(server)
    victim = server.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while "restarted as pid" not in server.log():
        assert time.monotonic() < deadline, "the killed worker was not replaced within 1 s"
        time.sleep(0.02)
    new_pid = int(re.search(r"worker \d+ restarted as pid (\d+)", server.log()).group(1))
    assert new_pid != victim and os.path.exists(f"/proc/{new_pid}")
    held.close()
    after = server.metrics()
    assert after["tippingpoint_serve_worker_restarts_total"] == 1
    assert after["tippingpoint_serve_processes"] == 2
    # Counters never go back: what the dead worker answered stays in the totals.
    done = 'tippingpoint_serve_requests_total{code="200"}'
    assert after[done] >= before[done] == 50
    # Both workers answer again: every request of a burst gets its response.
    for _ in range(40):
        assert httpx.get(server.url + "/ping").status_code == 200
    assert server.metrics()[done] >= 90
