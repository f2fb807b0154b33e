"""Configuration of ``tippingpoint serve``: one frozen dataclass, validated once."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ServeConfig", "default_processes", "parse_cpus", "parse_hostport", "parse_ports"]


def default_processes() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_ports(spec: str) -> tuple[int, ...]:
    """``"8282-8291,9000"`` -> ``(8282, ..., 8291, 9000)``; raises ValueError with the fix."""
    ports: list[int] = []
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        low_s, sep, high_s = part.partition("-")
        try:
            low = int(low_s)
            high = int(high_s) if sep else low
        except ValueError:
            raise ValueError(
                f"bad port list {spec!r}: use numbers and ranges like 8282-8291,9000"
            ) from None
        if not (1 <= low <= high <= 65535):
            raise ValueError(f"bad port range {part!r}: ports go from 1 to 65535, low before high")
        ports.extend(p for p in range(low, high + 1) if p not in ports)
    if not ports:
        raise ValueError(f"bad port list {spec!r}: give at least one port, e.g. 8282")
    return tuple(ports)


def parse_cpus(spec: str, limit: int | None = 0) -> tuple[int, ...]:
    """``"0-1,3"`` -> ``(0, 1, 3)``: CPU numbers as taskset writes them, each one of
    this machine's (``limit`` None: of another machine's, checked there)."""
    cpus: list[int] = []
    for part in str(spec).replace(" ", "").split(","):
        low_s, sep, high_s = part.partition("-")
        if not low_s.isdigit() or (sep and not high_s.isdigit()):
            raise ValueError(f"bad CPU list {spec!r}: use numbers and ranges like 0-1,3")
        low, high = int(low_s), int(high_s) if sep else int(low_s)
        if high < low or (limit is not None and high >= (os.cpu_count() or 1)):
            raise ValueError(
                f"bad CPU list {spec!r}: this machine has CPUs 0-{(os.cpu_count() or 1) - 1}"
            )
        cpus.extend(c for c in range(low, high + 1) if c not in cpus)
    return tuple(cpus)


def parse_hostport(spec: str) -> tuple[str, int]:
    """``"127.0.0.1:8125"`` -> ``("127.0.0.1", 8125)``."""
    host, sep, port_s = spec.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValueError(f"bad address {spec!r}: use host:port, e.g. 127.0.0.1:8125")
    return host.strip("[]"), int(port_s)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything a backend worker needs; built by the CLI or by code."""

    host: str = "127.0.0.1"
    ports: tuple[int, ...] = (8282,)
    processes: int = 1
    idle_timeout: float = 3600.0
    header_timeout: float = 30.0
    max_header: int = 16 * 1024
    max_body: int = 16 * 1024 * 1024
    max_connections: int | None = None
    backlog: int = 4096
    loop: str = "auto"
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    statsd: tuple[str, int] | None = None
    statsd_metric: str = "tippingpoint.serve.requests"
    mqtt_ports: tuple[int, ...] = ()
    """Ports that speak MQTT (the ping/pong backend of ``server/mqtt.py``)."""
    mqtt_max_packet: int = 1024 * 1024
    ws: bool = False
    """Take WebSocket upgrades on the HTTP ports (``server/ws.py``)."""
    share_ports: bool = False
    """Start even where another process already listens on the ports (SO_REUSEPORT then
    splits the connections between them): for a second backend that joins on purpose."""
    cpus: tuple[int, ...] = ()
    """The CPUs the supervisor and every worker run on (read back once they are up);
    empty: where the command was started."""

    def __post_init__(self) -> None:
        if not self.ports and not self.mqtt_ports:
            raise ValueError("no ports: give --ports, --mqtt or both")
        if set(self.ports) & set(self.mqtt_ports):
            raise ValueError("a port cannot be both HTTP (--ports) and MQTT (--mqtt)")
        if self.mqtt_max_packet < 64:
            raise ValueError("--mqtt-max-packet must be >= 64 bytes")
        if self.processes < 1:
            raise ValueError("--processes must be >= 1")
        if self.idle_timeout <= 0 or self.header_timeout <= 0:
            raise ValueError("timeouts must be > 0 seconds")
        if self.max_header < 256:
            raise ValueError("--max-header-size must be >= 256 bytes")
        if self.max_body < 0:
            raise ValueError("--max-body-size must be >= 0")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("--max-connections must be >= 1")
        if self.loop not in ("auto", "uvloop", "asyncio"):
            raise ValueError("--loop must be auto, uvloop or asyncio")
