"""The bench's report directory, rewritten after every experiment.

``summary.json``, ``index.html`` and ``monitor.jsonl`` are replaced atomically (written
beside, then renamed) each time an experiment ends, so a bench that is interrupted,
killed or fails half-way leaves a readable report of what it ran.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tippingpoint import tap
from tippingpoint.bench.checks import invariants
from tippingpoint.bench.topology import BenchFailure
from tippingpoint.hdr import Histogram
from tippingpoint.monitor import loopback
from tippingpoint.report.html import render_html
from tippingpoint.stream import Interval, Record

__all__ = ["BenchReport", "EntryHead", "ReportError", "monitor_series", "timeline"]


@dataclass(frozen=True, slots=True)
class EntryHead:
    """What every experiment's entry in summary.json starts with, before its kind's own
    part: which experiment it is, and the traits the report draws it by (its kind's
    row, its frontend's scheme). The report reads these, never the description."""

    id: int
    name: str
    kind: str
    description: str
    setup: str
    frontend: str
    shape: str
    """How the report draws it: "sweep", "attack", "hold" or "tls-cost"."""
    per_1000: bool
    costs_row: bool
    tls: bool
    noun: str
    """What its connections are called ("connections", "sessions", "WebSockets")."""
    ping: str
    """What answers a held connection's keep-alive."""
    keepalive: bool
    step_duration: float | None
    """Seconds a step lasts, for a kind that runs in steps."""
    worker_restarts: list[str]
    bench_cpu_pct: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ReportError(BenchFailure):
    """The report directory cannot be written; a one-line reason with the way out."""


def timeline(records: list[Record]) -> dict[str, Any]:
    """Per-second p50, p99 and throughput of an attack's interval records (all processes);
    on a cluster of several client machines, the throughput of each too (``hosts``)."""
    seconds: dict[float, list[Any]] = {}
    for record in records:
        if isinstance(record, Interval):
            second = seconds.setdefault(record.t, [Histogram(), 0, 1.0, {}])
            second[0].add(record.histogram("latency"))
            second[1] += record.done
            second[2] = record.dur or 1.0
            second[3][record.host] = second[3].get(record.host, 0) + record.done
    return timeline_of(seconds)


def timeline_of(seconds: dict[float, list[Any]]) -> dict[str, Any]:
    """:func:`timeline` of seconds already gathered: t -> [latency histogram, completed,
    duration, completed per client machine] (the live page keeps them so)."""
    out: dict[str, Any] = {"t": [], "p50_ms": [], "p99_ms": [], "rate": []}
    hosts = sorted({h for second in seconds.values() for h in second[3] if h})
    by_host: dict[str, list[float]] = {h: [] for h in hosts}
    for t in sorted(seconds):
        latency, done, dur, per_host = seconds[t]
        p50, p99 = latency.percentiles([50, 99])
        out["t"].append(t)
        out["p50_ms"].append(p50 / 1000)
        out["p99_ms"].append(p99 / 1000)
        out["rate"].append(done / dur)
        for h in hosts:
            by_host[h].append(per_host.get(h, 0) / dur)
    if len(hosts) > 1:
        out["hosts"] = by_host
    return out


def monitor_series(samples: list[dict[str, Any]]) -> dict[str, Any]:
    roles: dict[str, dict[str, list[float]]] = {}
    for s in samples:
        for name, r in s.get("roles", {}).items():
            roles.setdefault(name, {"cpu_pct": [], "rss_mib": []})
            roles[name]["cpu_pct"].append(r["cpu_pct"])
            roles[name]["rss_mib"].append(round(r["rss_kib"] / 1024, 1))
    return {
        "t": [s["t"] for s in samples],
        "tcp_established": [s["tcp_established"] for s in samples],
        "mem_used_mib": [round(s["mem_used_kib"] / 1024, 1) for s in samples],
        "rx_packets": [loopback(s)["rx_packets_per_s"] for s in samples],
        "tx_packets": [loopback(s)["tx_packets_per_s"] for s in samples],
        "roles": roles,
        "hosts": host_series(samples),
    }


def host_series(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each lab host's series on the bench's time axis, as Ganglia drew a machine: CPU
    busy and steal per core, load, memory used, TCP established, packets in and out
    (every interface), each role's CPU."""
    hosts: dict[str, dict[str, Any]] = {}
    for s in samples:
        for name, h in s.get("hosts", {}).items():
            series = hosts.setdefault(
                name,
                {"t": [], "cpus": {}, "steal": {}, "load1": [], "mem_used_mib": [],
                 "tcp_established": [], "rx_packets": [], "tx_packets": [], "roles": {}},
            )  # fmt: skip
            n = len(series["t"])
            series["t"].append(s["t"])
            for core, use in h.get("cpus", {}).items():
                series["cpus"].setdefault(core, [None] * n).append(use["busy_pct"])
                series["steal"].setdefault(core, [None] * n).append(use["steal_pct"])
            series["load1"].append(h.get("load1"))
            series["mem_used_mib"].append(round(h.get("mem_used_kib", 0) / 1024, 1))
            series["tcp_established"].append(h.get("tcp_established", 0))
            ifaces = h.get("interfaces", {}).values()
            series["rx_packets"].append(round(sum(i["rx_packets_per_s"] for i in ifaces)))
            series["tx_packets"].append(round(sum(i["tx_packets_per_s"] for i in ifaces)))
            for role, r in h.get("roles", {}).items():
                series["roles"].setdefault(role, [None] * n).append(r["cpu_pct"])
            for column in (*series["cpus"].values(), *series["steal"].values(),
                           *series["roles"].values()):  # fmt: skip
                column += [None] * (n + 1 - len(column))
    return hosts


def knee_marks(
    experiments: list[dict[str, Any]], samples: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Where each sweep's tipping point ran on the monitor's time axis: the first
    sample of its knee step."""
    marks = []
    for exp in experiments:
        sweep, span = exp.get("sweep"), exp.get("monitor_t")
        if not sweep or not span or not sweep.get("tipping_point"):
            continue
        closed = sweep.get("model") == "closed"
        key, knee = ("connections", sweep["knee_connections"]) if closed else (
            "offered", sweep["tipping_point"])  # fmt: skip
        at = [s["t"] for s in samples if span[0] <= s["t"] <= span[1] and s.get(key) == knee]
        if at:
            marks.append({"name": exp["name"], "t": at[0], "knee": sweep["tipping_point"]})
    return marks


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk keeps the last whole report, not a part
        raise


@dataclass
class BenchReport:
    out: Path
    title: str
    machine: str
    summary: list[list[Any]] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    config: str = ""
    failure: str | None = None
    """Why the bench stopped early (shown at the top of the report)."""
    setups: list[str] = field(default_factory=list)
    """The names of a matrix scenario's setups, in order (none: one setup)."""
    placement: list[dict[str, Any]] = field(default_factory=list)
    """Each role's PIDs, threads and CPUs, asked and read back from /proc."""
    running: str = ""
    """The experiment running now (or last)."""
    hosts: Callable[[], list[dict[str, Any]]] | None = None
    """A lab's hosts and the roles each carries (see :meth:`tippingpoint.bench.lab.Lab.table`)."""

    @property
    def warnings(self) -> list[str]:
        """Where the figures contradict what physics guarantees."""
        return invariants(self.experiments)

    def add(self, row: list[Any], entry: dict[str, Any]) -> None:
        self.summary.append(row)
        self.experiments.append(entry)
        self.write()

    @property
    def data(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "machine": self.machine,
            "summary": self.summary,
            "experiments": self.experiments,
            "monitor": monitor_series(self.samples),
            "config": self.config,
            "failure": self.failure,
            "setups": self.setups,
            "placement": self.placement,
            "warnings": self.warnings,
            "hosts": self.hosts() if self.hosts is not None else [],
            "marks": knee_marks(self.experiments, self.samples),
        }

    def write(self) -> None:
        """Replace the report files with what has run so far; :class:`ReportError` when
        the directory cannot be written."""
        if tap.attached():
            tap.report(self.data)
        try:
            self._write()
        except OSError as e:
            where = e.filename or self.out
            raise ReportError(
                f"cannot write the report ({where}): {e.strerror or e}: free space or "
                "choose another -o"
            ) from None

    def _write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        _replace(
            self.out / "summary.json",
            json.dumps(
                {
                    "title": self.title,
                    "machine": self.machine,
                    "summary": self.summary,
                    "experiments": self.experiments,
                    "failure": self.failure,
                    "setups": self.setups,
                    "placement": self.placement,
                    "warnings": self.warnings,
                    "hosts": self.hosts() if self.hosts is not None else [],
                    "written": time.strftime("%Y-%m-%d %H:%M:%S"),
                },
                default=str,
            ),
        )
        _replace(self.out / "monitor.jsonl", "".join(json.dumps(s) + "\n" for s in self.samples))
        _replace(self.out / "index.html", render_html(self.data))
