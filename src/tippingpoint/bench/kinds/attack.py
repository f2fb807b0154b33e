"""A constant-rate attack (``attack``), as Vegeta runs one: requests or WebSocket
messages at ``rate`` for ``duration`` through HAProxy's HTTP frontends, with its report
and its timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from tippingpoint.bench.experiments import Bench, Outcome, attack_config
from tippingpoint.bench.kinds.base import REQUEST_KEYS, WEB, Kind, max_connections_of
from tippingpoint.bench.kinds.sweep import hits
from tippingpoint.bench.report import timeline
from tippingpoint.bench.spec import Experiment
from tippingpoint.monitor import sampling
from tippingpoint.pacer import parse_duration, parse_rate
from tippingpoint.report.merge import Named, summarize
from tippingpoint.report.text import render_text
from tippingpoint.stream import Record

__all__ = ["KIND", "AttackSpec"]


@dataclass(frozen=True, slots=True)
class AttackSpec:
    rate: float = 100.0
    duration: float = 10.0
    max_connections: int | None = None


def parse(raw: dict[str, Any], where: str) -> AttackSpec:
    return AttackSpec(
        rate=parse_rate(str(raw.get("rate", 100))),
        duration=parse_duration(str(raw.get("duration", "10s"))),
        max_connections=max_connections_of(raw, where, None),
    )


def quick(spec: AttackSpec) -> AttackSpec:
    return replace(spec, duration=min(spec.duration, 8.0))


def run(bench: Bench, index: int, exp: Experiment[AttackSpec]) -> Outcome:
    exp_dir = bench.out / f"{index + 1:02d}-{exp.kind}"
    exp_dir.mkdir(parents=True, exist_ok=True)
    step = f"attack {index}"
    records: list[Named] = []
    with (
        open(exp_dir / "attack.jsonl", "wb") as stream,
        sampling(bench.monitor, bench.samples, step=step),
    ):

        def on_record(record: Record, line: bytes) -> None:
            stream.write(line)
            records.append((exp.name, record))

        spec = exp.spec
        attack = attack_config(bench, exp, spec.rate, spec.duration, spec.max_connections)
        bench.load.attack(attack, on_record)
    summary = summarize(records)
    report = render_text(summary)
    bench.log(report)
    peak = max((s["tcp_established"] for s in bench.samples if s.get("step") == step), default=0)
    p99 = summary.hists["latency"].percentile(99) / 1000
    row = (
        f"{summary.requests:,} requests, success {summary.success_ratio * 100:.2f}%, "
        f"p99 {p99:.1f} ms, peak TCP established {peak:,}"
    )
    entry = {"report": report, "timeline": timeline([r for _, r in records])}
    return Outcome(row, entry, summary.interrupted)


KIND: Final[Kind[AttackSpec]] = Kind(
    "attack",
    WEB,
    (*REQUEST_KEYS, "rate", "duration", "max_connections"),
    "attack",
    parse,
    hits,
    run,
    quick=quick,
)
