"""The generator-saturation verdict on synthetic summaries (no sockets)."""

from __future__ import annotations

from tippingpoint.report.merge import Summary


def summary(
    lateness_us: list[int],
    sent: int = 1000,
    planned: int = 1000,
    queued: int = 0,
    done: int | None = None,
) -> Summary:
    """``done``: hits taken up (answered or failed); as many as were sent by default."""
    s = Summary()
    s.hists["lateness"].record_many(lateness_us)
    s.sent, s.planned, s.queued = sent, planned, queued
    s.done = sent if done is None else done
    s.codes = {200: s.done}  # answered (a run in which none succeeded has its own verdict)
    return s


def test_on_schedule() -> None:
    saturated, verdict = summary([50] * 985 + [900] * 15).saturation()
    assert not saturated and verdict.startswith("OK") and "0.900 ms" in verdict


def test_late_sends() -> None:
    saturated, verdict = summary([50] * 900 + [5000] * 100).saturation()
    assert saturated and "p95 send lateness 5.0 ms" in verdict and "not the server" in verdict


def test_one_stall_is_not_saturation() -> None:
    saturated, verdict = summary([50] * 980 + [15000] * 20).saturation()
    assert not saturated and "p99 lateness 15.0" in verdict


def test_missing_sends_but_not_queueing() -> None:
    saturated, verdict = summary([10] * 100, sent=900).saturation()
    assert saturated and "took up 900 of 1000 planned" in verdict
    # Hits taken up on time whose connects then failed or never got through (a server
    # that stops accepting): the server held them, not the generator.
    assert not summary([10] * 100, sent=900, done=1000).saturation()[0]
    # Waiting for a connection is the server's slowness (or the cap), not the client's.
    assert not summary([10] * 100, queued=500).saturation()[0]


def test_an_interrupted_run_is_not_called_saturated_for_missing_sends() -> None:
    s = summary([10] * 100, sent=500)
    s.interrupted = True
    assert not s.saturation()[0]


def test_a_generator_without_cpu_left_is_saturated_even_on_schedule() -> None:
    # Hits left on time, but a process at 100 % of its core answers responses late, its
    # connections stay busy and hits queue: that latency would be blamed on the server.
    s = summary([10] * 100, queued=500)
    s.cpu_us, s.cpu_wall_s = 9_900_000, 10.0
    saturated, verdict = s.saturation()
    assert saturated and "used 99 % of their cores" in verdict
    assert "at the end of its CPU" in verdict and "maximum may be the client's" in verdict
    s.offered_rate = 100.0  # an open-model run has a schedule to fall behind
    assert "fell behind its schedule" in s.saturation()[1]
    s.cpu_us = 6_000_000
    saturated, verdict = s.saturation()
    assert not saturated and verdict.endswith("60 % of its cores)")
    assert summary([10] * 100).cpu_busy is None  # streams from before (or from Vegeta)


def test_a_run_in_which_nothing_succeeded_is_failed_not_ok_or_saturated() -> None:
    s = summary([50] * 1000)
    s.codes = {0: 1000}
    s.errors = {"refused": [1000, "ConnectionRefusedError: [Errno 111] Connect call failed"]}
    saturated, verdict = s.saturation()
    assert not saturated
    assert verdict.startswith("FAILED: none of the 1,000 requests succeeded (refused 1,000: ")
