"""``--type json``: the keys and units (nanoseconds) of ``vegeta report -type=json``,
plus tippingpoint's own keys."""

from __future__ import annotations

import json
from typing import Any

from tippingpoint.hdr import Histogram
from tippingpoint.report.merge import Summary
from tippingpoint.report.text import stamp

__all__ = ["render_json", "summary_dict"]


def _latencies(h: Histogram, mean_us: float) -> dict[str, int]:
    p50, p90, p95, p99, p999 = h.percentiles([50, 90, 95, 99, 99.9])
    ns = 1000
    return {
        "total": int(mean_us * h.total * ns),
        "mean": int(mean_us * ns),
        "50th": p50 * ns,
        "90th": p90 * ns,
        "95th": p95 * ns,
        "99th": p99 * ns,
        "99.9th": p999 * ns,
        "max": h.max * ns,
        "min": h.min * ns,
    }


def summary_dict(s: Summary) -> dict[str, Any]:
    saturated, verdict = s.saturation()
    requests = s.requests or 1
    out: dict[str, Any] = {
        "latencies": _latencies(s.hists["latency"], s.latency_mean_us),
        "bytes_in": {"total": s.bytes_in, "mean": s.bytes_in / requests if s.requests else 0},
        "bytes_out": {"total": s.bytes_out, "mean": s.bytes_out / requests if s.requests else 0},
        "earliest": stamp(s.first_send),
        "latest": stamp(s.last_send),
        "end": stamp(s.last_done),
        "duration": int(s.attack_s * 1e9),
        "wait": int(s.wait_s * 1e9),
        "requests": s.requests,
        "rate": s.rate,
        "throughput": s.throughput,
        "success": s.success_ratio,
        "status_codes": {str(code): n for code, n in sorted(s.codes.items())},
        "errors": [f"{kind}: {sample}" for kind, (_, sample) in sorted(s.errors.items())],
        # tippingpoint's own keys
        "error_counts": {kind: count for kind, (count, _) in sorted(s.errors.items())},
        "sent": s.sent,
        "planned": s.planned,
        "offered_rate": s.offered_rate,
        "queued": s.queued,
        "connections": {"opened": s.opened, "closed": s.closed, "tls_resumed": s.tls_resumed},
        "saturation": {"saturated": saturated, "verdict": verdict, "cpu_busy": s.cpu_busy},
    }
    if s.missed:  # sends the generator could not make (absent: none)
        out["missed"] = s.missed
    for name in ("service", "ttfb", "connect", "lateness"):
        h = s.hists[name]
        out[name] = {"count": h.total, **_latencies(h, h.mean)}
    return out


def render_json(s: Summary) -> str:
    return json.dumps(summary_dict(s)) + "\n"
