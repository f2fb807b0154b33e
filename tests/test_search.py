"""The search for the knee, in process: climb, bisect, confirm, disturbed steps run
again. Each step is a scripted row, not an attack, so every path is exercised exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tippingpoint.knee import KneeRule
from tippingpoint.model import AttackConfig
from tippingpoint.monitor import Monitor
from tippingpoint.search import run_sweep
from tippingpoint.sweep import CONFIRM_STEPS, Row, SweepConfig, render_table
from tippingpoint.targets import Target

KNEE = 50_000.0


def row(value: float, p99: float, **extra: Any) -> Row:
    fields: dict[str, Any] = {
        "offered": value,
        "achieved": value,
        "mean_ms": p99 / 3,
        "p50_ms": p99 / 4,
        "p99_ms": p99,
        "success": 1.0,
        "proxy_cpu_pct": 50.0,
        "tcp_established": 100,
        "packets_in_per_s": 1.0,
        "packets_out_per_s": 1.0,
        "saturated": False,
        "verdict": "",
        "p99_sustained_ms": p99,
    }
    return Row(**(fields | extra))


def scripted(
    latency: Callable[[float, int], float], **extra: Any
) -> tuple[list[tuple[float, int]], Any]:
    """A step runner whose p99 at ``value`` on its ``n``-th run there is ``latency``."""
    calls: list[tuple[float, int]] = []
    seen: dict[float, int] = {}

    def step(
        config: SweepConfig,
        value: float,
        index: int,
        monitor: Monitor | None,
        samples: list[dict[str, Any]],
    ) -> tuple[Row, bool]:
        n = seen.get(value, 0)
        seen[value] = n + 1
        calls.append((value, n))
        fields = extra["fields"](value, n) if "fields" in extra else {}
        return row(value, latency(value, n), **fields), False

    return calls, step


def config(**kw: Any) -> SweepConfig:
    settings: dict[str, Any] = {
        "attack": AttackConfig(targets=(Target("GET", "http://127.0.0.1:1/"),)),
        "start": 3000.0,
        "step": ("x", 2.0),
        "max_steps": 10,
        "refine": 3,
        "rule": KneeRule(),
    }
    settings.update(kw)
    return SweepConfig(**settings)


def sharp(value: float, _n: int) -> float:
    return 0.6 if value < KNEE else 80.0


def test_a_sharp_knee_is_climbed_bisected_confirmed_and_given_as_a_range() -> None:
    calls, step = scripted(sharp)
    result = run_sweep(config(), step=step)
    values = [v for v, _ in calls]
    # x2 to 96,000 (past the knee, so once more), then 72,000, 60,000, 54,000 (all
    # past), then each end of the knee again.
    assert values == [
        3000,
        6000,
        12000,
        24000,
        48000,
        96000,
        96000,
        72000,
        60000,
        54000,
        54000,
        48000,
    ]
    assert result.tipping_point == 48000 and result.first_bad == 54000
    assert result.last_good == 48000 and result.knee_range() == "48,000-54,000/s"
    assert result.confirmed.startswith("confirmed: 54,000/s past the knee in 2 of 2 runs")
    assert [r.repeat for r in result.rows][-2:] == ["confirm", "confirm"]
    table = render_table(result)
    assert "Tipping point: 48,000-54,000/s" in table and "(repeat)" in table


def test_a_first_bad_step_that_does_not_repeat_is_noise_and_the_climb_goes_on() -> None:
    # 24,000 is past the knee once (a one-second stall), never again.
    calls, step = scripted(lambda v, n: 30.0 if (v == 24000 and n == 0) else sharp(v, n))
    result = run_sweep(config(refine=0), step=step)
    values = [v for v, _ in calls]
    # 24,000 once more, and a third time as the two disagreed: 1 of 3 is noise.
    assert values[:8] == [3000, 6000, 12000, 24000, 24000, 24000, 48000, 96000]
    assert result.tipping_point == 48000 and result.first_bad == 96000
    assert "96,000/s past the knee in 3 of 3 runs" in result.confirmed


def test_a_last_good_step_that_does_not_repeat_moves_the_knee_down() -> None:
    # 48,000 passed once, by luck, then never again: the knee is below it.
    calls, step = scripted(lambda v, n: 0.6 if v < 40000 or (v == 48000 and n == 0) else 80.0)
    result = run_sweep(config(refine=0), step=step)
    assert result.tipping_point == 24000 and result.first_bad == 48000
    assert [v for v, _ in calls][-2:] == [48000, 24000]


def test_a_knee_that_never_settles_is_not_reported() -> None:
    # Every rate from 24,000 on is past the knee on its first run only: each knee
    # found is noise, until the steps run out.
    calls, step = scripted(lambda v, n: 0.6 if v < 20000 or n >= 1 else 80.0)
    result = run_sweep(config(refine=1), step=step)
    assert len(calls) <= 10 + CONFIRM_STEPS
    assert result.tipping_point is None
    assert "did not repeat" in result.reason or "no knee" in result.reason
    # --quick halves the confirmation's steps.
    calls, step = scripted(lambda v, n: 0.6 if v < 20000 or n >= 1 else 80.0)
    assert run_sweep(config(refine=1, confirm_steps=4), step=step).tipping_point is None
    assert len(calls) <= 10 + 4


def test_quick_halves_the_confirmation() -> None:
    from tippingpoint.bench import DEFAULT_SCENARIO, parse_scenario, quick

    steps = [
        e.spec.steps
        for e in quick(parse_scenario(DEFAULT_SCENARIO)).experiments
        if hasattr(e.spec, "steps")
    ]
    assert steps and all(s.confirm_steps == 4 for s in steps)


def test_a_disturbed_step_runs_again_and_is_not_the_knee() -> None:
    def fields(value: float, n: int) -> dict[str, Any]:
        if value == 12000 and n == 0:  # a busy loop took HAProxy's core for this run
            return {"sut_foreign": 0.9, "cores": {"culprits": "burn (pid 42) 90 % of a core"}}
        return {"sut_foreign": 0.01}

    calls, step = scripted(
        lambda v, n: 40.0 if (v == 12000 and n == 0) else sharp(v, n), fields=fields
    )
    result = run_sweep(config(), step=step)
    assert [v for v, _ in calls][:4] == [3000, 6000, 12000, 12000]
    disturbed = [r for r in result.rows if r.disturbed]
    assert len(disturbed) == 1 and "burn (pid 42)" in disturbed[0].disturbed
    assert disturbed[0].verdict.startswith("disturbed: ")
    assert result.rows[3].repeat == "disturbed" and not result.rows[3].disturbed
    assert result.tipping_point == 48000


def test_a_step_that_stays_disturbed_stops_the_sweep_and_names_the_culprit() -> None:
    def fields(value: float, n: int) -> dict[str, Any]:
        if value >= 12000:
            return {"sut_foreign": 0.5, "cores": {"culprits": "stress (pid 7) 50 % of a core"}}
        return {}

    calls, step = scripted(lambda v, n: 40.0 if v >= 12000 else 0.6, fields=fields)
    result = run_sweep(config(), step=step)
    assert [v for v, _ in calls] == [3000, 6000, 12000, 12000, 12000]
    assert result.too_busy and result.tipping_point is None
    assert result.reason.startswith("the machine was too busy to measure")
    assert "stress (pid 7)" in result.reason


def test_steal_on_the_client_s_cpu_makes_its_lateness_disturbed() -> None:
    """Steal is the client's CPU wanted and not given: a client-limited step with it
    is the machine's doing, run again, whatever the client's core looked like."""

    def fields(value: float, n: int) -> dict[str, Any]:
        if value == 12000 and n == 0:  # late, with 0.4 cores of its CPU stolen
            return {"client_load_pct": 60.0, "client_steal": 0.4, "saturated": True}
        return {}

    calls, step = scripted(sharp, fields=fields)
    result = run_sweep(config(), step=step)
    assert [v for v, _ in calls][:4] == [3000, 6000, 12000, 12000]
    assert "the VM's steal took 40 % of a core from the client's CPUs" in result.rows[2].verdict
    assert not result.client_limited and result.tipping_point == 48000


def test_falling_behind_below_a_rate_it_kept_is_a_stall_not_the_client_s_limit() -> None:
    # The generator kept its schedule at 24,000/s (past the knee); on the bisection's
    # 18,000/s it was late once: a stall, run again, not the client's limit.
    calls, step = scripted(
        lambda v, n: 0.6 if v < 20000 else 80.0,
        fields=lambda v, n: {"saturated": (v, n) == (18000, 0)},
    )
    result = run_sweep(config(), step=step)
    assert [v for v, _ in calls][:7] == [3000, 6000, 12000, 24000, 24000, 18000, 18000]
    stalled = [r for r in result.rows if r.disturbed]
    assert len(stalled) == 1 and stalled[0].offered == 18000
    assert "fell behind at 18,000/s after keeping its schedule at 24,000/s" in stalled[0].verdict
    assert not result.client_limited
    assert result.last_good == 19500 and result.first_bad == 21000


def test_falling_behind_with_room_on_its_cpus_is_a_stall_not_the_client_s_limit() -> None:
    # CI, on a fresh machine: the first step of a one-second sweep at 100/s was late at
    # p95 with the generator's CPUs 6 % busy. Run again, it keeps its schedule.
    calls, step = scripted(
        sharp,
        fields=lambda v, n: {
            "saturated": (v, n) == (3000, 0),
            "client_cpu_pct": 6.0,
            "client_load_pct": 9.0,
        },
    )
    result = run_sweep(config(), step=step)
    assert [v for v, _ in calls][:3] == [3000, 3000, 6000]
    assert "fell behind at 3,000/s with its CPUs 9 % busy: a stall" in result.rows[0].verdict
    assert not result.client_limited and result.tipping_point == 48000


def test_falling_behind_with_its_cpus_half_busy_or_more_is_the_client_s_limit() -> None:
    calls, step = scripted(
        sharp,
        fields=lambda v, n: {
            "saturated": v >= 24000,
            "client_cpu_pct": 40.0,
            "client_load_pct": 60.0 if v >= 24000 else 20.0,
        },
    )
    result = run_sweep(config(), step=step)
    assert result.client_limited and [v for v, _ in calls] == [3000, 6000, 12000, 24000]


def test_steal_does_not_disturb_a_shortfall_the_server_had_room_for() -> None:
    """A rate limit in a steal wave: the step fell short of its offered rate, the
    generator kept its schedule and the server's CPUs had room, steal included. The
    steal explains none of it: the step is past the knee, not disturbed."""

    def fields(value: float, n: int) -> dict[str, Any]:
        shared = {"client_steal": 0.3, "sut_foreign": 0.3, "sut_load_pct": 40.0}
        return shared | ({"achieved": value * 0.6} if value >= 12000 else {})

    _calls, step = scripted(lambda v, n: 0.6, fields=fields)
    result = run_sweep(config(), step=step)
    assert not any(r.disturbed for r in result.rows)
    assert result.tipping_point == 11250 and result.first_bad == 12000


def test_a_shortfall_with_no_room_left_on_the_server_s_cpus_is_disturbed() -> None:
    def fields(value: float, n: int) -> dict[str, Any]:
        if value == 12000 and n == 0:
            return {"achieved": 9000.0, "sut_foreign": 0.4, "sut_load_pct": 99.0}
        return {"sut_load_pct": 40.0}

    calls, step = scripted(sharp, fields=fields)
    result = run_sweep(config(), step=step)
    assert [v for v, _ in calls][:4] == [3000, 6000, 12000, 12000]
    assert result.rows[2].disturbed and result.tipping_point == 48000


def test_a_closed_sweep_is_not_ended_by_one_lucky_run() -> None:
    """Throughput moves by up to 15 % between runs of one number of connections: the
    best before is each value's median, and so is the tipping point."""
    carried = {8: [24_100.0], 16: [33_100.0, 29_000.0, 29_500.0], 32: [29_600.0], 64: [30_000.0]}

    def fields(value: float, n: int) -> dict[str, Any]:
        runs = carried.get(int(value), [30_000.0])
        return {"achieved": runs[min(n, len(runs) - 1)]}

    _calls, step = scripted(lambda v, n: 0.6 if v <= 64 else 80.0, fields=fields)
    result = run_sweep(config(closed=True, start=8.0, refine=1), step=step)
    assert result.knee_connections == 64 and result.first_bad is not None
    assert result.tipping_point == 30_000.0
    assert not any(r.past for r in result.rows if r.key <= 64)


