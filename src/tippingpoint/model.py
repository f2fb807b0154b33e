"""Plain values shared by the load generator's parts: the attack plan and its shards."""

from __future__ import annotations

from dataclasses import dataclass, field

from tippingpoint.pacer import Pacer, Segment
from tippingpoint.targets import Target

__all__ = ["AttackConfig", "Shard", "TLSOptions"]


@dataclass(frozen=True, slots=True)
class TLSOptions:
    insecure: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None
    resume: bool = False


@dataclass(frozen=True, slots=True)
class AttackConfig:
    """Everything one attack needs; one value shared by every process."""

    targets: tuple[Target, ...]
    rate: float = 50.0
    """Requests per second; 0 means the closed model (``connections`` loops)."""
    pace: tuple[Segment, ...] = ()
    """A step/ramp plan; when given it replaces ``rate``."""
    duration: float | None = None
    requests: int | None = None
    connections: int = 10
    """Closed model: connections each sending as soon as its last response arrived."""
    max_connections: int | None = None
    keepalive: bool = True
    laddrs: tuple[str, ...] = ()
    timeout: float = 30.0
    tls: TLSOptions = field(default_factory=TLSOptions)
    processes: int = 1
    interval: float = 1.0
    records: str | None = None

    @property
    def closed(self) -> bool:
        return not self.pace and self.rate == 0

    def pacer(self) -> Pacer:
        if self.pace:
            return Pacer(list(self.pace), self.duration, self.requests)
        return Pacer.constant(self.rate, self.duration, self.requests)

    def longest_server_delay(self) -> float:
        """Seconds the targets' ``sleep``/``times`` headers can make the server wait."""
        worst = 0.0
        for target in self.targets:
            values = {name.lower(): value for name, value in target.headers}
            try:
                sleep = int(values.get("sleep", "-1"))
                times = int(values.get("times", "0"))
            except ValueError:
                continue
            if sleep >= 0 or "times" in values:
                worst = max(worst, (max(sleep, 0) + 1) * (times + 1) / 1000.0)
        return worst


@dataclass(frozen=True, slots=True)
class Shard:
    """One process's part of an attack."""

    index: int
    count: int
    start_ns: int
    """The attack's time zero on CLOCK_MONOTONIC (shared by every process)."""
    start_epoch: float
    max_connections: int
    laddrs: tuple[str, ...]
    closed_connections: int = 0
