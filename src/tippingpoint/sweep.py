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

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tippingpoint.engine.runner import Sink, run_attack
from tippingpoint.hdr import Histogram
from tippingpoint.knee import KneeRule, Step, Verdict, baseline, judge
from tippingpoint.model import AttackConfig
from tippingpoint.monitor import Monitor, loopback, proxy_total, sampling
from tippingpoint.report.merge import CPU_SATURATED, Named, Summary, summarize, windows
from tippingpoint.stream import Record

__all__ = [
    "Row",
    "StepRunner",
    "SweepConfig",
    "SweepResult",
    "machine_figures",
    "parse_step",
    "run_step",
    "run_sweep",
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
            client_cpu=None if self.client_cpu_pct is None else self.client_cpu_pct / 100,
            fixed_pool=self.fixed_pool,
        )


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

    def to_json(self) -> dict[str, Any]:
        return {
            "model": "closed" if self.closed else "open",
            "tipping_point": self.tipping_point,
            "knee_connections": self.knee_connections,
            "first_bad": self.first_bad,
            "client_limited": self.client_limited,
            "reason": self.reason,
            "steps": [vars(r) for r in self.rows],
        }


def run_step(
    config: SweepConfig,
    value: float,
    index: int,
    monitor: Monitor | None,
    samples: list[dict[str, Any]],
) -> tuple[Row, Summary]:
    """One step: at rate ``value``, or with ``value`` closed-loop connections."""
    connections: int | None = None
    if config.closed:
        connections = int(value)
        rate = 0.0
        attack = replace(
            config.attack,
            rate=0.0,
            pace=(),
            connections=connections,
            max_connections=None,
            duration=config.step_duration,
            requests=None,
        )
        name = f"step-{index:02d}-c{connections}"
        tags: dict[str, float] = {"connections": connections}
    else:
        rate = value
        attack = replace(
            config.attack, rate=rate, pace=(), duration=config.step_duration, requests=None
        )
        name, tags = f"step-{index:02d}-{rate:.0f}", {"offered": rate}
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
        with sampling(monitor, step_samples, step=index, **tags):
            (config.runner or run_attack)(attack, on_record)
    finally:
        if out is not None:
            out.close()
    samples.extend(step_samples)
    summary = summarize(records)
    lat = summary.hists["latency"]
    p50, p99 = lat.percentiles([50, 99])
    sustained_p99, sustained_late = _sustained(records)
    busy = summary.cpu_busy
    saturated = (
        sustained_late > 1.0
        or (busy is not None and busy >= CPU_SATURATED)
        or (
            summary.planned is not None
            and not summary.interrupted
            and summary.done < 0.99 * summary.planned
        )
    )
    row = Row(
        offered=rate,
        achieved=summary.throughput,
        mean_ms=summary.latency_mean_us / 1000,
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        success=summary.success_ratio,
        **machine_figures(step_samples),
        saturated=saturated,
        verdict="",
        p99_sustained_ms=sustained_p99,
        connections=connections,
        client_cpu_pct=None if busy is None else round(busy * 100, 1),
        fixed_pool=(
            config.closed
            or not attack.keepalive
            or attack.max_connections is not None
            or attack.mqtt is not None
        ),
    )
    return row, summary


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


CLIENT_STALL_MS = 10.0
"""A second in which some send left this late saw the client itself stall (the machine,
a GC pass, another process on its core): its latency says nothing about the server."""


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
    if len(seconds) > 1:
        # The first second opens the connection pool (TLS handshakes and all), which a
        # steady state does not do: wrk, too, measures once its connections are up.
        seconds = seconds[1:]
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


def _next(config: SweepConfig, value: float) -> float:
    kind, amount = config.step
    following = value * amount if kind == "x" else value + amount
    if config.closed:  # whole connections, and at least one more
        return float(max(int(following), int(value) + 1))
    return following


StepRunner = Callable[
    [SweepConfig, float, int, Monitor | None, list[dict[str, Any]]], tuple[Row, bool]
]
"""Runs one step of a sweep: its row, and whether it was interrupted."""


def _attack_step(
    config: SweepConfig,
    value: float,
    index: int,
    monitor: Monitor | None,
    samples: list[dict[str, Any]],
) -> tuple[Row, bool]:
    row, summary = run_step(config, value, index, monitor, samples)
    return row, summary.interrupted


