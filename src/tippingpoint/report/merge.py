"""Reading result streams and merging them exactly.

Input lines are JSON: an ``attack`` header, then ``interval`` records (one per
process per interval, with HDR histograms), from any number of files, processes or
machines. Vegeta's JSON result lines (``vegeta encode --to json``) are read too,
one request each. A truncated last line (a crash mid-write) is skipped with a
warning; any other bad line is an error naming file and line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from tippingpoint.hdr import Histogram
from tippingpoint.pacer import Pacer, Segment
from tippingpoint.stream import (
    METRICS,
    Header,
    HoldHeader,
    HoldRecord,
    Interval,
    NotJSON,
    Record,
    StreamError,
    Truncated,
    VegetaResult,
    decode,
)

__all__ = [
    "CPU_SATURATED",
    "InputError",
    "Summary",
    "read_records",
    "succeeded",
    "summarize",
    "windows",
]

CPU_SATURATED = 0.95
"""A generator process that uses this share of its core has nothing left in reserve."""
LATE_P95_US = 1000
"""Sends this late at p95 mean the generator fell behind (one stall of the machine moves
p99, not p95)."""


def succeeded(codes: dict[int, int]) -> int:
    """Requests that succeeded, from their status codes (Vegeta's rule: 2xx and 3xx)."""
    return sum(n for code, n in codes.items() if 200 <= code < 400)


class InputError(ValueError):
    """A result stream line that is neither a tippingpoint record nor a Vegeta result."""


@dataclass
class HostFigures:
    """One client machine's share of a cluster run: is it the one that fell behind?"""

    lateness: Histogram = field(default_factory=Histogram)
    cpu_us: int = 0
    cpu_wall_s: float = 0.0

    @property
    def cpu_busy(self) -> float | None:
        return self.cpu_us / 1e6 / self.cpu_wall_s if self.cpu_wall_s > 0 else None

    def describe(self, host: str) -> str:
        p95 = self.lateness.percentile(95) / 1000 if self.lateness.total else 0.0
        busy = self.cpu_busy
        cpu = f", {busy * 100:.0f} % of its cores" if busy is not None else ""
        return f"{host} (p95 lateness {p95:.1f} ms{cpu})"

    def saturated(self) -> bool:
        p95 = self.lateness.percentile(95) if self.lateness.total else 0
        busy = self.cpu_busy
        return p95 > LATE_P95_US or (busy is not None and busy >= CPU_SATURATED)


@dataclass
class Summary:
    """Totals of any set of interval records; merging is exact (counts and histograms)."""

    hists: dict[str, Histogram] = field(default_factory=lambda: {m: Histogram() for m in METRICS})
    codes: dict[int, int] = field(default_factory=dict)
    errors: dict[str, list[Any]] = field(default_factory=dict)
    sent: int = 0
    done: int = 0
    queued: int = 0
    missed: int = 0
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
    cpus_busy_s: float = 0.0
    """Of ``cpus_wall_s``, the time the processes' CPUs were busy, whoever for."""
    cpus_wall_s: float = 0.0
    first_send: float | None = None
    """Epoch seconds of the earliest send."""
    last_send: float | None = None
    last_done: float | None = None
    planned: int | None = None
    offered_rate: float | None = None
    processes: int = 0
    interrupted: bool = False
    hosts: dict[str, HostFigures] = field(default_factory=dict)
    """Per client machine, for the records that say theirs (a cluster run)."""
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
        return succeeded(self.codes)

    def no_success(self) -> str:
        """The verdict of a run in which no request succeeded, its commonest error named."""
        kind, (count, sample) = max(
            self.errors.items(), key=lambda e: e[1][0], default=("", (0, ""))
        )
        why = f" ({kind} {count:,}: {sample})" if kind else ""
        return (
            f"FAILED: none of the {self.done:,} requests succeeded{why}: look at the target "
            "(is it up, at that address and scheme?); the run measured nothing of it"
        )

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

    @property
    def cpus_busy(self) -> float | None:
        """How busy the generator's CPUs were (mean), whoever for, or None."""
        return self.cpus_busy_s / self.cpus_wall_s if self.cpus_wall_s > 0 else None

    def saturation(self) -> tuple[bool, str]:
        """Was the generator the bottleneck? ``(saturated, one-line verdict)``."""
        if self.done and not self.successes:
            return False, self.no_success()
        lateness = self.hists["lateness"]
        p95, p99 = lateness.percentiles([95, 99]) if lateness.total else (0, 0)
        reasons = []
        if p95 > LATE_P95_US:
            reasons.append(f"p95 send lateness {p95 / 1000:.1f} ms")
        # Hits the pacing loop took up on time and that then failed to get a connection
        # (refused, or waiting on a server that does not accept) are done, not sent:
        # the server held them, not the generator.
        if self.missed:
            reasons.append(f"{self.missed:,} sends missed (a second behind their time, not sent)")
        if self.planned and not self.interrupted and self.done < 0.99 * self.planned:
            reasons.append(f"took up {self.done} of {self.planned} planned requests")
        busy, full = self.cpu_busy, self.cpus_busy
        if busy is not None and busy >= CPU_SATURATED:
            # A generator with no CPU left answers its responses late: its connections
            # stay busy longer and hits wait for them, which would look like the server.
            reasons.append(f"its processes used {busy * 100:.0f} % of their cores")
        elif full is not None and full >= CPU_SATURATED:
            # Its CPUs had no room, whatever took them (HAProxy placed on them, another
            # process, the kernel's network work): the same lateness, not its own share.
            own = f", its own processes {busy * 100:.0f} %" if busy is not None else ""
            reasons.append(f"its CPUs were {full * 100:.0f} % busy{own}")
        if reasons and self.hosts:
            hot = [h for h, f in sorted(self.hosts.items()) if f.saturated()]
            if hot and len(hot) < len(self.hosts):
                reasons.append(
                    "on " + ", ".join(self.hosts[h].describe(h) for h in hot) + " of "
                    f"{len(self.hosts)} client machines"
                )
            elif hot and len(self.hosts) > 1:
                reasons.append(f"on all {len(self.hosts)} client machines")
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
        if full is not None:
            cpu += f", its CPUs {full * 100:.0f} % busy in all"
        return False, f"OK: sends kept to schedule (p99 lateness {p99 / 1000:.3f} ms{cpu})"

    # Merging

    def add_record(self, record: Interval, start: float) -> None:
        host = self.hosts.setdefault(record.host, HostFigures()) if record.host else None
        for name in METRICS:
            encoded = record.hist.get(name)
            if encoded:
                decoded = record.histogram(name)
                self.hists[name].add(decoded)
                if host is not None and name == "lateness":
                    host.lateness.add(decoded)
        for code, n in record.codes.items():
            self.codes[code] = self.codes.get(code, 0) + n
        for kind, entry in record.errors.items():
            mine = self.errors.setdefault(kind, [0, entry.sample])
            mine[0] += entry.count
        self.sent += record.sent
        self.done += record.done
        self.queued += record.queued
        self.missed += record.missed
        if record.cpus_busy >= 0:
            self.cpus_busy_s += record.cpus_busy * record.dur
            self.cpus_wall_s += record.dur
        if record.cpu_us is not None:
            self.cpu_us += record.cpu_us
            self.cpu_wall_s += record.dur
            if host is not None:
                host.cpu_us += record.cpu_us
                host.cpu_wall_s += record.dur
        self.bytes_in += record.bytes_in
        self.bytes_out += record.bytes_out
        self.opened += record.opened
        self.closed += record.closed
        self.tls_resumed += record.tls_resumed
        self.latency_sum_us += record.latency_sum_us
        if record.interrupted:
            self.interrupted = True
        for key, pick in (("first_send", min), ("last_send", max), ("last_done", max)):
            value = getattr(record, key)
            if value >= 0:
                epoch = start + value / 1e6
                current = getattr(self, key)
                setattr(self, key, epoch if current is None else pick(current, epoch))

    def add_vegeta(self, result: VegetaResult) -> None:
        latency_us = result.latency_ns // 1000
        code = result.code
        stamp = _parse_time(result.timestamp)
        self.sent += 1
        self.done += 1
        self.codes[code] = self.codes.get(code, 0) + 1
        if result.error:
            entry = self.errors.setdefault("vegeta", [0, result.error])
            entry[0] += 1
        elif code:
            self._vegeta_latency.append(latency_us)
            self.latency_sum_us += latency_us
        self.bytes_in += result.bytes_in
        self.bytes_out += result.bytes_out
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

    def add_header(self, header: Header) -> None:
        self.processes += header.processes
        pace = [Segment(*s) for s in header.pace]
        rate = header.rate
        duration, requests = header.duration, header.requests
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


Named = tuple[str, Record]
"""A record and the name of the stream it came from (a file, a process, a step)."""


def read_records(sources: Iterable[tuple[str, IO[str]]]) -> Iterator[Named]:
    """``(source name, record)`` for every line of every source."""
    for name, stream in sources:
        try:
            lines = stream.read().split("\n")
        except UnicodeDecodeError:
            raise InputError(f"{name}: not a tippingpoint result stream (binary data)") from None
        last = len(lines) - 1
        while last >= 0 and not lines[last].strip():
            last -= 1
        if last < 0:
            raise InputError(
                f"{name}: empty: no result records (an attack writes them with -o FILE, or to "
                "stdout piped here)"
            )
        read = 0
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = decode(line)
            except NotJSON:
                if number == last and read:  # a stream cut short: its records stand
                    yield name, Truncated(number + 1)
                    continue
                raise InputError(
                    f"{name}:{number + 1}: not a tippingpoint result stream (expected JSON "
                    "lines from tippingpoint attack or vegeta encode --to json)"
                ) from None
            except StreamError as e:
                raise InputError(f"{name}:{number + 1}: {e}") from None
            read += 1
            yield name, record


def summarize(records: Iterable[Named]) -> Summary:
    summary = Summary()
    starts: dict[str, float] = {}
    for name, record in records:
        if isinstance(record, Header):
            starts[name] = record.start
            summary.add_header(record)
        elif isinstance(record, Interval):
            summary.add_record(record, starts.get(name, 0.0))
        elif isinstance(record, Truncated):
            summary.warnings.append(f"{name}: skipped a truncated last line {record.line}")
        elif isinstance(record, VegetaResult):
            summary.add_vegeta(record)
        elif isinstance(record, HoldRecord | HoldHeader):
            raise InputError(
                f"{name}: a hold's records: read them with tippingpoint hold's summary"
            )
    return summary.finish()


def windows(records: list[Named], every: float) -> list[tuple[float, Summary]]:
    """Summaries of consecutive windows of ``every`` seconds (by interval start time)."""
    starts: dict[str, float] = {}
    groups: dict[int, list[tuple[str, Interval]]] = {}
    for name, record in records:
        if isinstance(record, Header):
            starts[name] = record.start
        elif isinstance(record, Interval):
            groups.setdefault(int(record.t // every), []).append((name, record))
    out = []
    for index in sorted(groups):
        summary = Summary()
        for name, record in groups[index]:
            summary.add_record(record, starts.get(name, 0.0))
        out.append((index * every, summary))
    return out