def test_foreign_load_on_a_good_step_does_not_matter() -> None:
    calls, step = scripted(sharp, fields=lambda v, n: {"sut_foreign": 0.5})
    result = run_sweep(config(), step=step)
    # Every step within the knee counts; only a step past it would be run again.
    assert [v for v, _ in calls][:5] == [3000, 6000, 12000, 24000, 48000]
    assert result.too_busy


def test_a_full_client_core_of_its_own_is_the_client_limit() -> None:
    calls, step = scripted(
        sharp,
        fields=lambda v, n: {
            "client_load_pct": 97.0 if v >= 24000 else 50.0,
            "client_foreign": 0.02,
        },
    )

    def saturating(*args: Any) -> tuple[Row, bool]:
        r, stopped = step(*args)
        r.saturated = r.client_load_pct is not None and r.client_load_pct >= 95
        return r, stopped

    result = run_sweep(config(), step=saturating)
    assert result.client_limited and result.tipping_point is None
    assert [v for v, _ in calls] == [3000, 6000, 12000, 24000]


def test_a_last_good_step_with_an_old_bad_run_still_confirms_by_its_majority() -> None:
    # 48,000 stalls on its first run only; the knee is really between 48,000 and 54,000.
    def latency(value: float, n: int) -> float:
        if value == 48000 and n == 0:
            return 30.0
        return 0.6 if value < 50000 else 80.0

    calls, step = scripted(latency)
    result = run_sweep(config(), step=step)
    assert result.tipping_point == 48000 and result.first_bad == 54000, result.reason
    assert "48,000/s within it in 3 of 4" in result.confirmed
    assert len(calls) <= 10 + CONFIRM_STEPS


