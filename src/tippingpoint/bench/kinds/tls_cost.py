"""What TLS costs the proxy: the article's first question, from three ladders of steps.

The same offered rates are run three ways (plain HTTP with keep-alive, TLS with
keep-alive, and TLS with a new connection for every request) while the monitor samples
HAProxy's CPU. From each step: HAProxy CPU in µs per request (1 % of one core for a
second is 10,000 µs). From the pairs: TLS keep-alive against plain HTTP at each rate
(the article's "CPU percentage increase"), and a handshake's cost as the difference
between a new-connection request and a keep-alive TLS request at the same rate.
:class:`TLSCost` is pure: rows in, figures and sentences out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Final

from tippingpoint.bench.experiments import Bench, Outcome, attack_config
from tippingpoint.bench.kinds.base import Kind, max_connections_of
from tippingpoint.bench.spec import Experiment, Scenario, ScenarioError
from tippingpoint.pacer import parse_duration, parse_rate
from tippingpoint.sweep import Row, SweepConfig, run_step

__all__ = ["KIND", "PROTOCOLS", "Point", "Protocol", "TLSCost", "TLSCostSpec"]

_MIN_CPU_PCT = 5.0
"""Below this HAProxy CPU a ratio is mostly noise, and the opening of the pool."""


@dataclass(frozen=True, slots=True)
class Protocol:
    key: str
    label: str
    frontend: str
    keepalive: bool


PROTOCOLS = (
    Protocol("http", "HTTP, keep-alive", "http", True),
    Protocol("tls", "TLS, keep-alive", "https", True),
    Protocol("tls-new", "TLS, new connection per request", "https", False),
)


@dataclass(frozen=True, slots=True)
class Point:
    offered: float
    achieved: float
    proxy_cpu_pct: float | None
    p99_ms: float
    success: float
    limited: str = ""
    """Why this rate is past what could be measured ("" when it is not)."""

    @property
    def us_per_request(self) -> float | None:
        if self.proxy_cpu_pct is None or self.achieved <= 0:
            return None
        return self.proxy_cpu_pct * 10_000 / self.achieved

    @property
    def valid(self) -> bool:
        return not self.limited and self.us_per_request is not None

    @classmethod
    def of(cls, row: Row) -> Point:
        """A step counts while it served nearly what was offered: HAProxy's CPU per
        request is then a true figure even if sends left late (a TLS client's loop
        spends milliseconds at a time in handshakes, which delays its schedule)."""
        if row.success < 0.99:
            limited = f"failing ({row.success * 100:.1f}% success)"
        elif row.achieved < 0.9 * row.offered:
            # Say what each side was doing rather than guess: a client whose connects
            # queue behind its own handshakes keeps its schedule, yet is the limit.
            sides = []
            if row.saturated:
                sides.append("the client fell behind")
            if row.client_cpu_pct is not None:
                sides.append(f"client CPU {row.client_cpu_pct:.0f}%")
            if row.proxy_cpu_pct is not None:
                sides.append(f"HAProxy CPU {row.proxy_cpu_pct:.0f}%")
            why = f" ({', '.join(sides)})" if sides else ""
            limited = f"short of the rate: {row.achieved:,.0f}/s achieved{why}"
        else:
            limited = ""
        return cls(row.offered, row.achieved, row.proxy_cpu_pct, row.p99_ms, row.success, limited)


@dataclass
class TLSCost:
    points: dict[str, list[Point]] = field(default_factory=dict)

    def add(self, protocol: str, row: Row) -> Point:
        point = Point.of(row)
        self.points.setdefault(protocol, []).append(point)
        return point

    def _at(self, protocol: str, rate: float) -> Point | None:
        for p in self.points.get(protocol, []):
            if p.offered == rate and p.valid:
                return p
        return None

    def ratios(self) -> list[tuple[float, float]]:
        """(rate, HAProxy CPU with TLS keep-alive / with plain HTTP) where both ran."""
        out = []
        for plain in self.points.get("http", []):
            tls = self._at("tls", plain.offered)
            if plain.valid and tls is not None and (plain.proxy_cpu_pct or 0) >= _MIN_CPU_PCT:
                assert tls.proxy_cpu_pct is not None and plain.proxy_cpu_pct is not None
                out.append((plain.offered, tls.proxy_cpu_pct / plain.proxy_cpu_pct))
        return out

    def handshakes(self) -> list[tuple[float, float]]:
        """(rate, µs of HAProxy CPU per new TLS connection) where both TLS ladders ran."""
        out = []
        for new in self.points.get("tls-new", []):
            kept = self._at("tls", new.offered)
            if new.valid and kept is not None:
                assert new.us_per_request is not None and kept.us_per_request is not None
                out.append((new.offered, new.us_per_request - kept.us_per_request))
        return out

    def handshake_us(self) -> float | None:
        values = [us for _, us in self.handshakes()]
        return statistics.median(values) if values else None

    def sentence(self) -> str:
        """The summary row: what TLS costs HAProxy, in words a person can repeat."""
        parts = []
        ratios = self.ratios()
        if len(ratios) == 1:
            rate, ratio = ratios[0]
            parts.append(
                f"TLS keep-alive costs HAProxy {ratio:.1f}x the CPU of plain HTTP at {rate:,.0f}/s."
            )
        elif ratios:
            # One step's ratio moves with the sampler's noise: the median, and the range.
            values = [r for _, r in ratios]
            parts.append(
                f"TLS keep-alive costs HAProxy {statistics.median(values):.1f}x the CPU of plain "
                f"HTTP ({min(values):.1f}-{max(values):.1f}x from {ratios[0][0]:,.0f} to "
                f"{ratios[-1][0]:,.0f}/s)."
            )
        else:
            parts.append("No rate gave both HTTP and TLS keep-alive figures.")
        handshake = self.handshake_us()
        new = self.points.get("tls-new", [])
        limit = next((p for p in new if p.limited), None)
        if handshake is not None:
            rates = ", ".join(f"{r:,.0f}" for r, _ in self.handshakes())
            parts.append(
                f"Each new TLS connection costs {handshake:,.0f} µs of HAProxy CPU "
                f"(measured at {rates}/s)."
            )
        if limit is not None:
            parts.append(f"New connections at {limit.offered:,.0f}/s: {limit.limited}.")
        return " ".join(parts)

    def table(self) -> str:
        """The steps, a line each, for the bench's log."""
        lines = [
            f"{'protocol':34s} {'offered/s':>10s} {'achieved/s':>11s} {'HAProxy CPU':>12s} "
            f"{'µs/request':>11s} {'p99 ms':>8s}"
        ]
        for protocol in PROTOCOLS:
            for p in self.points.get(protocol.key, []):
                cpu = f"{p.proxy_cpu_pct:.1f}%" if p.proxy_cpu_pct is not None else "-"
                us = f"{p.us_per_request:,.1f}" if p.us_per_request is not None else "-"
                lines.append(
                    f"{protocol.label:34s} {p.offered:10,.0f} {p.achieved:11,.0f} {cpu:>12s} "
                    f"{us:>11s} {p.p99_ms:8.2f}" + (f"  {p.limited}" if p.limited else "")
                )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "protocols": [
                {
                    "key": protocol.key,
                    "label": protocol.label,
                    "steps": [
                        {
                            "offered": p.offered,
                            "achieved": p.achieved,
                            "proxy_cpu_pct": p.proxy_cpu_pct,
                            "us_per_request": p.us_per_request,
                            "p99_ms": p.p99_ms,
                            "success": p.success,
                            "limited": p.limited,
                        }
                        for p in self.points.get(protocol.key, [])
                    ],
                }
                for protocol in PROTOCOLS
            ],
            "ratios": [{"offered": r, "tls_over_http": x} for r, x in self.ratios()],
            "handshakes": [{"offered": r, "us": us} for r, us in self.handshakes()],
            "handshake_us": self.handshake_us(),
            "sentence": self.sentence(),
        }


