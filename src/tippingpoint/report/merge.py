"""Reading result streams and merging them exactly.

Input lines are JSON: an ``attack`` header, then ``interval`` records (one per
process per interval, with HDR histograms), from any number of files, processes or
machines. Vegeta's JSON result lines (``vegeta encode --to json``) are read too,
one request each. A truncated last line (a crash mid-write) is skipped with a
warning; any other bad line is an error naming file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from tippingpoint.engine.recorder import METRICS
from tippingpoint.hdr import Histogram
from tippingpoint.pacer import Pacer, Segment

__all__ = ["CPU_SATURATED", "InputError", "Summary", "read_records", "summarize", "windows"]

CPU_SATURATED = 0.95
"""A generator process that uses this share of its core has nothing left in reserve."""


class InputError(ValueError):
    """A result stream line that is neither a tippingpoint record nor a Vegeta result."""


@dataclass
class Summary:
    """Totals of any set of interval records; merging is exact (counts and histograms)."""

    hists: dict[str, Histogram] = field(default_factory=lambda: {m: Histogram() for m in METRICS})
    codes: dict[int, int] = field(default_factory=dict)
    errors: dict[str, list[Any]] = field(default_factory=dict)
    sent: int = 0
    done: int = 0
    queued: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    opened: int = 0
    closed: int = 0
    tls_resumed: int = 0
    latency_sum_us: int = 0
    cpu_us: int = 0
    """CPU time (user + system) the generator's processes used, where recorded."""
    cpu_wall_s: float = 0.0
    """The wall time those figures cover, summed over processes."""
    first_send: float | None = None
    """Epoch seconds of the earliest send."""
    last_send: float | None = None
    last_done: float | None = None
    planned: int | None = None
    offered_rate: float | None = None
    processes: int = 0
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    _vegeta_latency: list[int] = field(default_factory=list)

    # Derived figures (Vegeta's definitions)

    @property
    def requests(self) -> int:
        return self.done

    @property
    def attack_s(self) -> float:
        if self.first_send is None or self.last_send is None:
            return 0.0
        return max(self.last_send - self.first_send, 0.0)

    @property
    def wait_s(self) -> float:
        if self.last_send is None or self.last_done is None:
            return 0.0
        return max(self.last_done - self.last_send, 0.0)

    @property
    def successes(self) -> int:
        return sum(n for code, n in self.codes.items() if 200 <= code < 400)

    @property
    def success_ratio(self) -> float:
        return self.successes / self.done if self.done else 0.0

    @property
    def rate(self) -> float:
        return self.done / self.attack_s if self.attack_s > 0 else 0.0

    @property
    def throughput(self) -> float:
        total = self.attack_s + self.wait_s
        return self.successes / total if total > 0 else 0.0

    @property
    def latency_mean_us(self) -> float:
        h = self.hists["latency"]
        return self.latency_sum_us / h.total if h.total else 0.0

    @property
    def cpu_busy(self) -> float | None:
        """The share of its core each generator process used (mean), or None."""
        return self.cpu_us / 1e6 / self.cpu_wall_s if self.cpu_wall_s > 0 else None

    def saturation(self) -> tuple[bool, str]:
        """Was the generator the bottleneck? ``(saturated, one-line verdict)``."""
        lateness = self.hists["lateness"]
        p95, p99 = lateness.percentiles([95, 99]) if lateness.total else (0, 0)
        reasons = []
        if p95 > 1000:  # one stall of the machine moves p99, not p95
            reasons.append(f"p95 send lateness {p95 / 1000:.1f} ms")
        if self.planned and not self.interrupted and self.sent < 0.99 * self.planned:
            reasons.append(f"sent {self.sent} of {self.planned} planned requests")
        busy = self.cpu_busy
        if busy is not None and busy >= CPU_SATURATED:
            # A generator with no CPU left answers its responses late: its connections
            # stay busy longer and hits wait for them, which would look like the server.
            reasons.append(f"its processes used {busy * 100:.0f} % of their cores")
        if reasons and not self.offered_rate:  # closed model: there is no schedule
            return True, (
                "SATURATED: the generator is at the end of its CPU (" + "; ".join(reasons) + "): "
                "this maximum may be the client's, not the server's; add --processes "
                "or client machines"
            )
        if reasons:
            return True, (
                "SATURATED: the generator fell behind its schedule (" + "; ".join(reasons) + "): "
                "this run measures the client, not the server; add --processes "
                "or client machines"
            )
        cpu = f", {busy * 100:.0f} % of its cores" if busy is not None else ""
        return False, f"OK: sends kept to schedule (p99 lateness {p99 / 1000:.3f} ms{cpu})"

    # Merging

    def add_record(self, record: dict[str, Any], start: float) -> None:
        for name in METRICS:
            encoded = record.get("hist", {}).get(name)
            if encoded:
                h = Histogram.decode(encoded)
                self.hists[name].add(h)
        for code, n in record.get("codes", {}).items():
            self.codes[int(code)] = self.codes.get(int(code), 0) + int(n)
        for kind, entry in record.get("errors", {}).items():
            mine = self.errors.setdefault(kind, [0, entry.get("sample", "")])
            mine[0] += int(entry.get("count", 0))
        self.sent += int(record.get("sent", 0))
        self.done += int(record.get("done", 0))
        self.queued += int(record.get("queued", 0))
        if "cpu_us" in record:
            self.cpu_us += int(record["cpu_us"])
            self.cpu_wall_s += float(record.get("dur", 0.0))
        self.bytes_in += int(record.get("bytes_in", 0))
        self.bytes_out += int(record.get("bytes_out", 0))
        conns = record.get("conns", {})
        self.opened += int(conns.get("opened", 0))
        self.closed += int(conns.get("closed", 0))
        self.tls_resumed += int(conns.get("tls_resumed", 0))
        self.latency_sum_us += int(record.get("latency_sum_us", 0))
        if record.get("interrupted"):
            self.interrupted = True
        for key, pick in (("first_send", min), ("last_send", max), ("last_done", max)):
            value = record.get(key, -1)
            if value is not None and value >= 0:
                epoch = start + value / 1e6
                current = getattr(self, key)
                setattr(self, key, epoch if current is None else pick(current, epoch))

    def add_vegeta(self, result: dict[str, Any]) -> None:
        latency_us = int(result.get("latency", 0)) // 1000
        code = int(result.get("code", 0))
        stamp = _parse_time(str(result.get("timestamp", "")))
        self.sent += 1
        self.done += 1
        self.codes[code] = self.codes.get(code, 0) + 1
        error = result.get("error") or ""
        if error:
            entry = self.errors.setdefault("vegeta", [0, error])
            entry[0] += 1
        elif code:
            self._vegeta_latency.append(latency_us)
            self.latency_sum_us += latency_us
        self.bytes_in += int(result.get("bytes_in", 0))
        self.bytes_out += int(result.get("bytes_out", 0))
        end = stamp + latency_us / 1e6
        self.first_send = stamp if self.first_send is None else min(self.first_send, stamp)
        self.last_send = stamp if self.last_send is None else max(self.last_send, stamp)
        self.last_done = end if self.last_done is None else max(self.last_done, end)

    def finish(self) -> Summary:
        """Fold per-request values (Vegeta input) into the histograms."""
        if self._vegeta_latency:
            self.hists["latency"].record_many(self._vegeta_latency)
            self._vegeta_latency = []
        return self

    def add_header(self, header: dict[str, Any]) -> None:
        self.processes += int(header.get("processes", 1))
        pace = [Segment(*s) for s in header.get("pace") or []]
        rate = header.get("rate")
        duration, requests = header.get("duration"), header.get("requests")
        try:
            if pace:
                pacer = Pacer(pace, duration, requests)
            elif rate:
                pacer = Pacer.constant(rate, duration, requests)
            else:
                return
        except ValueError:
            return
        self.planned = (self.planned or 0) + pacer.total_hits()
        offered = pacer.total_hits() / pacer.end if pacer.end > 0 else 0.0
        self.offered_rate = (self.offered_rate or 0.0) + offered


