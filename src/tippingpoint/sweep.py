"""Find the tipping point: attack steps at rising rates, with the machine watched.

Each step is a full constant-rate attack (every process, the result stream kept in
``out/step-NN-RATE.jsonl``) while :class:`tippingpoint.monitor.Monitor` samples the
machine once a second. :mod:`tippingpoint.knee` decides when a step is past the
knee; the sweep stops there (or where the client became the limit), then refines the
knee by bisection between the last good and the first bad rate.

A closed sweep steps the number of closed-loop connections instead of the rate
(``out/step-NN-cCONNS.jsonl``), as one would run wrk with more and more connections.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tippingpoint.engine.runner import Sink, run_attack
from tippingpoint.hdr import Histogram
from tippingpoint.knee import KneeRule, Step
from tippingpoint.model import AttackConfig
from tippingpoint.monitor import Monitor, loopback, proxy_total, sampling
from tippingpoint.report.merge import CPU_SATURATED, Named, Summary, summarize, windows
from tippingpoint.stream import Record

if TYPE_CHECKING:
    from tippingpoint.cores import CoreWindow

__all__ = [
    "Row",
    "SweepConfig",
    "SweepResult",
    "machine_figures",
    "parse_step",
    "run_step",
]


def parse_step(text: str) -> tuple[str, float]:
    """``"x1.5"`` (multiply) or ``"+1000"`` (add) -> ``("x", 1.5)`` / ``("+", 1000)``."""
    text = text.strip()
    try:
        if text[:1] in ("x", "*"):
            factor = float(text[1:])
            if factor <= 1:
                raise ValueError
            return "x", factor
        value = float(text.lstrip("+"))
        if value <= 0:
            raise ValueError
        return "+", value
    except ValueError:
        raise ValueError(f"bad --step {text!r}: use x1.5 (multiply) or +1000 (add)") from None


CONFIRM_STEPS = 8
"""The default of :attr:`SweepConfig.confirm_steps`."""


@dataclass(frozen=True, slots=True)
class SweepConfig:
    attack: AttackConfig
    start: float
    step: tuple[str, float] = ("x", 1.5)
    step_duration: float = 10.0
    max_steps: int = 10
    refine: int = 0
    max_rate: float | None = None
    rule: KneeRule = field(default_factory=KneeRule)
    out: Path | None = None
    closed: bool = False
    """Step the connections of a closed loop (``start``, ``step`` count connections)."""
    runner: Callable[[AttackConfig, Sink], int] | None = field(default=None, compare=False)
    """Runs each step's attack (a cluster's ``Fleet.attack``); None: on this machine."""
    confirm_steps: int = CONFIRM_STEPS
    """Steps beyond ``max_steps`` for confirming the knee (and searching it again when a
    repeat moved it); past them, a knee that did not repeat is not reported."""


@dataclass
class Row:
    offered: float
    achieved: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    success: float
    proxy_cpu_pct: float | None
    tcp_established: int
    packets_in_per_s: float
    packets_out_per_s: float
    saturated: bool
    verdict: str
    refined: bool = False
    p99_sustained_ms: float = 0.0
    """The step's p99 over the seconds in which the client kept its schedule: what the
    knee rule looks at (see :func:`_sustained`)."""
    connections: int | None = None
    """A closed sweep's step: its connections (``offered`` is 0: no rate was offered)."""
    client_cpu_pct: float | None = None
    """The share of its cores the load generator used, in %."""
    fixed_pool: bool = False
    """The generator's connections could not grow with the server's slowness."""
    pool_exhausted: bool = False
    """Hits waited for a free connection of a fixed pool: the server's queue."""
    client_load_pct: float | None = None
    """How busy the client's CPUs were, whoever for (the load, the bench, the kernel,
    anything else, and the VM's steal), in %: what the generator verdict reads."""
    sut_foreign: float | None = None
    """Foreign load and steal on the CPUs of the system under test, in cores."""
    sut_load_pct: float | None = None
    """How busy the system under test's CPUs were, whoever for, with steal, in %."""
    client_foreign: float | None = None
    """Foreign load and steal on the client's CPUs, in cores."""
    client_steal: float | None = None
    """Steal on the client's own CPUs, in cores: time the generator was not given."""
    cores: dict[str, Any] | None = None
    """The step's core accounting (:class:`tippingpoint.cores.CoreWindow`)."""
    past: bool = False
    """Judged past the knee (and not disturbed)."""
    disturbed: str = ""
    """Why the step's figures do not count (another load took the cores); empty: they do."""
    repeat: str = ""
    """Why this rate ran again: "disturbed" (the run before did not count) or "confirm"
    (a knee is confirmed before it stands); empty: its first run."""

    @property
    def key(self) -> float:
        """What the sweep stepped: the offered rate, or the connections."""
        return self.offered if self.connections is None else self.connections

    def step(self) -> Step:
        return Step(
            self.offered,
            self.achieved,
            self.p50_ms,
            self.p99_sustained_ms or self.p99_ms,
            self.success,
            self.saturated,
            client_cpu=None if self.client_cpu is None else self.client_cpu / 100,
            fixed_pool=self.fixed_pool,
            pool_exhausted=self.pool_exhausted,
        )

    @property
    def client_cpu(self) -> float | None:
        """The generator's CPU in %: its CPUs' whole load where accounted, else its
        own processes' share."""
        return self.client_load_pct if self.client_load_pct is not None else self.client_cpu_pct

    def account(self, window: CoreWindow | None) -> None:
        """Take in the step's core accounting."""
        if window is None:
            return
        load = window.client_load()
        self.client_load_pct = None if load is None else round(load * 100, 1)
        self.sut_foreign = round(window.sut_foreign(), 3)
        sut = window.sut_load()
        self.sut_load_pct = None if sut is None else round(sut * 100, 1)
        self.client_foreign = round(window.client_foreign(), 3)
        self.client_steal = round(window.client_steal(), 3)
        self.cores = window.to_json()


