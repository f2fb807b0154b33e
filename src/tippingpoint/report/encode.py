"""``tippingpoint encode``: the result stream as an HdrHistogram interval log or CSV."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable

from tippingpoint.hdr import Histogram
from tippingpoint.report.merge import Named
from tippingpoint.stream import Header, Interval

__all__ = ["to_csv", "to_hlog"]


def to_hlog(records: Iterable[Named], metric: str = "latency") -> str:
    """HdrHistogram interval log (format 1.3); values in microseconds, Interval_Max in ms.

    One line per interval per process, tagged ``p<process>``; histograms as recorded.
    """
    out = io.StringIO()
    starts: dict[str, float] = {}
    base: float | None = None
    lines: list[tuple[float, str]] = []
    for name, record in records:
        if isinstance(record, Header):
            starts[name] = record.start
            if base is None or starts[name] < base:
                base = starts[name]
            continue
        if not isinstance(record, Interval):
            continue
        encoded = record.hist.get(metric)
        if not encoded:
            continue
        h = Histogram.decode(encoded)
        if h.total == 0:
            continue
        begin = starts.get(name, 0.0) + record.t
        lines.append((begin, f"{record.process},{record.dur:.3f},{h.max / 1000:.3f},{encoded}"))
    base = base or 0.0
    out.write("#[Histogram log format version 1.3]\n")
    out.write(
        f"#[StartTime: {base:.3f} (seconds since epoch), "
        f"{time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime(base))}]\n"
    )
    out.write(f"#[BaseTime: {base:.3f} (seconds since epoch)]\n")
    out.write(f"#[tippingpoint {metric} in microseconds]\n")
    out.write('"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"\n')
    for begin, rest in sorted(lines):
        process, length, maximum, encoded = rest.split(",", 3)
        out.write(f"Tag=p{process},{begin - base:.3f},{length},{maximum},{encoded}\n")
    return out.getvalue()


def to_csv(records: Iterable[Named]) -> str:
    """One row per interval per process: counts and latency percentiles (microseconds)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "source",
            "process",
            "t",
            "dur",
            "sent",
            "done",
            "ok",
            "errors",
            "bytes_in",
            "bytes_out",
            "open_conns",
            "p50_us",
            "p90_us",
            "p99_us",
            "max_us",
            "mean_us",
            "lateness_p99_us",
        ]
    )
    for name, record in records:
        if not isinstance(record, Interval):
            continue
        lat = record.histogram("latency")
        late = record.histogram("lateness")
        ok = sum(v for k, v in record.codes.items() if 200 <= k < 400)
        p50, p90, p99 = lat.percentiles([50, 90, 99])
        mean = record.latency_sum_us / lat.total if lat.total else 0
        writer.writerow(
            [
                name,
                record.process,
                record.t,
                record.dur,
                record.sent,
                record.done,
                ok,
                record.done - ok,
                record.bytes_in,
                record.bytes_out,
                record.open,
                p50,
                p90,
                p99,
                lat.max,
                f"{mean:.1f}",
                late.percentile(99),
            ]
        )
    return out.getvalue()
