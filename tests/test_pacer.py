"""Load models on synthetic clocks: no sockets."""

from __future__ import annotations

import math

import pytest

from tippingpoint.pacer import (
    Pacer,
    Segment,
    format_duration,
    parse_duration,
    parse_pace,
    parse_rate,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("1m30s", 90),
        ("250ms", 0.25),
        ("2h", 7200),
        ("1.5s", 1.5),
        ("10", 10),
        ("100us", 1e-4),
        ("1h2m3s", 3723),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5", "5s10", "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1.5, "1.5s"),
        (0.108272568, "108.272568ms"),
        (90, "1m30s"),
        (3723.5, "1h2m3.5s"),
        (145.082066e-6, "145.082µs"),
        (5e-7, "500ns"),
    ],
)
def test_format_duration_like_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "rate"),
    [("1000", 1000), ("1000/1s", 1000), ("5/100ms", 50), ("600/m", 10), ("60/1m", 1), ("0", 0)],
)
def test_parse_rate(text: str, rate: float) -> None:
    assert parse_rate(text) == pytest.approx(rate)


def test_constant_rate_times_are_n_over_r() -> None:
    pacer = Pacer.constant(1000, duration=2)
    assert [pacer.time_of(n) for n in (0, 1, 500, 1999)] == pytest.approx([0, 0.001, 0.5, 1.999])
    assert pacer.time_of(2000) is None
    assert pacer.total_hits() == 2000


def test_requests_cap() -> None:
    pacer = Pacer.constant(100, requests=5)
    assert pacer.time_of(4) == pytest.approx(0.04)
    assert pacer.time_of(5) is None


def test_ramp_hits_match_the_integral() -> None:
    # 0 -> 1000/s over 10 s: 5,000 hits; half of them come in the last 2.93 s.
    pacer = Pacer([Segment(10, 0, 1000)])
    assert pacer.total_hits() == 5000
    assert pacer.time_of(0) == 0
    for n in (1, 10, 1250, 2500, 4999):
        t = pacer.time_of(n)
        assert t is not None
        assert 100 * t * t / 2 == pytest.approx(n, rel=1e-9)  # H(t) = r1 t^2 / (2D)
    assert pacer.time_of(5000) is None


def test_step_plan_and_hits_due() -> None:
    segments = parse_pace("10s@1000, 30s@1000->5000, 20s@5000")
    assert segments == [Segment(10, 1000, 1000), Segment(30, 1000, 5000), Segment(20, 5000, 5000)]
    pacer = Pacer(segments)
    assert pacer.end == 60
    total = 10_000 + 90_000 + 100_000
    assert pacer.total_hits() == total
    assert pacer.time_of(10_000) == pytest.approx(10.0)
    assert pacer.time_of(100_000) == pytest.approx(40.0)
    assert pacer.time_of(total - 1) == pytest.approx(60 - 1 / 5000)
    assert pacer.time_of(total) is None
    # Going backwards works (the cursor resets).
    assert pacer.time_of(1) == pytest.approx(0.001)
    # Rates within the ramp: the gap between hits shrinks from 1 ms to 0.2 ms.
    t1, t2 = pacer.time_of(10_000), pacer.time_of(10_001)
    assert t1 is not None and t2 is not None and t2 - t1 == pytest.approx(0.001, rel=1e-3)
    assert pacer.hits_due(25) == pytest.approx(10_000 + 1000 * 15 + 4000 / 30 * 15**2 / 2)


def test_interleaved_processes_cover_the_plan_exactly() -> None:
    plan = "2s@100->400, 1s@0, 1s@300"
    single = Pacer(parse_pace(plan))
    times = []
    n = 0
    while (t := single.time_of(n)) is not None:
        times.append(t)
        n += 1
    procs = 3
    union = []
    for k in range(procs):
        pacer = Pacer(parse_pace(plan))
        j = k
        while (t := pacer.time_of(j)) is not None:
            union.append(t)
            j += procs
    assert sorted(union) == pytest.approx(times)
    assert len(times) == 500 + 0 + 300
    assert not any(2.0 <= t < 3.0 for t in times)  # the pause


def test_duration_cuts_a_longer_plan() -> None:
    pacer = Pacer(parse_pace("10s@100"), duration=1.0)
    assert pacer.end == 1.0
    assert pacer.total_hits() == 100
    assert pacer.time_of(99) == pytest.approx(0.99)
    assert pacer.time_of(100) is None


@pytest.mark.parametrize("text", ["", "10s", "x@10", "0s@10", "10s@abc"])
def test_bad_pace(text: str) -> None:
    with pytest.raises(ValueError):
        parse_pace(text)


def test_constant_needs_an_end() -> None:
    with pytest.raises(ValueError, match="--duration or --requests"):
        Pacer.constant(10)
    assert math.isclose(Pacer.constant(10, requests=3).end, 1.3)
