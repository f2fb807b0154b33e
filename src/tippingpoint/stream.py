"""The result stream: its record types, encoded and decoded here and nowhere else.

A stream is JSON lines: an ``attack`` :class:`Header`, then :class:`Interval` records (one
per process per interval, with HDR histograms); or a hold's ``hold-start``
:class:`HoldHeader`, then its :class:`HoldRecord` lines.
``report`` also reads Vegeta's JSON results (:class:`VegetaResult`). The bytes are those
of version 1 (keys, order, separators), so streams written before these types existed
decode as they always did, and streams written now read in older versions.

Writers build a record and :func:`encode` it once, in the process that measured it;
readers :func:`decode` each line once and pass the typed record on. Lines are parsed
with msgspec, 5-7 times faster than the standard library's json here (see
benchmarks/stream_decode.py and docs/PERFORMANCE.md), which matters when ``report``
reads millions of Vegeta results; they are written with json, whose bytes define
version 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from tippingpoint.hdr import DEFAULT_HIGHEST, Histogram

__all__ = [
    "METRICS",
    "ErrorCount",
    "Header",
    "HoldHeader",
    "HoldRecord",
    "Interval",
    "NotJSON",
    "Record",
    "StreamError",
    "Truncated",
    "VegetaResult",
    "decode",
    "encode",
]

METRICS: Final = ("latency", "service", "ttfb", "connect", "lateness")
"""Histograms in each interval record (microseconds):

latency: intended send time -> last byte (coordinated-omission free);
service: actual write -> last byte; ttfb: actual write -> first byte;
connect: TCP (and TLS) connection set-up; lateness: how late each send left.
"""

_LAYOUT: Final = {"lowest": 1, "highest": DEFAULT_HIGHEST, "digits": 3}
"""The histograms' layout (microseconds), as the header records it."""


class StreamError(ValueError):
    """A line that is not a record of a known type."""


class NotJSON(StreamError):
    """A line that is not a JSON object at all (a cut last line is one)."""


@dataclass(slots=True)
class ErrorCount:
    count: int
    sample: str


@dataclass(slots=True)
class Header:
    """``"type": "attack"``: the plan of one attack, first in its stream."""

    start: float
    """Epoch seconds of the common start (time zero of every interval)."""
    targets: list[str]
    rate: float | None
    pace: list[list[float]]
    closed_connections: int | None
    duration: float | None
    requests: int | None
    timeout: float
    keepalive: bool
    processes: int
    max_connections_per_process: int
    tool: str = ""
    version: int = 1
    unit: str = "us"
    histogram: dict[str, int] = field(default_factory=lambda: dict(_LAYOUT))
    cluster: list[dict[str, Any]] = field(default_factory=list)
    """A run on a cluster: per worker, its host, shard and clock offset (absent locally)."""


@dataclass(slots=True)
class Interval:
    """One process's measurements of one interval."""

    process: int
    t: float
    """Seconds from the start to the interval's beginning."""
    dur: float
    sent: int = 0
    done: int = 0
    queued: int = 0
    missed: int = 0
    """Hits the pacing loop did not send: they were a second late when their turn came
    (the generator could not offer the rate)."""
    codes: dict[int, int] = field(default_factory=dict)
    errors: dict[str, ErrorCount] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    opened: int = 0
    closed: int = 0
    open: int = 0
    tls_resumed: int = 0
    in_flight: int = 0
    cpu_us: int | None = None
    """The process's CPU time (user + system) in the interval; None in old streams."""
    cpus_busy: float = -1.0
    """The share of the interval the CPUs the process may run on were busy, whoever for
    (the kernel's network work and other processes included); -1 where unknown."""
    latency_sum_us: int = 0
    first_send: int = -1
    """Microseconds from the start, or -1 for none (also ``last_send``, ``last_done``)."""
    last_send: int = -1
    last_done: int = -1
    hist: dict[str, Any] = field(default_factory=dict)
    """Metric -> encoded histogram (a :class:`Histogram` while a writer still encodes)."""
    final: bool = False
    interrupted: bool = False
    host: str = ""
    """The machine that measured it (a run on a cluster; empty locally)."""

    def histogram(self, metric: str) -> Histogram:
        encoded = self.hist.get(metric)
        if isinstance(encoded, Histogram):
            return encoded
        return Histogram.decode(encoded) if encoded else Histogram()


