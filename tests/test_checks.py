"""What physics guarantees, checked in the report: each invariant on report entries."""

from __future__ import annotations

from typing import Any

from tippingpoint.bench.checks import invariants
from tippingpoint.report.html import render_html


def sweep(
    name: str,
    frontend: str,
    last_good: float | None,
    first_bad: float | None,
    keepalive: bool = True,
    model: str = "open",
    steps: list[dict[str, Any]] | None = None,
    client_limited: bool = False,
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "sweep",
        "setup": "",
        "frontend": frontend,
        "keepalive": keepalive,
        "sweep": {
            "model": model,
            "tipping_point": last_good,
            "last_good": last_good,
            "first_bad": first_bad,
            "client_limited": client_limited,
            "steps": steps or [],
        },
    }


def test_physics_agrees_with_a_sound_bench() -> None:
    assert (
        invariants(
            [
                sweep("HTTP", "http", 54000, 60000),
                sweep("TLS", "https", 45000, 48000),
                sweep("TLS new", "https", 675, 1012, keepalive=False),
                sweep("closed", "http", 59000, None, model="closed", steps=[{"achieved": 59900}]),
            ]
        )
        == []
    )


def test_a_plain_http_knee_below_the_tls_knee_is_a_warning_with_both_figures() -> None:
    (warning,) = invariants(
        [sweep("HTTP", "http", 8438, 12656), sweep("TLS", "https", 22781, 34172)]
    )
    assert "8,438-12,656/s" in warning and "22,781-34,172/s" in warning
    assert "TLS costs it more per request" in warning


def test_an_open_knee_above_the_closed_loop_and_tls_cheaper_than_http() -> None:
    warnings = invariants(
        [
            sweep("HTTP", "http", 70000, 80000),
            sweep("closed", "http", 60000, None, model="closed", steps=[{"achieved": 60000}]),
            {"name": "cost", "kind": "tls-cost", "tls_cost": {"ratios": [{"tls_over_http": 0.8}]}},
        ]
    )
    assert len(warnings) == 2
    assert "above the most the closed loop carried" in warnings[0]
    assert "0.80x" in warnings[1]


def test_client_limited_with_room_to_spare_is_questioned() -> None:
    limited = sweep(
        "TLS", "https", None, None, client_limited=True,
        steps=[{"client_load_pct": 44.0, "disturbed": ""}],
    )  # fmt: skip
    (warning,) = invariants([limited])
    assert "client-limited with the client's CPUs 44 % busy" in warning
    full = sweep(
        "TLS", "https", None, None, client_limited=True,
        steps=[{"client_load_pct": 97.0, "disturbed": ""}],
    )  # fmt: skip
    assert invariants([full]) == []


def test_the_report_shows_the_warnings_and_the_placement_table() -> None:
    page = render_html(
        {
            "title": "t",
            "machine": "m",
            "summary": [],
            "experiments": [],
            "monitor": {
                "t": [], "tcp_established": [], "mem_used_mib": [], "rx_packets": [],
                "tx_packets": [], "roles": {},
            },
            "config": "",
            "warnings": ["The plain HTTP keep-alive knee (1-2/s) is below ..."],
            "placement": [
                {"role": "proxy", "pids": [7], "threads": 2, "cpus_asked": "1", "cpus_seen": "1"}
            ],
        }
    )  # fmt: skip
    assert '<div class="warning">Warning: The plain HTTP keep-alive knee (1-2/s)' in page
    assert "<h2>Where each process ran</h2>" in page and '<td class="l">proxy</td>' in page
