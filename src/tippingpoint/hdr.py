"""HDR histograms: bulk recording, exact merging, and the HdrHistogram V2 wire encoding.

The bucket layout is HdrHistogram's (lowest discernible value, highest trackable
value, significant digits), so encoded histograms are read by HdrHistogram's own
tools and by the ``hdrh`` package, and ``.hlog`` interval logs are standard.
Recording is vectorised: the hot path appends integers to an ``array``; once per
interval :meth:`Histogram.record_many` turns them into bucket counts with numpy.

Values are integers in the unit the caller chooses; tippingpoint records
microseconds everywhere.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from array import array
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_HIGHEST", "Histogram", "HistogramDecodeError"]

DEFAULT_HIGHEST: Final = 3_600_000_000
"""One hour in microseconds: the default highest trackable value."""

_ENCODING_COOKIE: Final = 0x1C849313  # V2 payload, word size marker 0x10
_COMPRESSED_COOKIE: Final = 0x1C849314
_PAYLOAD_HEADER = struct.Struct(">iiiiqqd")
_OUTER_HEADER = struct.Struct(">ii")


class HistogramDecodeError(ValueError):
    """The text is not an encoded HdrHistogram (V2, compressed)."""


class Histogram:
    """A histogram of non-negative integers with HdrHistogram's layout.

    ``clipped`` counts values above the highest trackable value; they are recorded as
    that value (so the count stays true) and reported separately.
    """

    __slots__ = (
        "_bucket_count",
        "_sub_bucket_half_count",
        "_sub_bucket_half_count_magnitude",
        "_sub_bucket_mask",
        "_unit_magnitude",
        "clipped",
        "counts",
        "digits",
        "highest",
        "lowest",
        "max",
        "min",
        "total",
        "total_sum",
    )

    def __init__(self, lowest: int = 1, highest: int = DEFAULT_HIGHEST, digits: int = 3) -> None:
        if lowest < 1 or highest < 2 * lowest or not 0 <= digits <= 5:
            raise ValueError("need lowest >= 1, highest >= 2 * lowest, 0 <= digits <= 5")
        self.lowest = lowest
        self.highest = highest
        self.digits = digits
        largest_single_unit = 2 * 10**digits
        sub_bucket_count_magnitude = math.ceil(math.log2(largest_single_unit))
        self._sub_bucket_half_count_magnitude = max(sub_bucket_count_magnitude, 1) - 1
        self._unit_magnitude = lowest.bit_length() - 1
        sub_bucket_count = 1 << (self._sub_bucket_half_count_magnitude + 1)
        self._sub_bucket_half_count = sub_bucket_count // 2
        self._sub_bucket_mask = (sub_bucket_count - 1) << self._unit_magnitude
        smallest_untrackable = sub_bucket_count << self._unit_magnitude
        buckets = 1
        while smallest_untrackable <= highest:
            if smallest_untrackable > (1 << 62):
                buckets += 1
                break
            smallest_untrackable <<= 1
            buckets += 1
        self._bucket_count = buckets
        self.counts: npt.NDArray[np.int64] = np.zeros(
            (buckets + 1) * self._sub_bucket_half_count, dtype=np.int64
        )
        self.total = 0
        self.total_sum = 0
        self.min = 0
        self.max = 0
        self.clipped = 0

    # Recording

    def _indexes(self, values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        masked = values | self._sub_bucket_mask
        # bit_length(x) for x < 2**53 is frexp's exponent.
        bit_length = np.frexp(masked.astype(np.float64))[1].astype(np.int64)
        bucket = bit_length - self._unit_magnitude - (self._sub_bucket_half_count_magnitude + 1)
        sub_bucket = values >> (bucket + self._unit_magnitude)
        base = (bucket + 1) << self._sub_bucket_half_count_magnitude
        result: npt.NDArray[np.int64] = base + sub_bucket - self._sub_bucket_half_count
        return result

    def record_many(self, values: npt.ArrayLike | array[int]) -> None:
        """Record every value of a sequence (negative values count as 0)."""
        data = np.asarray(values, dtype=np.int64)
        if data.size == 0:
            return
        data = np.maximum(data, 0)
        over = data > self.highest
        if over.any():
            self.clipped += int(over.sum())
            data = np.minimum(data, self.highest)
        self.counts += np.bincount(self._indexes(data), minlength=len(self.counts))[
            : len(self.counts)
        ]
        low, high = int(data.min()), int(data.max())
        self.min = low if self.total == 0 else min(self.min, low)
        self.max = max(self.max, high)
        self.total += int(data.size)
        self.total_sum += int(data.sum())

    def record(self, value: int) -> None:
        self.record_many(np.array([value], dtype=np.int64))

    def add(self, other: Histogram) -> None:
        """Merge ``other`` into this histogram (same layout): exact."""
        if (other.lowest, other.highest, other.digits) != (self.lowest, self.highest, self.digits):
            raise ValueError("cannot merge histograms with different layouts")
        if other.total == 0:
            return
        self.counts += other.counts
        self.min = other.min if self.total == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.total += other.total
        self.total_sum += other.total_sum
        self.clipped += other.clipped

    def copy(self) -> Histogram:
        h = Histogram(self.lowest, self.highest, self.digits)
        h.add(self)
        return h

    # Queries

    def _value_from_index(self, index: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        bucket = (index >> self._sub_bucket_half_count_magnitude) - 1
        sub_bucket = (index & (self._sub_bucket_half_count - 1)) + self._sub_bucket_half_count
        low = bucket < 0
        sub_bucket = np.where(low, sub_bucket - self._sub_bucket_half_count, sub_bucket)
        bucket = np.where(low, 0, bucket)
        value: npt.NDArray[np.int64] = sub_bucket << (bucket + self._unit_magnitude)
        return value

    def _highest_equivalent(self, index: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        lowest = self._value_from_index(index)
        bucket = np.maximum((index >> self._sub_bucket_half_count_magnitude) - 1, 0)
        result: npt.NDArray[np.int64] = lowest + (1 << (bucket + self._unit_magnitude)) - 1
        return result

    def percentiles(self, ps: Sequence[float]) -> list[int]:
        """Values at percentiles (0-100), as HdrHistogram reports them (highest equivalent
        value of the bucket reaching the target count), capped at the true maximum."""
        if self.total == 0:
            return [0 for _ in ps]
        cumulative = np.cumsum(self.counts)
        out = []
        for p in ps:
            if p <= 0:
                out.append(self.min)
                continue
            target = max(int(min(p, 100.0) * self.total / 100 + 0.5), 1)
            index = int(np.searchsorted(cumulative, target))
            value = int(self._highest_equivalent(np.array([index], dtype=np.int64))[0])
            out.append(min(max(value, self.min), self.max))
        return out

    def percentile(self, p: float) -> int:
        return self.percentiles([p])[0]

    @property
    def mean(self) -> float:
        return self.total_sum / self.total if self.total else 0.0

    def buckets(self) -> Iterable[tuple[int, int, int]]:
        """``(lowest, highest, count)`` of every non-empty bucket, in order."""
        nonzero = np.nonzero(self.counts)[0].astype(np.int64)
        lows = self._value_from_index(nonzero)
        highs = self._highest_equivalent(nonzero)
        for low, high, i in zip(lows.tolist(), highs.tolist(), nonzero.tolist(), strict=True):
            yield low, high, int(self.counts[i])

    def count_between(self, low: int, high: int) -> int:
        """Values recorded in ``[low, high)``, by bucket (HdrHistogram resolution)."""
        indexes = np.arange(len(self.counts), dtype=np.int64)
        values = self._value_from_index(indexes)
        mask = (values >= low) & (values < high)
        return int(self.counts[mask].sum())

    # Encoding (HdrHistogram V2, compressed, base64)

    def encode(self) -> str:
        nonzero = np.nonzero(self.counts)[0]
        limit = int(nonzero[-1]) + 1 if len(nonzero) else 0
        payload = _encode_counts(self.counts[:limit])
        header = _PAYLOAD_HEADER.pack(
            _ENCODING_COOKIE, len(payload), 0, self.digits, self.lowest, self.highest, 1.0
        )
        compressed = zlib.compress(header + payload)
        return base64.b64encode(
            _OUTER_HEADER.pack(_COMPRESSED_COOKIE, len(compressed)) + compressed
        ).decode("ascii")

    @classmethod
    def decode(cls, text: str | bytes) -> Histogram:
        """Decode; min/max/sum come from the buckets (sum is then approximate)."""
        try:
            raw = base64.b64decode(text, validate=True)
            cookie, length = _OUTER_HEADER.unpack_from(raw)
            if cookie & ~0xF0 != _COMPRESSED_COOKIE & ~0xF0 or length != len(raw) - 8:
                raise HistogramDecodeError("not a compressed V2 HdrHistogram")
            inner = zlib.decompress(raw[8:])
            cookie, size, _offset, digits, lowest, highest, _ratio = _PAYLOAD_HEADER.unpack_from(
                inner
            )
        except (ValueError, struct.error, zlib.error) as e:
            raise HistogramDecodeError(f"bad encoded histogram: {e}") from None
        if cookie & ~0xF0 != _ENCODING_COOKIE & ~0xF0:
            raise HistogramDecodeError("not a V2 HdrHistogram payload")
        h = cls(lowest, highest, digits)
        counts = _decode_counts(inner[_PAYLOAD_HEADER.size : _PAYLOAD_HEADER.size + size])
        if len(counts) > len(h.counts):
            raise HistogramDecodeError("histogram payload longer than its layout")
        h.counts[: len(counts)] = counts
        h._refresh()
        return h

    def _refresh(self) -> None:
        self.total = int(self.counts.sum())
        if self.total == 0:
            self.min = self.max = self.total_sum = 0
            return
        nonzero = np.nonzero(self.counts)[0].astype(np.int64)
        self.min = int(self._value_from_index(nonzero[:1])[0])
        self.max = int(self._highest_equivalent(nonzero[-1:])[0])
        lows = self._value_from_index(nonzero)
        highs = self._highest_equivalent(nonzero)
        mids = (lows + highs) // 2
        self.total_sum = int((mids * self.counts[nonzero]).sum())


def _encode_counts(counts: npt.NDArray[np.int64]) -> bytes:
    """ZigZag LEB128 varints of the counts, a run of zeros written as minus its length
    (HdrHistogram V2). Vectorised: one numpy pass whatever the number of buckets."""
    if len(counts) == 0:
        return b""
    is_zero = counts == 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], is_zero.view(np.int8), [0]))))
    run_starts, run_ends = edges[0::2], edges[1::2]
    nonzero = np.flatnonzero(~is_zero)
    positions = np.concatenate([nonzero, run_starts])
    tokens = np.concatenate([counts[nonzero], -(run_ends - run_starts)]).astype(np.int64)
    tokens = tokens[np.argsort(positions, kind="stable")]
    zz = ((tokens << 1) ^ (tokens >> 63)).view(np.uint64)
    nbytes = np.ones(len(zz), dtype=np.int64)
    for step in range(1, 9):
        nbytes += zz >= np.uint64(1 << (7 * step))
    # As many byte columns as the largest token needs (counts per interval rarely need
    # more than 3 of the 9): the 2-D work below shrinks with it.
    width = int(nbytes.max())
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(7)
    groups = (zz[:, None] >> shifts[None, :]) & np.uint64(0x7F)
    if width == 9:
        groups[:, 8] = zz >> np.uint64(56)  # the 9th byte carries 8 bits
    column = np.arange(width)[None, :]
    groups |= np.where(column < (nbytes[:, None] - 1), np.uint64(0x80), np.uint64(0))
    return groups.astype(np.uint8)[column < nbytes[:, None]].tobytes()


def _decode_counts(data: bytes) -> list[int]:
    counts: list[int] = []
    i = 0
    n = len(data)
    while i < n:
        zz = 0
        shift = 0
        for k in range(9):
            byte = data[i]
            i += 1
            if k == 8:
                zz |= byte << shift
                break
            zz |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        value = (zz >> 1) ^ -(zz & 1)
        if value < 0:
            counts.extend([0] * (-value))
        else:
            counts.append(value)
    return counts