@dataclass(slots=True)
class HoldRecord:
    """``"type": "hold"``: one process of a hold, once a second (cumulative counts)."""

    process: int
    t: float
    established: int
    opened: int
    lost: int
    failed: dict[str, ErrorCount] = field(default_factory=dict)
    codes: dict[int, int] = field(default_factory=dict)
    rss_kib: int = 0
    hist: dict[str, str] = field(default_factory=dict)
    """``connect`` (TCP connect) and ``request`` latency of this second, and ``lateness``
    (connect starts against the plan) and ``tls`` (handshakes), encoded."""
    final: bool = False
    interrupted: bool = False
    cpu_us: int = 0
    """The process's CPU time in this second (absent from streams written before)."""
    lost_reasons: dict[str, int] = field(default_factory=dict)
    """MQTT: sessions the broker closed with a DISCONNECT, by its reason (cumulative)."""
    received: int = 0
    """MQTT: messages the held sessions received (cumulative)."""
    cpus_busy: float = -1.0
    """The share of this second the CPUs the process may run on were busy, whoever for
    (the kernel's network work included); -1 where unknown."""
    retried: int = 0
    """Opens that failed and were tried again (cumulative; ``hold --retries``)."""
    host: str = ""
    """The client machine (a cluster run; absent locally)."""

    def histogram(self, metric: str) -> Histogram:
        encoded = self.hist.get(metric)
        return Histogram.decode(encoded) if encoded else Histogram()


@dataclass(slots=True)
class HoldHeader:
    """``"type": "hold-start"``: the plan of one hold, first in its stream (absent from
    streams written before it)."""

    start: float
    """Epoch seconds of the common start (``t`` of the hold records counts from it)."""
    target: str
    connections: int
    connect_rate: float
    duration: float
    request_every: float | None
    processes: int
    tool: str = ""
    version: int = 1
    cluster: list[dict[str, Any]] = field(default_factory=list)
    """A hold on a cluster: per worker, its host, shards and clock offset."""


@dataclass(slots=True)
class VegetaResult:
    """One request of ``vegeta encode --to json``."""

    latency_ns: int
    code: int
    timestamp: str
    error: str = ""
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass(slots=True)
class Truncated:
    """The last line of a stream, cut by a crash mid-write."""

    line: int


Record = Header | Interval | HoldHeader | HoldRecord | VegetaResult | Truncated


# Encoding: the version 1 layout, key for key.


def _errors(errors: dict[str, ErrorCount]) -> dict[str, dict[str, Any]]:
    return {k: {"count": v.count, "sample": v.sample} for k, v in errors.items()}


def _interval(r: Interval) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "interval",
        "process": r.process,
        "t": r.t,
        "dur": r.dur,
        "sent": r.sent,
        "done": r.done,
        "queued": r.queued,
        "codes": {str(k): v for k, v in r.codes.items()},
        "errors": _errors(r.errors),
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "conns": {"opened": r.opened, "closed": r.closed, "open": r.open,
                  "tls_resumed": r.tls_resumed},
        "in_flight": r.in_flight,
        "cpu_us": r.cpu_us,
        "latency_sum_us": r.latency_sum_us,
        "first_send": r.first_send,
        "last_send": r.last_send,
        "last_done": r.last_done,
        "hist": {k: v.encode() if isinstance(v, Histogram) else v for k, v in r.hist.items()},
    }  # fmt: skip
    if r.cpu_us is None:
        del out["cpu_us"]
    if r.missed:
        out["missed"] = r.missed
    if r.cpus_busy >= 0:
        out["cpus_busy"] = r.cpus_busy
    if r.final:
        out["final"] = True
    if r.interrupted:
        out["interrupted"] = True
    if r.host:
        out["host"] = r.host
    return out


