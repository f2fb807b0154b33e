"""HDR histograms: exact merging and compatibility with the hdrh package's codec."""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

from tippingpoint.hdr import DEFAULT_HIGHEST, Histogram, HistogramDecodeError

PS = [10, 50, 90, 99, 99.9, 99.99]


def sample(seed: int, n: int = 20000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [rng.integers(0, 3000, n // 4), rng.lognormal(7, 2, n - n // 4).astype(np.int64)]
    )
    return np.minimum(values, DEFAULT_HIGHEST)


def test_percentiles_match_hdrhistogram() -> None:
    values = sample(1)
    ours = Histogram()
    ours.record_many(values)
    ref = HdrHistogram(1, DEFAULT_HIGHEST, 3)
    for v in values.tolist():
        ref.record_value(v)
    assert ours.percentiles(PS) == [ref.get_value_at_percentile(p) for p in PS]
    assert ours.total == ref.get_total_count()
    assert ours.max == values.max() and ours.min == values.min()
    assert ours.mean == pytest.approx(values.mean())


def test_encoding_is_read_by_hdrh_and_back() -> None:
    values = sample(2)
    ours = Histogram()
    ours.record_many(values)
    decoded = HdrHistogram.decode(ours.encode())
    assert decoded.get_total_count() == ours.total
    assert [decoded.get_value_at_percentile(p) for p in PS] == ours.percentiles(PS)
    ref = HdrHistogram(1, DEFAULT_HIGHEST, 3)
    for v in values.tolist():
        ref.record_value(v)
    back = Histogram.decode(ref.encode())
    assert (back.counts == ours.counts).all()


def test_huge_counts_use_nine_byte_varints() -> None:
    h = Histogram()
    h.counts[5] = 2**62
    h.counts[70] = 3
    h._refresh()
    back = Histogram.decode(h.encode())
    assert back.counts[5] == 2**62 and back.counts[70] == 3 and back.total == 2**62 + 3


def test_merge_equals_one_histogram() -> None:
    a, b = sample(3), sample(4)
    ha, hb, hall = Histogram(), Histogram(), Histogram()
    ha.record_many(a)
    hb.record_many(b)
    hall.record_many(np.concatenate([a, b]))
    ha.add(hb)
    assert (ha.counts == hall.counts).all()
    assert (ha.total, ha.min, ha.max, ha.total_sum) == (
        hall.total,
        hall.min,
        hall.max,
        hall.total_sum,
    )
    assert ha.percentiles(PS) == hall.percentiles(PS)


def test_values_above_highest_are_clipped_and_counted() -> None:
    h = Histogram(highest=1000)
    h.record_many([5, 2000, -3])
    assert h.total == 3 and h.clipped == 1 and h.max == 1000 and h.min == 0


def test_empty_and_bad_input() -> None:
    h = Histogram()
    assert h.percentiles([50, 99]) == [0, 0] and h.mean == 0
    assert Histogram.decode(h.encode()).total == 0
    with pytest.raises(HistogramDecodeError):
        Histogram.decode("not base64!")
    with pytest.raises(HistogramDecodeError):
        Histogram.decode("SGVsbG8gd29ybGQh")
    with pytest.raises(ValueError, match="layouts"):
        h.add(Histogram(highest=1000))


def test_buckets_and_counts_between() -> None:
    h = Histogram()
    h.record_many([1, 1, 500, 5000, 5001])
    # Above 4,096 the buckets are 4 wide at 3 significant digits: 5000 and 5001 share one.
    assert list(h.buckets()) == [(1, 1, 2), (500, 500, 1), (5000, 5003, 2)]
    assert h.count_between(0, 1000) == 3
    assert h.count_between(1000, 10_000) == 2
