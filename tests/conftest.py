"""Fixtures: real `tippingpoint serve` processes on loopback ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tippingpoint.broker import BrokerFleet

HOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """``n`` consecutive ports on 127.0.0.1 that nothing listens on now."""
    for _ in range(200):
        base = 20000 + int.from_bytes(os.urandom(2), "big") % 30000
        ports = list(range(base, base + n))
        socks = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind((HOST, port))
            return ports
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    ports: list[int]
    log_path: str
    metrics_port: int | None = None
    worker_pids: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def metrics(self) -> dict[str, float]:
        """Prometheus samples, after the workers' next publication (4 per second)."""
        assert self.metrics_port is not None
        time.sleep(0.35)
        with socket.create_connection((HOST, self.metrics_port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[1].decode()
        samples = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def tippingpoint_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tippingpoint", *args]


def start_server(args: list[str], ports: list[int], metrics: bool, wait: bool = True) -> Server:
    log = tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = tippingpoint_cmd("serve", "--ports", ",".join(map(str, ports)), *args)
    metrics_port = None
    if metrics:
        metrics_port = free_ports(1)[0]
        cmd += ["--metrics-port", str(metrics_port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, ports, log.name, metrics_port)
    if not wait:
        return server
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = server.log()
        if "ready on" in text and (not metrics or "metrics on" in text):
            server.worker_pids = [
                int(p) for p in re.findall(r"worker \d+ pid (\d+) listening", text)
            ]
            return server
        if proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{text}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not start:\n{server.log()}")


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Start `tippingpoint serve` with extra arguments; stopped (and checked) afterwards."""
    started: list[Server] = []

    def _start(*args: str, ports: int = 1, metrics: bool = True, processes: int = 1) -> Server:
        server = start_server(["--processes", str(processes), *args], free_ports(ports), metrics)
        started.append(server)
        return server

    yield _start
    for server in started:
        if server.proc.poll() is None:
            try:
                server.stop(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.proc.pid, signal.SIGKILL)
                server.proc.wait()
        os.unlink(server.log_path)


def recv_until_closed(sock: socket.socket, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def read_response(sock: socket.socket, timeout: float = 5) -> bytes:
    """One response with a Content-Length body, read from a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert match, head
    length = int(match.group(1))
    while len(body) < length:
        body += sock.recv(65536)
    assert len(body) == length, (head, body)
    return head + b"\r\n\r\n" + body


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    log_format peers '$remote_addr $status';
    access_log {dir}/access.log peers;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    fastcgi_temp_path {dir};
    uwsgi_temp_path {dir};
    scgi_temp_path {dir};
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        {tls}
        location / {{ return 200 "pong"; }}
    }}
}}
"""


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    port: int
    dir: str
    tls: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def access_log(self) -> list[str]:
        with open(os.path.join(self.dir, "access.log")) as f:
            return f.read().splitlines()


def make_cert(directory: str, name: str = "localhost") -> tuple[str, str]:
    """A self-signed ECDSA P-256 certificate for ``name`` and 127.0.0.1 (openssl CLI)."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name},IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def nginx(tmp_path) -> Iterator[Callable[..., Nginx]]:
    """Debian's nginx, one worker, answering pong; optionally with TLS."""
    started: list[Nginx] = []

    def _start(tls: bool = False) -> Nginx:
        directory = tempfile.mkdtemp(dir=tmp_path)
        [port] = free_ports(1)
        tls_conf = ""
        if tls:
            cert, key = make_cert(directory)
            tls_conf = (
                f"listen 127.0.0.1:{port + 0} ssl; ssl_certificate {cert}; "
                f"ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;"
            )
        conf = NGINX_CONF.format(dir=directory, port=port, tls=tls_conf)
        if tls:
            conf = conf.replace(f"listen 127.0.0.1:{port};", "")
        path = os.path.join(directory, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        proc = subprocess.Popen(["nginx", "-c", path], stderr=subprocess.PIPE)
        server = Nginx(proc, port, directory, tls)
        started.append(server)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        return server

    yield _start
    for server in started:
        server.proc.terminate()
        server.proc.wait(10)


def run_tp(
    *args: str, timeout: float = 120, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the tippingpoint CLI; output as bytes."""
    return subprocess.run(
        tippingpoint_cmd(*args), capture_output=True, timeout=timeout, input=input
    )


@dataclass
class Proxy:
    proc: subprocess.Popen[bytes]
    dir: str
    http_port: int
    https_port: int

    def stats(self) -> dict:
        import json as _json

        out = subprocess.run(
            tippingpoint_cmd("proxy", "stats", "--dir", self.dir, "--json"),
            capture_output=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        return _json.loads(out.stdout)


@pytest.fixture
def proxy(tmp_path) -> Iterator[Callable[..., Proxy]]:
    """`tippingpoint proxy` (real HAProxy) in front of given backend ports."""
    started: list[Proxy] = []

    def _start(backend_ports: list[int], *args: str) -> Proxy:
        http_port, https_port = free_ports(2)
        directory = tempfile.mkdtemp(dir=tmp_path)
        proc = subprocess.Popen(
            tippingpoint_cmd(
                "proxy",
                "--backends",
                ",".join(f"127.0.0.1:{p}" for p in backend_ports),
                "--http",
                f"127.0.0.1:{http_port}",
                "--https",
                f"127.0.0.1:{https_port}",
                "--dir",
                directory,
                *args,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        server = Proxy(proc, directory, http_port, https_port)
        started.append(server)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((HOST, http_port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    message = proc.stderr.read().decode() if proc.stderr else ""
                    raise AssertionError(message) from None
                assert time.monotonic() < deadline, "proxy did not start"
                time.sleep(0.05)
        return server

    yield _start
    for server in started:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(30)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[BrokerFleet]:
    """A real mosquitto (`tippingpoint broker`'s fleet), plain and TLS, on free ports."""
    from tippingpoint.broker import BrokerConfig, BrokerError, BrokerFleet, find_mosquitto

    try:
        find_mosquitto()
    except BrokerError:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    ports = free_ports(2)
    fleet = BrokerFleet(BrokerConfig(port=ports[0], tls_port=ports[1]), tmp_path / "broker")
    fleet.start()
    yield fleet
    fleet.stop()