def _header(r: Header) -> dict[str, Any]:
    return {
        "type": "attack",
        "version": r.version,
        "tool": r.tool,
        "start": r.start,
        "targets": r.targets,
        "rate": r.rate,
        "pace": r.pace,
        "closed_connections": r.closed_connections,
        "duration": r.duration,
        "requests": r.requests,
        "timeout": r.timeout,
        "keepalive": r.keepalive,
        "processes": r.processes,
        "max_connections_per_process": r.max_connections_per_process,
        "unit": r.unit,
        "histogram": r.histogram,
        **({"cluster": r.cluster} if r.cluster else {}),
    }


def _hold(r: HoldRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "hold",
        "process": r.process,
        "t": r.t,
        "established": r.established,
        "opened": r.opened,
        "lost": r.lost,
        "failed": _errors(r.failed),
        "codes": {str(k): v for k, v in r.codes.items()},
        "rss_kib": r.rss_kib,
        "hist": r.hist,
    }
    if r.cpu_us:
        out["cpu_us"] = r.cpu_us
    if r.lost_reasons:
        out["lost_reasons"] = r.lost_reasons
    if r.received:
        out["received"] = r.received
    if r.cpus_busy >= 0:
        out["cpus_busy"] = r.cpus_busy
    if r.retried:
        out["retried"] = r.retried
    if r.host:
        out["host"] = r.host
    if r.final:
        out["final"] = True
        out["interrupted"] = r.interrupted
    return out


def _hold_header(r: HoldHeader) -> dict[str, Any]:
    return {
        "type": "hold-start",
        "version": r.version,
        "tool": r.tool,
        "start": r.start,
        "target": r.target,
        "connections": r.connections,
        "connect_rate": r.connect_rate,
        "duration": r.duration,
        "request_every": r.request_every,
        "processes": r.processes,
        **({"cluster": r.cluster} if r.cluster else {}),
    }


def encode(record: Header | Interval | HoldHeader | HoldRecord) -> bytes:
    """One line of the stream, newline included."""
    if isinstance(record, Interval):
        data = _interval(record)
    elif isinstance(record, HoldRecord):
        data = _hold(record)
    elif isinstance(record, HoldHeader):
        data = _hold_header(record)
    else:
        data = _header(record)
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


# Decoding: each line once; missing keys (older streams) take their defaults.


def _error_counts(raw: Any) -> dict[str, ErrorCount]:
    return {
        str(k): ErrorCount(int(v.get("count", 0)), str(v.get("sample", "")))
        for k, v in (raw or {}).items()
    }


def _codes(raw: Any) -> dict[int, int]:
    return {int(k): int(v) for k, v in (raw or {}).items()}


def _decode_interval(d: dict[str, Any]) -> Interval:
    conns = d.get("conns") or {}
    cpu = d.get("cpu_us")
    return Interval(
        process=int(d.get("process", 0)),
        t=float(d["t"]),
        dur=float(d.get("dur", 0.0)),
        sent=int(d.get("sent", 0)),
        done=int(d.get("done", 0)),
        queued=int(d.get("queued", 0)),
        missed=int(d.get("missed", 0)),
        codes=_codes(d.get("codes")),
        errors=_error_counts(d.get("errors")),
        bytes_in=int(d.get("bytes_in", 0)),
        bytes_out=int(d.get("bytes_out", 0)),
        opened=int(conns.get("opened", 0)),
        closed=int(conns.get("closed", 0)),
        open=int(conns.get("open", 0)),
        tls_resumed=int(conns.get("tls_resumed", 0)),
        in_flight=int(d.get("in_flight", 0)),
        cpu_us=None if cpu is None else int(cpu),
        cpus_busy=float(d.get("cpus_busy", -1.0)),
        latency_sum_us=int(d.get("latency_sum_us", 0)),
        first_send=-1 if d.get("first_send") is None else int(d["first_send"]),
        last_send=-1 if d.get("last_send") is None else int(d["last_send"]),
        last_done=-1 if d.get("last_done") is None else int(d["last_done"]),
        hist={str(k): v for k, v in (d.get("hist") or {}).items()},
        final=bool(d.get("final", False)),
        interrupted=bool(d.get("interrupted", False)),
        host=str(d.get("host", "")),
    )


