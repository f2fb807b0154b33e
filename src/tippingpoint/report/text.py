"""Vegeta's text report, plus ab's "served within" table and the generator verdict."""

from __future__ import annotations

from datetime import UTC, datetime

from tippingpoint.pacer import format_duration
from tippingpoint.report.merge import Summary

__all__ = ["render_text"]

_AB_PERCENTS = (50, 66, 75, 80, 90, 95, 98, 99, 100)


def _us(value: float) -> str:
    return format_duration(value / 1e6)


def _row(label: str, fields: str, values: str) -> str:
    return f"{label:<13} {fields:<40} {values}"


def render_text(s: Summary) -> str:
    lat = s.hists["latency"]
    lines = []
    lines.append(
        _row(
            "Requests",
            "[total, rate, throughput]",
            f"{s.requests}, {s.rate:.2f}, {s.throughput:.2f}",
        )
    )
    lines.append(
        _row(
            "Duration",
            "[total, attack, wait]",
            f"{format_duration(s.attack_s + s.wait_s)}, {format_duration(s.attack_s)}, "
            f"{format_duration(s.wait_s)}",
        )
    )
    if lat.total:
        p50, p90, p95, p99, p999 = lat.percentiles([50, 90, 95, 99, 99.9])
        values = ", ".join(
            _us(v) for v in (lat.min, s.latency_mean_us, p50, p90, p95, p99, p999, lat.max)
        )
    else:
        values = "no responses"
    lines.append(_row("Latencies", "[min, mean, 50, 90, 95, 99, 99.9, max]", values))
    mean_in = s.bytes_in / s.requests if s.requests else 0.0
    mean_out = s.bytes_out / s.requests if s.requests else 0.0
    lines.append(_row("Bytes In", "[total, mean]", f"{s.bytes_in}, {mean_in:.2f}"))
    lines.append(_row("Bytes Out", "[total, mean]", f"{s.bytes_out}, {mean_out:.2f}"))
    lines.append(_row("Success", "[ratio]", f"{s.success_ratio * 100:.2f}%"))
    codes = "  ".join(f"{code}:{n}" for code, n in sorted(s.codes.items()))
    lines.append(_row("Status Codes", "[code:count]", codes))
    lines.append("Error Set:")
    for kind, (count, sample) in sorted(s.errors.items()):
        lines.append(f"{kind} ({count}): {sample}")
    lines.append("")
    lines += _client_rows(s)
    lines.append(f"Generator     {s.saturation()[1]}")
    if lat.total:
        lines.append("")
        lines.append("Percentage of the requests served within a certain time")
        for p, v in zip(_AB_PERCENTS, lat.percentiles(list(_AB_PERCENTS)), strict=True):
            suffix = " (longest request)" if p == 100 else ""
            lines.append(f"  {p:3d}%  {_us(v)}{suffix}")
    for warning in s.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines) + "\n"


def _client_rows(s: Summary) -> list[str]:
    """The phases of a request, the lateness, the rate, the connections and the queue."""
    lines: list[str] = []
    for name, label in (("service", "Service"), ("ttfb", "First byte"), ("connect", "Connect")):
        h = s.hists[name]
        if h.total:
            p50, p99 = h.percentiles([50, 99])
            lines.append(
                _row(
                    label,
                    "[count, mean, 50, 99, max]",
                    f"{h.total}, {_us(h.mean)}, {_us(p50)}, {_us(p99)}, {_us(h.max)}",
                )
            )
    late = s.hists["lateness"]
    if late.total:
        p50, p99 = late.percentiles([50, 99])
        lines.append(
            _row(
                "Lateness",
                "[mean, 50, 99, max]",
                f"{_us(late.mean)}, {_us(p50)}, {_us(p99)}, {_us(late.max)}",
            )
        )
    if s.offered_rate:
        lines.append(
            _row(
                "Rate",
                "[offered, achieved sends]",
                f"{s.offered_rate:.2f}, {s.sent / s.attack_s if s.attack_s else 0:.2f}",
            )
        )
    lines.append(
        _row(
            "Connections",
            "[opened, closed, tls resumed]",
            f"{s.opened}, {s.closed}, {s.tls_resumed}",
        )
    )
    if s.missed:
        lines.append(
            _row(
                "Missed",
                "[sends not made]",
                f"{s.missed} (a second behind their time: the generator could not offer the rate)",
            )
        )
    if s.queued:
        lines.append(
            _row(
                "Queued",
                "[waited for a connection]",
                f"{s.queued} (connection cap or pool growth; counted in latency)",
            )
        )
    return lines


def stamp(epoch: float | None) -> str:
    """RFC 3339 with nanoseconds, as Go prints time.Time in JSON."""
    if epoch is None:
        return "0001-01-01T00:00:00Z"
    dt = datetime.fromtimestamp(epoch, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}000Z"
