"""The tls-cost figures from steps: ratios, a handshake's cost, the sentence."""

from __future__ import annotations

import pytest

from tippingpoint.bench.kinds.tls_cost import TLSCost
from tippingpoint.sweep import Row


def row(offered: float, cpu: float | None, achieved: float | None = None, **kw: object) -> Row:
    fields: dict = dict(
        offered=offered,
        achieved=offered if achieved is None else achieved,
        mean_ms=1.0,
        p50_ms=1.0,
        p99_ms=2.0,
        success=1.0,
        proxy_cpu_pct=cpu,
        tcp_established=10,
        packets_in_per_s=0.0,
        packets_out_per_s=0.0,
        saturated=False,
        verdict="",
    )
    fields.update(kw)
    return Row(**fields)


def test_ratio_handshake_cost_and_the_sentence() -> None:
    cost = TLSCost()
    for rate, cpu in ((1000, 8.0), (2000, 15.0), (4000, 30.0)):
        cost.add("http", row(rate, cpu))
    for rate, cpu in ((1000, 11.0), (2000, 20.0), (4000, 39.0)):
        cost.add("tls", row(rate, cpu))
    cost.add("tls-new", row(1000, 40.0))  # 400 µs a request against 110 kept: 290 µs
    cost.add("tls-new", row(2000, 55.0, achieved=1500, saturated=True))
    assert cost.ratios() == [
        (1000, pytest.approx(11 / 8)),
        (2000, pytest.approx(20 / 15)),
        (4000, pytest.approx(1.3)),
    ]
    assert cost.handshakes() == [(1000, pytest.approx(290.0))]
    assert cost.sentence() == (
        "TLS keep-alive costs HAProxy 1.3x the CPU of plain HTTP (1.3-1.4x from 1,000 to "
        "4,000/s). "
        "Each new TLS connection costs 290 µs of HAProxy CPU (measured at 1,000/s). "
        "New connections at 2,000/s: short of the rate: 1,500/s achieved "
        "(the client fell behind, HAProxy CPU 55%)."
    )
    data = cost.to_json()
    assert data["handshake_us"] == pytest.approx(290.0)
    assert [w["key"] for w in data["protocols"]] == ["http", "tls", "tls-new"]
    assert data["protocols"][2]["steps"][1]["limited"].startswith("short of the rate")


def test_late_sends_still_count_when_the_rate_was_served() -> None:
    cost = TLSCost()
    point = cost.add("tls-new", row(500, 30.0, achieved=462, saturated=True))
    assert point.valid and point.us_per_request == pytest.approx(30.0 * 10_000 / 462)


def test_no_figures_say_so_instead_of_inventing_them() -> None:
    cost = TLSCost()
    cost.add("http", row(100, 0.5))  # below 5 % of a core: noise, no ratio
    cost.add("tls", row(100, 0.9))
    cost.add("tls-new", row(100, None))  # not sampled
    cost.add("tls-new", row(200, 5.0, success=0.5))
    assert cost.ratios() == [] and cost.handshakes() == []
    assert cost.sentence() == (
        "No rate gave both HTTP and TLS keep-alive figures. "
        "New connections at 200/s: failing (50.0% success)."
    )


def test_a_client_limited_tls_sweep_says_why_in_cpu_per_request() -> None:
    from tippingpoint.bench import DEFAULT_SCENARIO, parse_scenario
    from tippingpoint.bench.experiments import sweep_row
    from tippingpoint.sweep import SweepResult

    scenario = parse_scenario(DEFAULT_SCENARIO)
    exp = next(e for e in scenario.experiments if e.frontend == "https" and not e.request.keepalive)
    last = row(1000, 36.5, achieved=660, saturated=True, client_cpu_pct=89.0)
    result = SweepResult([last], None, 1000, True, "client-limited", [])
    text = sweep_row(result, exp, scenario)
    assert text.startswith("client-limited at 1,000/s (HAProxy CPU 36% at that step)")
    # 89 % of one core over 660/s: 1,348 µs a request; HAProxy 36.5 % over 660/s: 553 µs.
    assert "it spent 1,348 µs of CPU per request where HAProxy spent 553 µs" in text
    assert "TLS session resumption (tls_resume = true)" in text