def run_sweep(
    config: SweepConfig,
    monitor: Monitor | None = None,
    on_row: Callable[[Row], None] | None = None,
    step: StepRunner = _attack_step,
) -> SweepResult:
    """Steps up to the knee, then bisects it; each step is an attack, or what ``step``
    runs (a connect storm's step is a hold)."""
    rows: list[Row] = []
    samples: list[dict[str, Any]] = []
    value = float(int(config.start)) if config.closed else config.start
    verdict: Verdict | None = None
    first_bad: float | None = None
    best = 0.0  # a closed sweep: the best throughput of the steps within the knee
    index = 0
    interrupted = False
    while index < config.max_steps:
        if config.max_rate is not None and value > config.max_rate:
            break
        row, stopped = step(config, value, index, monitor, samples)
        index += 1
        verdict = judge(
            row.step(),
            baseline([r.step() for r in [*rows, row]], config.rule),
            config.rule,
            best if config.closed else None,
        )
        row.verdict = verdict.reason
        rows.append(row)
        if on_row is not None:
            on_row(row)
        if stopped:
            interrupted = True
            break
        if verdict.past_knee or verdict.client_limited:
            first_bad = value
            break
        best = max(best, row.achieved)
        value = _next(config, value)
    good = [r.key for r in rows if not r.saturated and r.key != first_bad]
    last_good = max(good) if good else None
    client_limited = verdict is not None and verdict.client_limited
    if first_bad is not None and last_good is not None and not client_limited and not interrupted:
        low, high = last_good, first_bad
        base = baseline([r.step() for r in rows], config.rule)
        for _ in range(config.refine):
            if index >= config.max_steps:
                break
            if config.closed:
                if high - low <= 1:
                    break
                mid = float((int(low) + int(high)) // 2)
            else:
                if high - low < max(1.0, 0.02 * low):
                    break
                mid = (low + high) / 2
            row, stopped = step(config, mid, index, monitor, samples)
            index += 1
            row.refined = True
            mid_verdict = judge(row.step(), base, config.rule, best if config.closed else None)
            row.verdict = mid_verdict.reason
            rows.append(row)
            if on_row is not None:
                on_row(row)
            if stopped or mid_verdict.client_limited:
                break
            if mid_verdict.past_knee:
                high = mid
                verdict = mid_verdict  # the first step past the knee is now this one
            else:
                low = mid
                best = max(best, row.achieved)
        last_good, first_bad = low, high
    unit = " connections" if config.closed else "/s"
    if interrupted:
        reason = "interrupted"
    elif verdict is None:
        reason = "no steps run"
    elif client_limited:
        reason = f"client-limited at {rows[-1].key:,.0f}{unit}: {verdict.reason}"
    elif first_bad is None:
        reason = "no knee found within the steps: raise --max-steps or --start"
    else:
        reason = verdict.reason
    tipping = last_good if first_bad is not None and not client_limited else None
    knee_connections = None
    if config.closed and tipping is not None:
        knee_connections = int(tipping)
        tipping = max(r.achieved for r in rows if r.key == tipping)
    if config.out is not None:
        config.out.mkdir(parents=True, exist_ok=True)
        (config.out / "monitor.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return SweepResult(
        rows, tipping, first_bad, client_limited, reason, samples, config.closed, knee_connections
    )


def render_table(result: SweepResult) -> str:
    first = "connections" if result.closed else "offered/s"
    head = (
        f"{first:>11} {'achieved/s':>11} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'judged':>8} {'success':>8} {'proxy CPU':>9} {'TCP est.':>9} {'pkts in/s':>10} "
        f"{'pkts out/s':>10}"
    )
    lines = [head]
    for r in sorted(result.rows, key=lambda r: r.key):
        cpu = f"{r.proxy_cpu_pct:.0f}%" if r.proxy_cpu_pct is not None else "-"
        mark = " <- past the knee" if r.key == result.first_bad else ""
        if r.saturated:
            mark = " <- client saturated"
        lines.append(
            f"{r.key:11,.0f} {r.achieved:11,.0f} {r.mean_ms:8.2f} {r.p50_ms:8.2f} "
            f"{r.p99_ms:8.2f} {r.p99_sustained_ms:8.2f} {r.success * 100:7.2f}% {cpu:>9} "
            f"{r.tcp_established:9,d} {r.packets_in_per_s:10,.0f} "
            f"{r.packets_out_per_s:10,.0f}{mark}"
        )
    lines.append(
        "(p99 ms: the whole step's; judged: its p99 without the seconds where the client "
        "itself stalled, the figure "
        "the knee rule reads)"
    )
    if result.tipping_point is not None and result.closed:
        lines.append(
            f"\nTipping point: {result.tipping_point:,.0f} requests/s with "
            f"{result.knee_connections:,d} connections in a closed loop (first past the knee: "
            f"{result.first_bad:,.0f} connections: {result.reason})"
        )
    elif result.tipping_point is not None:
        lines.append(
            f"\nTipping point: {result.tipping_point:,.0f} requests/s "
            f"(first past the knee: {result.first_bad:,.0f}/s: {result.reason})"
        )
    else:
        lines.append(f"\nNo tipping point: {result.reason}")
    return "\n".join(lines) + "\n"
