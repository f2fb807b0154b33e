"""A constant-rate attack (``attack``), as Vegeta runs one: requests or WebSocket
messages at ``rate`` for ``duration`` through HAProxy's HTTP frontends, with its report
and its timeline.
"""

from __future__ import annotations

from typing import Final

from tippingpoint.bench.experiments import Bench, Outcome, attack_config
from tippingpoint.bench.kinds.base import REQUEST_KEYS, WEB, Kind
from tippingpoint.bench.kinds.sweep import hits
from tippingpoint.bench.report import timeline
from tippingpoint.bench.spec import Experiment
from tippingpoint.monitor import sampling
from tippingpoint.report.merge import Named, summarize
from tippingpoint.report.text import render_text
from tippingpoint.stream import Record

__all__ = ["KIND"]


def run(bench: Bench, index: int, exp: Experiment) -> Outcome:
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

        bench.load.attack(attack_config(bench, exp), on_record)
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


KIND: Final[Kind] = Kind(
    "attack",
    WEB,
    (*REQUEST_KEYS, "rate", "duration", "max_connections"),
    "attack",
    hits,
    run,
)