def describe(exp: Experiment[TLSCostSpec], url: str, scenario: Scenario) -> str:
    rates = ", ".join(f"{r:,.0f}" for r in exp.spec.rates)
    return (
        f"HAProxy's CPU at {rates} requests/s, {exp.spec.step_duration:g} s each, with plain "
        "HTTP and TLS keep-alive, and TLS with a new connection per request (each stops "
        "at the first rate the client cannot offer)"
    )


def run(bench: Bench, index: int, exp: Experiment[TLSCostSpec]) -> Outcome:
    """The same rates three ways (see above); each way stops at its first
    rate that the client could not offer or the proxy could not serve."""
    out = bench.out / f"{index + 1:02d}-{exp.kind}"
    cost = TLSCost()
    spec = exp.spec
    for protocol in PROTOCOLS:
        request = replace(exp.request, keepalive=protocol.keepalive)
        way = replace(exp, frontend=protocol.frontend, request=request)
        config = SweepConfig(
            attack=attack_config(bench, way, max_connections=spec.max_connections),
            start=spec.rates[0],
            step_duration=spec.step_duration,
            out=out / protocol.key,
        )
        for step, rate in enumerate(spec.rates):
            row, summary = run_step(config, rate, step, bench.monitor, bench.samples)
            point = cost.add(protocol.key, row)
            cpu = "-" if point.proxy_cpu_pct is None else f"{point.proxy_cpu_pct:.1f}%"
            bench.log(
                f"  {protocol.label}, {rate:,.0f}/s: achieved {row.achieved:,.0f}/s, "
                f"HAProxy CPU {cpu}, p99 {row.p99_ms:.2f} ms"
                + (f" - {point.limited}" if point.limited else "")
            )
            if summary.interrupted:
                return Outcome(cost.sentence(), {"tls_cost": cost.to_json()}, True)
            if point.limited:
                break
    bench.log(cost.table())
    return Outcome(cost.sentence(), {"tls_cost": cost.to_json()})


@dataclass(frozen=True, slots=True)
class TLSCostSpec:
    rates: tuple[float, ...] = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)
    step_duration: float = 5.0
    max_connections: int | None = 128


def parse(raw: dict[str, Any], where: str) -> TLSCostSpec:
    rates = raw.get("rates", [250, 500, 1000, 2000, 4000, 8000])
    if not isinstance(rates, list) or not rates:
        raise ScenarioError(f"{where}.rates: a list of offered rates, e.g. [1000, 2000, 4000]")
    parsed = tuple(sorted(parse_rate(str(r)) for r in rates))
    if parsed[0] <= 0:
        raise ScenarioError(f"{where}.rates: every rate must be > 0")
    return TLSCostSpec(
        rates=parsed,
        step_duration=parse_duration(str(raw.get("step_duration", "5s"))),
        max_connections=max_connections_of(raw, where, 128),
    )


def quick(spec: TLSCostSpec) -> TLSCostSpec:
    return replace(spec, step_duration=min(spec.step_duration, 2.0))


KIND: Final[Kind[TLSCostSpec]] = Kind(
    "tls-cost",
    ("http", "https"),
    ("headers", "method", "path", "body_file", "rates", "step_duration", "max_connections"),
    "tls-cost",
    parse,
    describe,
    run,
    quick=quick,
    step_duration=lambda spec: spec.step_duration,
)