@dataclass
class SweepResult:
    rows: list[Row]
    tipping_point: float | None
    first_bad: float | None
    client_limited: bool
    reason: str
    monitor: list[dict[str, Any]]
    closed: bool = False
    knee_connections: int | None = None
    """A closed sweep: the connections of the step whose throughput is the tipping point
    (``first_bad`` is then the connections of the first step past the knee)."""
    confirmed: str = ""
    """How the knee was confirmed: its repeats, in words (empty: no knee)."""
    too_busy: bool = False
    """The sweep stopped because steps stayed disturbed: the machine was too busy."""
    last_good: float | None = None
    """The highest rate (connections) judged within the knee: the range's low end."""
    interrupted: bool = False
    """Ctrl-C (or SIGTERM) ended the sweep: its table holds the steps run until then."""

    def to_json(self) -> dict[str, Any]:
        return {
            "model": "closed" if self.closed else "open",
            "tipping_point": self.tipping_point,
            "knee_connections": self.knee_connections,
            "last_good": self.last_good,
            "first_bad": self.first_bad,
            "client_limited": self.client_limited,
            "too_busy": self.too_busy,
            "interrupted": self.interrupted,
            "confirmed": self.confirmed,
            "reason": self.reason,
            "steps": [vars(r) for r in self.rows],
        }

    def knee_range(self, unit: str = "/s") -> str:
        """ "51,258-76,887/s": the last good and the first bad step (closed: connections)."""
        if self.last_good is None or self.first_bad is None:
            return ""
        if self.closed:
            return f"{self.last_good:,.0f}-{self.first_bad:,.0f} connections"
        return f"{self.last_good:,.0f}-{self.first_bad:,.0f}{unit}"


def _step_attack(
    config: SweepConfig, value: float, index: int
) -> tuple[AttackConfig, str, dict[str, float]]:
    """A step's attack, its stream's name and the tags of its monitor samples."""
    if config.closed:
        connections = int(value)
        attack = replace(
            config.attack,
            rate=0.0,
            pace=(),
            connections=connections,
            max_connections=None,
            duration=config.step_duration,
            requests=None,
        )
        return attack, f"step-{index:02d}-c{connections}", {"connections": connections}
    attack = replace(
        config.attack, rate=value, pace=(), duration=config.step_duration, requests=None
    )
    return attack, f"step-{index:02d}-{value:.0f}", {"offered": value}


