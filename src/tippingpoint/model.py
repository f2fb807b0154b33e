"""Plain values shared by the load generator's parts: the attack plan and its shards."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from tippingpoint.pacer import Pacer, Segment
from tippingpoint.targets import Target
from tippingpoint.wire import mqtt as m

__all__ = ["STAMP", "UNTIL", "AttackConfig", "MQTTOptions", "PublishConfig", "Shard", "TLSOptions"]

UNTIL: Final = ("ack", "echo", "delivery")
"""Where an MQTT message's latency ends."""
STAMP: Final = struct.Struct("<qq")
"""An echoed or delivered message's first payload bytes: hit number, intended send time
(ns after the start)."""


@dataclass(frozen=True, slots=True)
class TLSOptions:
    insecure: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None
    resume: bool = False


@dataclass(frozen=True, slots=True)
class MQTTOptions:
    version: int = 4
    keepalive: int = 60
    """Seconds; the session pings the broker this often when it has nothing else to say."""
    client_id: str = "tp-%p-%i"
    clean: bool = True
    username: str | None = None
    password: str | None = None
    subscribe: str | None = None
    """A topic filter pattern each session subscribes to (``%i``, ``%c``)."""
    subscribe_qos: int = 0
    session_expiry: int | None = None
    """MQTT 5: seconds the broker keeps the session after it closes."""
    receive_maximum: int | None = None
    """MQTT 5: QoS 1 and 2 messages the broker may send at once (our in-flight window)."""
    ws_path: str | None = None
    """MQTT over WebSocket (``--ws``): the path of the upgrade; None: MQTT over TCP."""

    def __post_init__(self) -> None:
        if self.version not in (4, 5):
            raise ValueError("MQTT version must be 3.1.1 (4) or 5")
        if not 0 <= self.keepalive <= 65535:
            raise ValueError("--keepalive must be within 0-65535 s")
        if self.subscribe_qos not in (0, 1, 2):
            raise ValueError("--qos must be 0, 1 or 2")

    def connect_packet(self, client_id: str) -> bytes:
        props: m.Properties = {}
        if self.version == 5:
            if self.session_expiry is not None:
                props[m.SESSION_EXPIRY] = self.session_expiry
            if self.receive_maximum is not None:
                props[m.RECEIVE_MAXIMUM] = self.receive_maximum
        password = self.password.encode() if self.password is not None else None
        return m.encode_connect(
            m.Connect(
                client_id,
                self.version,
                self.keepalive,
                self.clean,
                self.username,
                password,
                None,
                props,
            )
        )


MAX_PAYLOAD = 268_435_455 - 65_536
"""The largest MQTT payload asked for: a packet's remaining length, less room for the
longest topic and the properties."""


@dataclass(frozen=True, slots=True)
class PublishConfig:
    """What an ``mqtt://`` attack publishes, and where its latency ends."""

    options: MQTTOptions
    topic: str
    """Topic pattern (``%i``: the publishing session's number, ``%p``: the process)."""
    qos: int = 0
    payload_size: int = 64
    until: str = "ack"
    subscribers: int = 0
    inflight: int = 64
    retain: bool = False

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ValueError("--qos must be 0, 1 or 2")
        if self.until not in UNTIL:
            raise ValueError(f"--until must be one of {', '.join(UNTIL)}")
        if self.inflight < 1:
            raise ValueError("--inflight must be >= 1")
        if not 0 <= self.payload_size <= MAX_PAYLOAD:
            raise ValueError(
                f"--payload-size {self.payload_size}: give 0 to {MAX_PAYLOAD:,} bytes (an MQTT "
                "packet holds 268,435,455 with its topic)"
            )
        if self.until != "ack" and self.payload_size < STAMP.size:
            raise ValueError(
                f"--until {self.until} carries the send time in the payload: "
                f"--payload-size must be >= {STAMP.size}"
            )
        if self.until == "delivery":
            if self.subscribers < 1:
                raise ValueError("--until delivery needs subscribers: give --subscribers N")
            if "%i" not in self.topic:
                raise ValueError(
                    "--until delivery needs a topic per session: put %i in it, "
                    "e.g. mqtt://127.0.0.1:1883/devices/%i/data"
                )
        elif self.subscribers:
            raise ValueError("--subscribers goes with --until delivery")
        if self.until == "echo" and not self.topic.startswith("ping/"):
            raise ValueError(
                "--until echo needs a topic the backend answers: ping/..., "
                "e.g. mqtt://127.0.0.1:1883/ping/%i"
            )


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
    mqtt: PublishConfig | None = None
    """An ``mqtt://`` attack: what to publish (``connections`` is then the sessions)."""
    tick: float | None = None
    """Seconds: the pacing loop wakes at most once per tick and sends every hit due
    (``--tick``); None: each protocol's own ticks (``engine/schedule.py``)."""

    def ticks(self, default: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        """The pacing loop's ticks: ``--tick`` at every rate, else ``default``."""
        if not self.tick:
            return default
        return ((round(1 / self.tick), round(self.tick * 1e9)),)

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
