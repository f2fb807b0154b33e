"""The open-model schedule, in process, on a fake clock: every hit of every pacer is
taken up once, by the right shard, at its time; a loop that falls behind takes up at most
a batch per turn and counts what it could not send as missed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tippingpoint.engine.schedule import BATCH, NEVER, TICKS, Schedule
from tippingpoint.pacer import Pacer, parse_pace

S = 1_000_000_000


class FakeWaker:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.armed_at = 0
        self.periodic = False
        self.period = 0
        self.closed = False

    def arm(self, at_ns: int) -> None:
        self.armed_at = at_ns

    def arm_periodic(self, first_ns: int, period_ns: int) -> None:
        self.periodic = True
        self.armed_at = first_ns
        self.period = period_ns

    def close(self) -> None:
        self.closed = True


class Run:
    """A schedule on a fake clock that wakes exactly when it asked to."""

    def __init__(
        self,
        pacer: Pacer,
        index: int = 0,
        count: int = 1,
        start: int = S,
        ticks: tuple[tuple[int, int], ...] = TICKS,
    ) -> None:
        self.now = start
        self.hits: list[tuple[int, int, int]] = []
        self.ended = 0
        self.missed = 0
        self.soon: list[Callable[[], None]] = []
        self.waker: FakeWaker | None = None

        def waker(callback: Callable[[], None]) -> FakeWaker:
            self.waker = FakeWaker(callback)
            return self.waker

        self.schedule = Schedule(
            pacer,
            start,
            index,
            count,
            lambda n, intended, now: self.hits.append((n, intended, now)),
            self._end,
            self._miss,
            waker,
            self.soon.append,
            clock=lambda: self.now,
            ticks=ticks,
        )

    def _end(self) -> None:
        self.ended += 1

    def _miss(self, count: int) -> None:
        self.missed += count

    def to_the_end(self, limit: int = 1_000_000) -> None:
        """Wake when asked (or on the tick) until the plan ends."""
        schedule, waker = self.schedule, self.waker
        assert waker is not None
        schedule.begin()
        for _ in range(limit):
            while self.soon:
                self.soon.pop(0)()
            if schedule.ended:
                return
            if waker.periodic:
                self.now = max(self.now + waker.period, waker.armed_at)
            else:  # a one-shot alarm fires once: disarmed, as Alarm does
                self.now = max(self.now, waker.armed_at)
                waker.armed_at = 0
            schedule.pump()
        raise AssertionError("the schedule did not end")


@pytest.mark.parametrize(
    "pace",
    ["2s@1000", "1s@0->3000", "0.5s@400, 1s@400->20000, 0.2s@20000", "1s@50000", "0.1s@90000"],
)
@pytest.mark.parametrize("count", [1, 3])
def test_every_hit_of_the_plan_is_taken_up_once_by_its_shard_at_its_time(
    pace: str, count: int
) -> None:
    pacer = Pacer(parse_pace(pace))
    taken: list[int] = []
    for index in range(count):
        run = Run(Pacer(parse_pace(pace)), index, count)
        run.to_the_end()
        assert run.ended == 1 and run.missed == 0
        for n, intended, now in run.hits:
            assert n % count == index
            t = pacer.time_of(n)
            assert t is not None and abs(intended - (S + int(t * 1e9))) <= 1  # rounding
            assert 0 <= now - intended <= 250_000  # within the coarsest tick
        taken += [n for n, _, _ in run.hits]
    assert sorted(taken) == list(range(pacer.total_hits()))


def test_a_dense_plan_wakes_on_a_tick_and_a_sparse_one_per_hit() -> None:
    for rate, tick in ((5_000, 0), (20_000, TICKS[0][1]), (60_000, TICKS[1][1])):
        run = Run(Pacer.constant(rate, 0.01))
        run.schedule.begin()
        assert run.waker is not None
        assert run.waker.periodic == bool(tick) and run.waker.period == tick
    sparse = Run(Pacer.constant(100, 1.0))
    sparse.schedule.begin()
    assert sparse.waker is not None and sparse.waker.armed_at == S + 10_000_000


def test_a_tick_asked_for_applies_above_one_hit_per_tick() -> None:
    from tippingpoint.model import AttackConfig

    ticks = AttackConfig(targets=(), tick=0.001).ticks(TICKS)
    assert ticks == ((1000, 1_000_000),)
    assert AttackConfig(targets=()).ticks(TICKS) == TICKS
    for rate, period in ((500, 0), (5_000, 1_000_000)):
        run = Run(Pacer.constant(rate, 0.5), ticks=ticks)
        run.to_the_end()
        assert run.waker is not None and run.waker.period == period
        assert len(run.hits) == rate // 2 and run.missed == 0
        late = max(now - intended for _, intended, now in run.hits)
        assert late <= period and (late >= period // 2 if period else late == 0)


def test_a_loop_far_behind_takes_up_a_batch_per_turn_and_counts_what_it_missed() -> None:
    # 10^9 hits a second, and the loop's first turn comes 1.5 s late: the hits more
    # than a second behind are missed, the rest taken up a batch per turn of the loop.
    run = Run(Pacer.constant(1e9, 2.0))
    run.now += int(1.5 * S)
    run.schedule.begin()
    assert run.missed == 500_000_000
    assert len(run.hits) == BATCH and len(run.soon) == 1
    n, intended, now = run.hits[0]
    assert n == 500_000_000 and now - intended == S
    run.soon.pop()()
    assert len(run.hits) == 2 * BATCH and len(run.soon) == 1
    assert [h[0] for h in run.hits] == list(range(n, n + 2 * BATCH))
    run.schedule.stop()
    assert run.ended == 1 and run.schedule.next_due == NEVER


def test_missed_hits_are_this_shard_s_own() -> None:
    run = Run(Pacer.constant(1000, 10.0), index=1, count=4)
    run.schedule.begin()
    run.now += 3 * S  # 3,000 hits of the plan due, 750 of this shard
    run.schedule.pump()
    taken = {n for n, _, _ in run.hits}
    assert all(n % 4 == 1 for n in taken)
    # Hits 1, 5, ..., 2997 are due by now: 500 more than a second ago (missed), 250 since.
    assert run.missed == 500 and len(run.hits) == 250
    assert all(run.now - intended <= S for _, intended, _ in run.hits[1:])


def test_stop_ends_the_plan_once() -> None:
    run = Run(Pacer.constant(1000, 10.0))
    run.schedule.begin()
    run.schedule.stop()
    run.schedule.stop()
    run.now += S
    run.schedule.pump()
    assert run.ended == 1 and len(run.hits) == 1


def test_the_closed_plan_shares_the_requests_and_numbers_hits_as_the_schedule_does() -> None:
    from tippingpoint.engine.schedule import ClosedPlan

    taken: list[int] = []
    for index in range(3):
        plan = ClosedPlan(10, None, S, index, 3)
        while (n := plan.take(S)) >= 0:
            assert n % 3 == index
            taken.append(n)
    assert sorted(taken) == list(range(10))
    timed = ClosedPlan(None, 2.0, S, 0, 1)
    assert timed.take(S + 2 * S - 1) == 0 and timed.take(S + 2 * S) == -1
    stopped = ClosedPlan(None, None, S, 0, 1)
    assert stopped.take(S) == 0
    stopped.stop()
    assert stopped.take(S) == -1
