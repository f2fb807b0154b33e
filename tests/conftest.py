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

import pytest

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
