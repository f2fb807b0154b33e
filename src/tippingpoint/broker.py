"""mosquitto as the real broker: configuration written, checked, run and stopped.

mosquitto is one process with one event loop, so the open-file limit caps its
connections (20,000 descriptors: a little under 20,000 sessions). A plan that needs
more runs several instances, each on its own port (``port``, ``port + 1``...; mosquitto
does not share a port with SO_REUSEPORT), and a client spreads its sessions over them,
as it spreads HTTP connections over backend ports.
"""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tippingpoint.certs import make_certificate
from tippingpoint.listeners import PortBusy, check_free
from tippingpoint.placement import PlacementError, spawn, verify
from tippingpoint.procs import die_with_parent

__all__ = [
    "BrokerConfig",
    "BrokerError",
    "BrokerFleet",
    "SysWatcher",
    "find_mosquitto",
    "render",
]

_RESERVED_FDS = 64
"""Descriptors a mosquitto process keeps for itself (listeners, log, epoll...)."""


class BrokerError(Exception):
    """A one-line reason, with the fix where there is one."""


def find_mosquitto(binary: str | None = None) -> str:
    path = shutil.which(binary or "mosquitto") or (
        "/usr/sbin/mosquitto"
        if binary is None and os.access("/usr/sbin/mosquitto", os.X_OK)
        else None
    )
    if path is None:
        where = f"{binary!r} is not an executable" if binary else "mosquitto is not installed"
        raise BrokerError(
            f"{where}: install it (Debian: apt-get install mosquitto) or give --mosquitto-bin PATH"
        )
    return path


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    """MQTT port of the first instance; instance i listens on ``port + i``."""
    tls_port: int | None = None
    """MQTT over TLS (mqtts) port of the first instance, likewise."""
    instances: int = 1
    max_connections: int | None = None
    """Sessions per instance (default: as many as its open-file limit allows)."""
    max_keepalive: int = 65535
    max_queued: int = 100_000
    """Messages queued per session before mosquitto drops (it drops QoS 0 first)."""
    sys_interval: int = 1
    """Seconds between ``$SYS`` updates (its message counters)."""
    key_type: str = "ecdsa"

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise ValueError("--instances must be >= 1")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("--max-connections must be >= 1")

    def ports(self) -> list[int]:
        return [self.port + i for i in range(self.instances)]

    def tls_ports(self) -> list[int]:
        if self.tls_port is None:
            return []
        return [self.tls_port + i for i in range(self.instances)]


def capacity(nofile: int) -> int:
    """Sessions one mosquitto process can hold under an open-file limit."""
    return max(1, nofile - _RESERVED_FDS)