def _parse_time(text: str) -> float:
    try:
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        if "." in text:  # Python accepts at most 6 fractional digits
            head, _, rest = text.partition(".")
            digits = "".join(c for c in rest if c.isdigit())
            zone = rest[len(digits) :]
            text = f"{head}.{digits[:6]}{zone}"
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InputError(f"bad timestamp {text!r}") from None


def read_records(sources: Iterable[tuple[str, IO[str]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(source name, record)`` for every line of every source."""
    for name, stream in sources:
        lines = stream.read().split("\n")
        last = len(lines) - 1
        while last >= 0 and not lines[last].strip():
            last -= 1
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError:
                if number == last:
                    yield name, {"type": "truncated", "line": number + 1}
                    continue
                raise InputError(
                    f"{name}:{number + 1}: not a result record (expected JSON lines from "
                    "tippingpoint attack or vegeta encode --to json)"
                ) from None
            yield name, record


def summarize(records: Iterable[tuple[str, dict[str, Any]]]) -> Summary:
    summary = Summary()
    starts: dict[str, float] = {}
    for name, record in records:
        kind = record.get("type")
        if kind == "attack":
            starts[name] = float(record.get("start", 0.0))
            summary.add_header(record)
        elif kind == "interval":
            summary.add_record(record, starts.get(name, 0.0))
        elif kind == "truncated":
            summary.warnings.append(f"{name}: skipped a truncated last line {record['line']}")
        elif kind is None and "latency" in record and "code" in record:
            summary.add_vegeta(record)
        else:
            raise InputError(f"{name}: unknown record type {kind!r}")
    return summary.finish()


def windows(records: list[tuple[str, dict[str, Any]]], every: float) -> list[tuple[float, Summary]]:
    """Summaries of consecutive windows of ``every`` seconds (by interval start time)."""
    starts: dict[str, float] = {}
    groups: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    headers: list[tuple[str, dict[str, Any]]] = []
    for name, record in records:
        if record.get("type") == "attack":
            starts[name] = float(record.get("start", 0.0))
            headers.append((name, record))
        elif record.get("type") == "interval":
            groups.setdefault(int(float(record["t"]) // every), []).append((name, record))
    out = []
    for index in sorted(groups):
        summary = Summary()
        for name, record in groups[index]:
            summary.add_record(record, starts.get(name, 0.0))
        out.append((index * every, summary))
    return out
