"""Knee detection on synthetic latency curves."""

from __future__ import annotations

import pytest

from tippingpoint.knee import KneeRule, Step, find_knee, judge, parse_slo


def curve(rates: list[float], p99s: list[float], **kw: object) -> list[Step]:
    return [Step(r, r, p / 2, p, 1.0, **kw) for r, p in zip(rates, p99s, strict=True)]  # type: ignore[arg-type]


def test_flat_then_exponential() -> None:
    # The article's Vegeta table: ~2-5 ms until 31,500/s, then 30 ms.
    steps = curve(
        [10_000, 15_000, 20_000, 25_000, 30_000, 31_500, 32_000],
        [2.3, 2.5, 2.7, 2.87, 3.84, 5.3, 30.0],
    )
    index, verdict = find_knee(steps, KneeRule())
    assert index == 6 and verdict is not None and verdict.past_knee
    assert "p99 30.00 ms" in verdict.reason


def test_microsecond_noise_is_not_a_knee() -> None:
    steps = curve([1000, 2000, 4000, 8000], [0.2, 0.15, 0.5, 4.9])  # 32x but < 5 ms above
    assert find_knee(steps, KneeRule()) == (None, None)


def test_the_knee_is_the_sharp_climb_not_the_creep() -> None:
    # Measured here through HAProxy (serve and HAProxy sharing one core): p99 creeps to
    # 4x its low-load value while every request is still answered on time, then leaps.
    steps = curve(
        [10_000, 12_000, 14_400, 17_280, 20_736, 24_883, 29_860, 35_832],
        [1.23, 1.40, 2.39, 2.21, 3.13, 5.25, 32.35, 267.77],
    )
    index, verdict = find_knee(steps, KneeRule())
    assert index == 6 and verdict is not None and "p99 32.35 ms" in verdict.reason
    early, _ = find_knee(steps, KneeRule(floor_ms=2.0))
    assert early == 5


def test_slo_success_and_achieved_rate() -> None:
    rule = KneeRule(slo=parse_slo("p99<4ms"))
    steps = curve([1000, 2000, 3000], [1.0, 2.0, 4.5])
    index, verdict = find_knee(steps, rule)
    assert index == 2 and verdict is not None and "SLO 4 ms" in verdict.reason
    failing = Step(5000, 5000, 1, 2, 0.995)
    assert "success 99.50 %" in judge(failing, 1.0, KneeRule()).reason
    slow = Step(5000, 4500, 1, 2, 1.0)
    assert "achieved 4,500/s" in judge(slow, 1.0, KneeRule()).reason


def test_a_saturated_generator_is_the_client_limit_not_a_knee() -> None:
    steps = [*curve([1000, 2000], [1.0, 1.1]), Step(4000, 4000, 0.5, 1.2, 1.0, saturated=True)]
    index, verdict = find_knee(steps, KneeRule())
    assert index == 2 and verdict is not None
    assert verdict.client_limited and not verdict.past_knee and "client" in verdict.reason


def test_a_server_that_tipped_first_is_a_knee_even_if_the_client_then_fell_behind() -> None:
    steps = [*curve([1000, 2000], [1.0, 1.1]), Step(4000, 3000, 5, 90, 1.0, saturated=True)]
    index, verdict = find_knee(steps, KneeRule())
    assert index == 2 and verdict is not None and verdict.past_knee
    assert not verdict.client_limited and "fell behind too" in verdict.reason


@pytest.mark.parametrize(
    ("text", "value"),
    [("p99<50ms", (99, 50)), ("p99.9 < 1s", (99.9, 1000)), ("p50<300us", (50, 0.3))],
)
def test_parse_slo(text: str, value: tuple[float, float]) -> None:
    assert parse_slo(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["p99>50ms", "99<50ms", "p99<50", "p0<1ms", "p101<1ms"])
def test_bad_slo(text: str) -> None:
    with pytest.raises(ValueError, match="SLO"):
        parse_slo(text)


def test_a_closed_sweep_tips_where_throughput_stops_growing_or_latency_climbs() -> None:
    # Measured here through HAProxy with 1, 2, ... 128 connections in a closed loop: the
    # throughput levels off at 64 and falls at 96; p99 climbs past 5 ms at 128.
    conns = [1, 2, 4, 8, 16, 32, 64, 96, 128]
    achieved = [8890, 20897, 26810, 32662, 37695, 39432, 39873, 38238, 36856]
    p99s = [0.17, 0.22, 0.26, 0.45, 0.79, 1.35, 2.62, 3.87, 5.63]
    steps = [Step(0, a, p / 2, p, 1.0) for a, p in zip(achieved, p99s, strict=True)]
    rule = KneeRule()
    base = min(p99s[:2])
    best = 0.0
    verdicts = []
    for step in steps:
        verdicts.append(judge(step, base, rule, best))
        best = max(best, step.achieved)
    first = next(i for i, v in enumerate(verdicts) if v.past_knee)
    # 96's 4 % fall is within the noise between runs of one step: the knee is 128's p99.
    assert conns[first] == 128
    assert "p99 5.63 ms" in verdicts[-1].reason
    fell = judge(Step(0, 32_000, 1.0, 2.0, 1.0), base, rule, 39_873)
    assert fell.past_knee
    assert "throughput 32,000/s < 85 % of the best before (39,873/s)" in fell.reason
    # No offered rate: never "achieved < offered".
    assert all("of offered" not in v.reason for v in verdicts)
    # Without a best (an open sweep), a fall in throughput alone is no knee.
    assert not judge(steps[7], base, rule).past_knee


def test_a_client_whose_lateness_is_its_own_is_the_limit_even_when_latency_moved() -> None:
    # TLS with a new connection per request: the client fell behind at 375/s and the
    # latency it measured (its own lateness included) climbed; HAProxy was at 30 %.
    steps = [
        *curve([200, 300], [5.8, 11.2]),
        Step(375, 372, 21, 62, 1.0, saturated=True, client_cpu=0.63, fixed_pool=True),
    ]
    index, verdict = find_knee(steps, KneeRule())
    assert index == 2 and verdict is not None
    assert verdict.client_limited and not verdict.past_knee
    assert verdict.reason.startswith("client-limited: the load generator fell behind (its ")
    assert "p99 62.00 ms" in verdict.reason  # what moved is still said
    # The same step from a generator at the end of its CPU, connections free to grow.
    cpu_bound = Step(375, 372, 21, 62, 1.0, saturated=True, client_cpu=0.97)
    assert judge(cpu_bound, 5.8, KneeRule()).client_limited
    # Without falling behind, a fixed pool changes nothing: the server's knee is a knee.
    on_time = Step(375, 300, 21, 62, 1.0, client_cpu=0.5, fixed_pool=True)
    assert judge(on_time, 5.8, KneeRule()).past_knee