def instances_for(sessions: int, nofile: int) -> int:
    """mosquitto processes needed to hold ``sessions``."""
    return -(-sessions // capacity(nofile))


def render(config: BrokerConfig, index: int, cert: Path | None, key: Path | None) -> str:
    """One instance's mosquitto.conf (mosquitto 2.0 syntax)."""
    lines = [
        "# Written by tippingpoint broker.",
        # Started as root, mosquitto would switch to its own user, which cannot read the
        # certificate written 0600 in a private directory: it stays the user that runs it.
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
        "per_listener_settings false",
        "allow_anonymous true",
        "persistence false",
        f"max_keepalive {config.max_keepalive}",
        f"max_queued_messages {config.max_queued}",
        f"sys_interval {config.sys_interval}",
        "connection_messages false",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_timestamp true",
        f"listener {config.port + index} {config.host}",
        f"max_connections {config.max_connections or -1}",
    ]
    if config.tls_port is not None:
        assert cert is not None and key is not None
        lines += [
            f"listener {config.tls_port + index} {config.host}",
            f"max_connections {config.max_connections or -1}",
            f"certfile {cert}",
            f"keyfile {key}",
        ]
    return "\n".join(lines) + "\n"


def _child_setup(parent: int) -> None:
    die_with_parent(parent)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class BrokerFleet:
    """``config.instances`` mosquitto processes, their files in ``workdir``; each on
    ``cpus`` when given (set in the child before exec, read back once it accepts)."""

    def __init__(
        self,
        config: BrokerConfig,
        workdir: Path,
        binary: str | None = None,
        cpus: tuple[int, ...] | None = None,
    ) -> None:
        self.config = config
        self.cpus = cpus
        self.workdir = Path(workdir).absolute()
        self.binary = find_mosquitto(binary)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cert: Path | None = None
        """The certificate clients trust with ``--cacert`` (with a TLS port)."""
        self.log_paths = [self.workdir / f"mosquitto-{i}.log" for i in range(config.instances)]

    def check(self) -> None:
        """Refuse what cannot work before starting anything: busy ports, and more
        sessions per instance than its open-file limit allows."""
        config = self.config
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        most = capacity(hard)
        if config.max_connections is not None and config.max_connections > most:
            need = instances_for(config.max_connections * config.instances, hard)
            raise BrokerError(
                f"mosquitto is one process, and the open-file limit ({hard:,}) caps it at "
                f"{most:,} sessions: give --instances {need} with --max-connections "
                f"{-(-config.max_connections * config.instances // need):,}"
            )
        try:
            check_free(
                config.host,
                config.ports() + config.tls_ports(),
                "broker",
                None,
                "choose other ports",
            )
        except PortBusy as e:
            raise BrokerError(str(e)) from None

    def write_configs(self) -> list[Path]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        key = None
        if self.config.tls_port is not None:
            self.cert, key, _ = make_certificate(self.workdir / "tls", self.config.key_type)
        paths = []
        for i in range(self.config.instances):
            path = self.workdir / f"mosquitto-{i}.conf"
            path.write_text(render(self.config, i, self.cert, key))
            paths.append(path)
        return paths

    def start(self, timeout: float = 10.0) -> None:
        self.check()
        paths = self.write_configs()
        try:
            for i, path in enumerate(paths):
                self.procs.append(self._spawn(i, path))
            for i, proc in enumerate(self.procs):
                self._wait_ready(i, proc, timeout)
                if self.cpus is not None:
                    verify(f"mosquitto instance {i}", [proc.pid], self.cpus)
        except PlacementError as e:
            self.stop()
            raise BrokerError(str(e)) from None
        except BaseException:
            self.stop()
            raise

    def _spawn(self, i: int, path: Path) -> subprocess.Popen[bytes]:
        parent = os.getpid()
        log = open(self.log_paths[i], "wb")  # noqa: SIM115
        try:
            args = [self.binary, "-c", str(path)]
            return spawn(args, self.cpus, "mosquitto", log, lambda: _child_setup(parent))
        except PlacementError as e:
            raise BrokerError(str(e)) from None
        finally:
            log.close()

    def _wait_ready(self, i: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ports = [self.config.port + i]
        if self.config.tls_port is not None:
            ports.append(self.config.tls_port + i)
        while True:
            if proc.poll() is not None:
                raise BrokerError(
                    f"mosquitto instance {i} exited with code {proc.returncode}: "
                    + self.log_tail(i)
                    + f" (configuration: {self.workdir / f'mosquitto-{i}.conf'})"
                )
            if all(_accepts(self.config.host, port) for port in ports):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"mosquitto instance {i} does not accept on {self.config.host} ports "
                    f"{ports} after {timeout:.0f} s: {self.log_tail(i)}"
                )
            time.sleep(0.05)

    def log_tail(self, i: int) -> str:
        try:
            lines = self.log_paths[i].read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(empty log)"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def run(self) -> bool:
        """Keep the brokers up until SIGINT/SIGTERM (True) or until one exits (False);
        stops them before returning."""
        stop = False

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal stop
            stop = True

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop and all(p.poll() is None for p in self.procs):
                time.sleep(0.2)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            self.stop()
        return stop

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (mosquitto closes its sessions and exits), then SIGKILL."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class SysWatcher:
    """mosquitto's ``$SYS`` counters, kept current by a thread subscribed to
    ``$SYS/broker/#`` (a plain MQTT 3.1.1 session speaking this package's codec).
    mosquitto publishes them every ``sys_interval`` seconds (1 s with ``tippingpoint
    broker``, 10 s by default)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.values: dict[str, str] = {}
        self.error: str | None = None
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"$SYS {port}")
        self._thread.start()

    def _run(self) -> None:
        from tippingpoint.wire import mqtt as m

        try:
            sock = socket.create_connection((self.host, self.port), timeout=5)
            self._sock = sock
            sock.sendall(m.encode_connect(m.Connect(f"tippingpoint-watch-{os.getpid()}", 4, 60)))
            sock.sendall(m.encode_subscribe(1, [("$SYS/broker/#", 0)], 4))
            sock.settimeout(30)
            reader = m.Reader(4)
            while not self._stop.is_set():
                data = sock.recv(65536)
                if not data:
                    break
                for packet in reader.feed(data):
                    if isinstance(packet, m.Publish):
                        key = packet.topic.removeprefix("$SYS/broker/")
                        self.values[key] = packet.payload.decode("utf-8", "replace")
                if reader.error is not None:
                    self.error = reader.error.message
                    break
        except OSError as e:
            if not self._stop.is_set():
                self.error = f"{type(e).__name__}: {e}"

    def number(self, key: str) -> float | None:
        try:
            return float(self.values[key])
        except (KeyError, ValueError):
            return None

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