def run_step(
    config: SweepConfig,
    value: float,
    index: int,
    monitor: Monitor | None,
    samples: list[dict[str, Any]],
) -> tuple[Row, Summary]:
    """One step: at rate ``value``, or with ``value`` closed-loop connections."""
    attack, name, tags = _step_attack(config, value, index)
    records: list[Named] = []
    step_samples: list[dict[str, Any]] = []
    out = None
    if config.out is not None:
        config.out.mkdir(parents=True, exist_ok=True)
        out = open(config.out / f"{name}.jsonl", "wb")  # noqa: SIM115
    source = f"step {index}"

    def on_record(record: Record, line: bytes) -> None:
        records.append((source, record))
        if out is not None:
            out.write(line)

    try:
        with sampling(monitor, step_samples, step=index, **tags) as sampled:
            (config.runner or run_attack)(attack, on_record)
    finally:
        if out is not None:
            out.close()
    samples.extend(step_samples)
    summary = summarize(records)
    row = _row(config, attack, records, summary, sampled.cores, step_samples)
    return row, summary


def _row(
    config: SweepConfig,
    attack: AttackConfig,
    records: list[Named],
    summary: Summary,
    window: CoreWindow | None,
    step_samples: list[dict[str, Any]],
) -> Row:
    p50, p99 = summary.hists["latency"].percentiles([50, 99])
    sustained_p99, sustained_late = _sustained(records)
    busy = summary.cpu_busy
    load = window.client_load() if window is not None else None
    # The client's CPUs, whoever for: from the core ledger, else from the records.
    full = load if load is not None else summary.cpus_busy or busy
    saturated = (
        sustained_late > 1.0
        or (full is not None and full >= CPU_SATURATED)
        or (
            summary.planned is not None
            and not summary.interrupted
            and summary.done < 0.99 * summary.planned
        )
    )
    row = Row(
        offered=attack.rate,
        achieved=summary.throughput,
        mean_ms=summary.latency_mean_us / 1000,
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        success=summary.success_ratio,
        **machine_figures(step_samples),
        saturated=saturated,
        verdict="",
        p99_sustained_ms=sustained_p99,
        connections=attack.connections if config.closed else None,
        client_cpu_pct=None if busy is None else round(busy * 100, 1),
        fixed_pool=(
            config.closed
            or not attack.keepalive
            or attack.max_connections is not None
            or attack.mqtt is not None
        ),
        pool_exhausted=not config.closed and summary.queued > 0.01 * max(1, summary.done),
    )
    row.account(window)
    return row


def machine_figures(
    samples: list[dict[str, Any]], cpu_samples: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A step's :class:`Row` figures from the monitor's samples: HAProxy's mean CPU (every
    instance; over ``cpu_samples`` when given), peak TCP established, mean packets in and
    out on loopback."""
    cpu = [c for s in (cpu_samples or samples) if (c := proxy_total(s, "cpu_pct")) is not None]
    est = [int(s["tcp_established"]) for s in samples]
    rx = [loopback(s)["rx_packets_per_s"] for s in samples]
    tx = [loopback(s)["tx_packets_per_s"] for s in samples]
    return {
        "proxy_cpu_pct": round(sum(cpu) / len(cpu), 1) if cpu else None,
        "tcp_established": max(est) if est else 0,
        "packets_in_per_s": round(sum(rx) / len(rx), 1) if rx else 0.0,
        "packets_out_per_s": round(sum(tx) / len(tx), 1) if tx else 0.0,
    }


START_UP_S = 2
"""Seconds at the start of a step of four or more that the knee rule leaves out."""

CLIENT_STALL_MS = 10.0
"""A second in which some send left this late saw the client itself stall (the machine,
a GC pass, another process on its core): its latency says nothing about the server.

