"""The recorder's interval records, driven with plain numbers."""

from __future__ import annotations

from tippingpoint.engine.recorder import Recorder
from tippingpoint.hdr import Histogram


def test_shared_values_count_in_every_histogram_they_stand_for() -> None:
    rec = Recorder(0, start_ns=1_000_000_000)
    rec.same3.extend([1_000_000, 2_000_000])  # latency = service = ttfb
    rec.same2.extend([3_000_000])  # service = ttfb; its latency apart
    rec.latency.extend([4_000_000])
    rec.latency.extend([9_000_000])  # a response in several reads: three values
    rec.service.extend([8_000_000])
    rec.ttfb.extend([5_000_000])
    record = rec.flush(0.0, 1.0, 0, 0)
    names = ("latency", "service", "ttfb")
    hists = {name: Histogram.decode(record.hist[name]) for name in names}
    assert hists["latency"].total == 4
    assert hists["service"].total == 4
    assert hists["ttfb"].total == 4
    assert hists["latency"].percentile(100) >= 9_000 * 0.99
    assert hists["service"].percentile(100) >= 8_000 * 0.99
    assert hists["ttfb"].percentile(100) >= 5_000 * 0.99
    assert hists["ttfb"].percentile(0) <= 1_000 * 1.01


def test_times_before_the_start_are_not_taken_for_none() -> None:
    rec = Recorder(0, start_ns=1_000_000_000)
    rec.first_send_ns = 999_000_000  # an early wake-up sent the first request
    rec.last_send_ns = 1_500_000_000
    record = rec.flush(0.0, 1.0, 0, 0)
    assert record.first_send == 0
    assert record.last_send == 500_000


def test_a_record_encoded_one_histogram_at_a_time_is_the_same() -> None:
    records = []
    for encode in (True, False):
        rec = Recorder(0, start_ns=0)
        rec.same3.extend(range(1_000, 2_000_000, 997))
        rec.lateness.extend(range(0, 300_000, 101))
        rec.connect.extend([250_000, 300_000])
        record = rec.flush(0.0, 1.0, 3, 1, encode=encode)
        if not encode:
            steps = 1
            while not Recorder.encode_next(record):
                steps += 1
            assert steps == 5  # one call per histogram
            assert Recorder.encode_next(record)  # nothing left: still done
        # The process's CPU and its CPUs' load are read from the kernel at each flush:
        # they differ between two flushes (by the ticks that fell between them).
        record.cpu_us = None
        record.cpus_busy = -1.0
        records.append(record)
    assert records[0] == records[1]