def test_a_stall_during_the_climb_costs_two_steps_not_the_bisection() -> None:
    calls, step = scripted(lambda v, n: 30.0 if (v == 12000 and n == 0) else sharp(v, n))
    result = run_sweep(config(), step=step)
    values = [v for v, _ in calls]
    assert values[2:6] == [12000, 12000, 12000, 24000]  # noise by 1 of 3, no bisection
    assert result.tipping_point == 48000 and result.first_bad == 54000
    assert len(calls) == 14  # the sharp knee's 12, and two for the stall


def test_a_knee_whose_ends_did_not_settle_falls_back_on_repeated_majorities() -> None:
    from tippingpoint.search import _Search

    search = _Search(config(), None, None, scripted(sharp)[1])
    # As a run of the bench here: 46,500/s undecided, 45,000 and 48,000 repeated.
    search.runs = {
        24000.0: [False],
        42000.0: [False, False, False],
        45000.0: [True, False, False, False],
        46500.0: [True, False],
        48000.0: [True, False, True],
        96000.0: [True],
    }
    assert search.settled() == (45000.0, 48000.0)
    search.runs[48000.0] = [True, False]  # nothing past the knee twice by majority
    assert search.settled() is None


def test_a_step_whose_requests_failed_is_not_run_again() -> None:
    """Failures are an event (a backend died), not noise: the climb stops there and,
    without a good step below, there is no knee to give."""
    calls, step = scripted(
        lambda v, n: 0.6, fields=lambda v, n: {"success": 0.9} if v == 3000 else {}
    )
    result = run_sweep(config(), step=step)
    assert calls == [(3000.0, 0)]
    assert result.tipping_point is None


def test_client_steal_counts_the_client_s_own_cpus_only() -> None:
    from tippingpoint.cores import CoreWindow, Group

    window = CoreWindow(
        1.0,
        [
            Group(frozenset({0}), {"client": 0.5, "bench": 0.01}, busy=0.6, steal=0.3),
            Group(frozenset({1}), {"proxy": 0.4}, busy=0.4, steal=0.2),
            Group(frozenset({2}), {"client": 0.2, "proxy": 0.2}, busy=0.4, steal=0.5),
        ],
        [],
    )
    # CPU 2's steal is the system under test's foreign load, not counted twice.
    assert window.client_steal() == 0.3
    assert window.sut_foreign() == 0.2 + 0.5