Stalls of a few milliseconds pass under it, and on a 0.6 ms low-load p99 they can be a
knee by themselves: those are caught per step instead, as foreign load on the client's
CPUs or as its CPUs full (see :mod:`tippingpoint.search`), and the bench keeps its own
monitor off the generator's way. The threshold cannot simply come down: a server that
stops for 100 ms makes a keep-alive pool grow, and opening those connections keeps the
pacing loop 5-10 ms late in the very seconds that show the server's stall
(tests/test_sweep_rule.py); at 5 ms they were dropped and the stall was no knee."""


def _sustained(records: list[Named]) -> tuple[float, float]:
    """The step's p99 latency over the seconds in which the client kept its schedule,
    and the median over its seconds of the p95 send lateness (ms).

    A knee is latency the server causes. A second in which the client itself stalled
    (its latest send left ``CLIENT_STALL_MS`` late or more) is dropped: those VMs stall
    for 10-20 ms now and then, which alone can move a whole step's p99. A second in which
    only the server's latency rose stays in: a server that stalls one second in three is a
    finding. (The median of per-second p99s, used before, hid exactly that: a backend
    paused 100 ms every 3 s left it at the low-load figure.) The generator's lateness is
    judged on p95, as `report` judges it: at a few thousand requests a second a
    per-second p99 is a few dozen sends, and any other process waking on the client's
    core moves it past a millisecond while the schedule is kept."""
    seconds = windows(records, 1.0)
    # The first seconds open the connection pool (TLS handshakes and all) and, through
    # a proxy, the proxy's own connections to its backends, which a steady state does
    # not do: wrk, too, measures once its connections are up. Near the knee the second
    # second often still shows it (in three runs of benchmarks/knee_agreement.py, 10 of
    # the 67 steps judged past the knee were so by their second second alone): a step of
    # four seconds or more is judged without its first two.
    seconds = seconds[START_UP_S if len(seconds) >= 4 else min(1, len(seconds) - 1) :]
    counts = sorted(w.hists["latency"].total for _, w in seconds)
    typical = counts[len(counts) // 2] if counts else 0
    kept = Histogram()
    stalled: list[Histogram] = []
    lates: list[float] = []
    for _, w in seconds:
        latency = w.hists["latency"]
        if not latency.total or latency.total < 0.2 * typical:
            continue
        lateness = w.hists["lateness"]
        lates.append(lateness.percentile(95) / 1000)
        if lateness.max / 1000 >= CLIENT_STALL_MS:
            stalled.append(latency)
        else:
            kept.add(latency)
    if not lates:
        return 0.0, 0.0
    if not kept.total:  # the client stalled in every second: judge them all
        for latency in stalled:
            kept.add(latency)
    return kept.percentile(99) / 1000, statistics.median(lates)


def _mark(row: Row) -> str:
    if row.disturbed:
        return " <- disturbed, run again"
    marks = {"confirm": " (repeat)", "disturbed": " (run again)"}.get(row.repeat, "")
    if row.past:
        return marks + " <- past the knee"
    if row.saturated:
        return marks + " <- client saturated"
    return marks


def _foreign(row: Row) -> str:
    """Foreign load on the system under test's CPUs and on the client's, in % of a core."""
    if row.sut_foreign is None:
        return "-"
    return f"{row.sut_foreign * 100:.0f}/{(row.client_foreign or 0) * 100:.0f}%"


def render_table(result: SweepResult) -> str:
    first = "connections" if result.closed else "offered/s"
    head = (
        f"{first:>11} {'achieved/s':>11} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'judged':>8} {'success':>8} {'proxy CPU':>9} {'client':>7} {'foreign':>8} "
        f"{'TCP est.':>9} {'pkts in/s':>10} {'pkts out/s':>10}"
    )
    lines = [head]
    for r in sorted(result.rows, key=lambda r: r.key):
        cpu = f"{r.proxy_cpu_pct:.0f}%" if r.proxy_cpu_pct is not None else "-"
        client = f"{r.client_cpu:.0f}%" if r.client_cpu is not None else "-"
        if r.success:
            times = f"{r.mean_ms:8.2f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.p99_sustained_ms:8.2f}"
        else:  # no response: no latency to show (0.00 would read as a fast one)
            times = f"{'-':>8} {'-':>8} {'-':>8} {'-':>8}"
        lines.append(
            f"{r.key:11,.0f} {r.achieved:11,.0f} {times} {r.success * 100:7.2f}% {cpu:>9} "
            f"{client:>7} {_foreign(r):>8} {r.tcp_established:9,d} "
            f"{r.packets_in_per_s:10,.0f} {r.packets_out_per_s:10,.0f}{_mark(r)}"
        )
    lines.append(
        "(p99 ms: the whole step's; judged: its p99 without the seconds where the client "
        "itself stalled, the figure the knee rule reads; client: how busy the client's CPUs "
        "were, whoever for; foreign: load no role of ours was charged for, on the system "
        "under test's CPUs / on the client's, in % of a core)"
    )
    span = result.knee_range()
    if result.tipping_point is not None and result.closed:
        lines.append(
            f"\nTipping point: {result.tipping_point:,.0f} requests/s with "
            f"{result.knee_connections:,d} connections in a closed loop (the knee between "
            f"{span}: {result.reason})"
        )
    elif result.tipping_point is not None:
        lines.append(f"\nTipping point: {span} (last good to first past the knee: {result.reason})")
    else:
        lines.append(f"\nNo tipping point: {result.reason}")
    return "\n".join(lines) + "\n"