def _decode_header(d: dict[str, Any]) -> Header:
    return Header(
        start=float(d.get("start", 0.0)),
        targets=list(d.get("targets") or []),
        rate=None if d.get("rate") is None else float(d["rate"]),
        pace=[list(s) for s in d.get("pace") or []],
        closed_connections=d.get("closed_connections"),
        duration=d.get("duration"),
        requests=d.get("requests"),
        timeout=float(d.get("timeout", 30.0)),
        keepalive=bool(d.get("keepalive", True)),
        processes=int(d.get("processes", 1)),
        max_connections_per_process=int(d.get("max_connections_per_process", 0)),
        tool=str(d.get("tool", "")),
        version=int(d.get("version", 1)),
        unit=str(d.get("unit", "us")),
        histogram=dict(d.get("histogram") or _LAYOUT),
        cluster=list(d.get("cluster") or []),
    )


def _decode_hold(d: dict[str, Any]) -> HoldRecord:
    return HoldRecord(
        process=int(d.get("process", 0)),
        t=float(d["t"]),
        established=int(d.get("established", 0)),
        opened=int(d.get("opened", 0)),
        lost=int(d.get("lost", 0)),
        failed=_error_counts(d.get("failed")),
        codes=_codes(d.get("codes")),
        rss_kib=int(d.get("rss_kib", 0)),
        hist={str(k): str(v) for k, v in (d.get("hist") or {}).items()},
        final=bool(d.get("final", False)),
        interrupted=bool(d.get("interrupted", False)),
        cpu_us=int(d.get("cpu_us", 0)),
        lost_reasons={str(k): int(v) for k, v in (d.get("lost_reasons") or {}).items()},
        received=int(d.get("received", 0)),
        cpus_busy=float(d.get("cpus_busy", -1.0)),
        retried=int(d.get("retried", 0)),
        host=str(d.get("host", "")),
    )


def _decode_hold_header(d: dict[str, Any]) -> HoldHeader:
    every = d.get("request_every")
    return HoldHeader(
        start=float(d.get("start", 0.0)),
        target=str(d.get("target", "")),
        connections=int(d.get("connections", 0)),
        connect_rate=float(d.get("connect_rate", 0.0)),
        duration=float(d.get("duration", 0.0)),
        request_every=None if every is None else float(every),
        processes=int(d.get("processes", 1)),
        tool=str(d.get("tool", "")),
        version=int(d.get("version", 1)),
        cluster=list(d.get("cluster") or []),
    )


def _decode_vegeta(d: dict[str, Any]) -> VegetaResult:
    return VegetaResult(
        latency_ns=int(d.get("latency", 0)),
        code=int(d.get("code", 0)),
        timestamp=str(d.get("timestamp", "")),
        error=str(d.get("error") or ""),
        bytes_in=int(d.get("bytes_in", 0)),
        bytes_out=int(d.get("bytes_out", 0)),
    )


_json_decode = msgspec.json.Decoder().decode

_DECODERS: dict[str, Callable[[dict[str, Any]], Header | Interval | HoldHeader | HoldRecord]] = {
    "interval": _decode_interval,
    "attack": _decode_header,
    "hold": _decode_hold,
    "hold-start": _decode_hold_header,
}


def decode(line: bytes | str) -> Header | Interval | HoldHeader | HoldRecord | VegetaResult:
    """One line, typed; :class:`StreamError` when it is not a record of a known type."""
    try:
        data = _json_decode(line)
    except ValueError:  # msgspec.DecodeError included
        raise NotJSON("not JSON") from None
    if not isinstance(data, dict):
        raise NotJSON("not a JSON object")
    kind = data.get("type")
    decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
    try:
        if decoder is not None:
            return decoder(data)
        if kind is None and "latency" in data and "code" in data:
            return _decode_vegeta(data)
    except (KeyError, TypeError, ValueError) as e:
        raise StreamError(f"a {kind} record with a bad field: {e}") from None
    raise StreamError(f"unknown record type {kind!r}")
