"""``--type hist[...]`` (Vegeta's bucket table) and ``--type hdrplot`` (percentile text)."""

from __future__ import annotations

import itertools

from tippingpoint.pacer import format_duration, parse_duration
from tippingpoint.report.merge import Summary

__all__ = ["parse_buckets", "render_hdrplot", "render_hist"]

# Percentiles of the hdrplot table: halving the distance to 100 % step by step.
_HDRPLOT_PS = [0.0] + [100.0 - 100.0 / 2 ** (i / 2) for i in range(2, 41)] + [100.0]


def parse_buckets(spec: str) -> list[float]:
    """``"hist[0,1ms,5ms,10ms]"`` -> bucket edges in seconds."""
    if not (spec.startswith("hist[") and spec.endswith("]")):
        raise ValueError(f"bad report type {spec!r}: use hist[0,1ms,5ms,10ms]")
    edges = [parse_duration(part) for part in spec[5:-1].split(",") if part.strip()]
    if len(edges) < 1 or edges != sorted(edges):
        raise ValueError(f"bad buckets in {spec!r}: give increasing durations")
    return edges


def render_hist(s: Summary, edges: list[float]) -> str:
    lat = s.hists["latency"]
    total = lat.total or 1
    bounds = [*edges, float("inf")]
    rows = []
    for low, high in itertools.pairwise(bounds):
        count = lat.count_between(
            int(low * 1e6), int(high * 1e6) if high != float("inf") else 1 << 62
        )
        upper = "+Inf" if high == float("inf") else format_duration(high)
        label = f"[{format_duration(low)},\t{upper}]"
        bar = "#" * int(count / total * 75)
        rows.append(f"{label}\t{count}\t{count / total * 100:.2f}%\t{bar}")
    return "Bucket\t\t#\t%\tHistogram\n" + "\n".join(rows) + "\n"


def render_hdrplot(s: Summary) -> str:
    lat = s.hists["latency"]
    lines = [f"{'Value(ms)':>12} {'Percentile':>14} {'TotalCount':>10} {'1/(1-Percentile)':>16}"]
    values = lat.percentiles(_HDRPLOT_PS)
    for p, v in zip(_HDRPLOT_PS, values, strict=True):
        count = round(lat.total * p / 100)
        inverse = "inf" if p >= 100 else f"{1 / (1 - p / 100):.2f}"
        lines.append(f"{v / 1000:12.3f} {p / 100:14.12f} {count:10d} {inverse:>16}")
    lines.append(f"#[Mean    = {lat.mean / 1000:12.3f}, Max         = {lat.max / 1000:12.3f}]")
    lines.append(f"#[Total count = {lat.total}]")
    return "\n".join(lines) + "\n"
