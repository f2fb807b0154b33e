"""The search for the knee: climb, bisect, confirm; a disturbed step runs again.

A sweep climbs from its first rate (or connections) until a step is past the knee or
the client is the limit, bisects between the last good and the first bad step
(``refine``), then **confirms** the knee: the first bad and the last good step run
again, alternating, once each, and a third time each when a repeat disagreed. The
knee stands when each rate's runs agree, or by the majority of three; a first bad
step whose runs were mostly good was noise, and the climb goes on from it; a last
good step whose runs were mostly bad moves the knee down. The tipping point is the
range from the last good to the first bad step.

A step whose latency went up while another load took the cores it measures (foreign
load or steal on the system under test's CPUs, or the client's CPUs full with
someone else's work: see :mod:`tippingpoint.cores`) is *disturbed*: it says nothing
about the server, so it runs again, twice at most. One that stays disturbed stops
the sweep, which then says that the machine was too busy to measure, and by what.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tippingpoint import interrupt, tap
from tippingpoint.knee import Verdict, baseline, judge
from tippingpoint.monitor import Monitor
from tippingpoint.sweep import Row, SweepConfig, SweepResult, run_step

__all__ = [
    "CONFIRM_ROUNDS",
    "DISTURBED_RUNS",
    "FOREIGN_MAX",
    "STALL_ROOM",
    "SUT_FULL_PCT",
    "StepRunner",
    "disturbance",
    "run_sweep",
]

FOREIGN_MAX = 0.10
"""Cores of foreign load (or steal) during a step that disturb it: on a loaded step the
kernel's unattributed work and this machine's own agents stay under 0.04 here
(docs/PERFORMANCE.md, "The apparatus")."""

SUT_FULL_PCT = 90.0
"""The system under test's CPUs this busy (foreign load and steal included) had no room
left: a step short of its offered rate may then be short for the foreign load."""

STALL_ROOM = 0.5
"""A generator late while neither its processes nor its CPUs used this share of their
cores was not at its limit: it stalled (on loopback, the stall of a fresh process's
first second, a page-fault storm, the VM), and the step runs again."""

DISTURBED_RUNS = 3
"""A disturbed step runs at most this many times in all."""

CONFIRM_ROUNDS = 2
"""Repeats of the knee's two steps: one each, and one more each when a repeat
disagreed (a majority of three)."""

StepRunner = Callable[
    [SweepConfig, float, int, Monitor | None, list[dict[str, Any]]], tuple[Row, bool]
]
"""Runs one step of a sweep: its row, and whether it was interrupted."""


def _attack_step(
    config: SweepConfig,
    value: float,
    index: int,
    monitor: Monitor | None,
    samples: list[dict[str, Any]],
) -> tuple[Row, bool]:
    row, summary = run_step(config, value, index, monitor, samples)
    return row, summary.interrupted


def disturbance(row: Row, verdict: Verdict) -> str:
    """Why a step that would stop the sweep does not count, or "".

    A disturbance counts only where it can explain what was seen. Requests that failed
    are an event no foreign load makes. A server that fell short of the offered rate
    while its CPUs had room, foreign load and steal included, was not short of CPU. And
    foreign load or steal on the client's CPUs moved the figures only if the generator
    fell behind its schedule: one that kept it was given the time it needed."""
    if not (verdict.past_knee or verdict.client_limited) or verdict.failed:
        return ""  # a step that kept its latency is good, disturbed or not
    culprits = (row.cores or {}).get("culprits", "")
    sut = row.sut_foreign or 0.0
    room = row.sut_load_pct is not None and row.sut_load_pct < SUT_FULL_PCT
    if sut >= FOREIGN_MAX and (verdict.client_limited or verdict.slower or not room):
        return (
            f"{sut * 100:.0f} % of a core of foreign load on the system under test's "
            f"CPUs ({culprits})"
        )
    if not (verdict.client_limited or row.saturated):
        return ""
    load, foreign = row.client_load_pct, row.client_foreign or 0.0
    if load is not None and load >= 95 and foreign >= FOREIGN_MAX:
        return (
            f"the client's CPUs were {load:.0f} % busy, {foreign * 100:.0f} % of a core of "
            f"it not the load's ({culprits})"
        )
    steal = row.client_steal or 0.0
    if steal >= FOREIGN_MAX:
        # Steal is time the client's CPU was wanted and not given: the generator was
        # late by it, however idle its core looks.
        return f"the VM's steal took {steal * 100:.0f} % of a core from the client's CPUs"
    return ""


def _next(config: SweepConfig, value: float) -> float:
    kind, amount = config.step
    following = value * amount if kind == "x" else value + amount
    if config.closed:  # whole connections, and at least one more
        return float(max(int(following), int(value) + 1))
    return following


def _middle(config: SweepConfig, low: float, high: float) -> float | None:
    """The bisection's next value, or None when the two are close enough: a rate 5 %
    from the next is within the noise of repeated runs of one rate (about ±5 % here,
    docs/PERFORMANCE.md, "The apparatus")."""
    if config.closed:
        return float((int(low) + int(high)) // 2) if high - low > 1 else None
    return (low + high) / 2 if high - low >= max(1.0, 0.05 * low) else None


@dataclass
class _Search:
    config: SweepConfig
    monitor: Monitor | None
    on_row: Callable[[Row], None] | None
    step: StepRunner
    rows: list[Row] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    index: int = 0
    """Steps run, each run counted (the next step's number in its file name)."""
    reruns: int = 0
    """Runs of a disturbed step again: they count against no budget."""
    repeats: int = 0
    """Runs of a step again to confirm it: they count against the confirmation's budget,
    not the climb's."""
    carried: dict[float, list[float]] = field(default_factory=dict)
    """A closed sweep: each value's throughput in its runs within the knee."""
    verdict: Verdict | None = None
    """The verdict of the first step past the knee (or of the client's limit)."""
    runs: dict[float, list[bool]] = field(default_factory=dict)
    """Each value's counted runs: past the knee or not."""
    stop: str = ""
    """Why the search ended early: "interrupted", or what kept the machine busy."""
    kept_up: float = 0.0
    """The highest value at which the load generator kept its schedule."""

    def run(self, value: float, repeat: str = "", refined: bool = False) -> Verdict | None:
        """One step at ``value``, run again while it is disturbed; its verdict, or None
        when it stopped the search (interrupted, or disturbed every time)."""
        for attempt in range(DISTURBED_RUNS):
            if interrupt.requested():  # between steps: start nothing new
                self.stop = "interrupted"
                return None
            row, stopped = self.step(self.config, value, self.index, self.monitor, self.samples)
            self.index += 1
            row.repeat = "disturbed" if attempt else repeat
            row.refined = refined
            self.reruns += 1 if attempt else 0
            self.repeats += 1 if repeat and not attempt else 0
            counted = [r for r in self.rows if not r.disturbed and not r.repeat] + [row]
            base = baseline([r.step() for r in counted], self.config.rule)
            best = self._best(value) if self.config.closed else None
            verdict = judge(row.step(), base, self.config.rule, best)
            row.disturbed = disturbance(row, verdict) or self._stalled(value, verdict, row)
            row.past = verdict.past_knee and not row.disturbed
            row.verdict = (
                f"disturbed: {row.disturbed}; as measured: {verdict.reason}"
                if row.disturbed
                else verdict.reason
            )
            self.rows.append(row)
            if self.on_row is not None:
                self.on_row(row)
            tap.row(vars(row))
            if stopped:
                self.stop = "interrupted"
                return None
            if not row.disturbed:
                self.runs.setdefault(value, []).append(row.past)
                if not verdict.client_limited and not row.saturated:
                    self.kept_up = max(self.kept_up, value)
                if not verdict.past_knee and not verdict.client_limited:
                    self.carried.setdefault(value, []).append(row.achieved)
                return verdict
        self.stop = (
            f"the machine was too busy to measure: the step at {self._label(value)} was "
            f"disturbed {DISTURBED_RUNS} times ({self.rows[-1].disturbed})"
        )
        return None

    def _best(self, value: float) -> float:
        """The best throughput of the other values within the knee, each value's the
        median of its runs: one lucky run (runs of one value differ by up to 15 % here,
        :attr:`KneeRule.min_carried`) does not make every later run look short of it."""
        medians = [statistics.median(a) for v, a in self.carried.items() if v != value]
        return max(medians, default=0.0)

    def _stalled(self, value: float, verdict: Verdict, row: Row) -> str:
        """A generator that kept its schedule at a higher value, or that had room on
        its CPUs, is not at its limit at this one: it stalled (why, the step's cores
        may not show)."""
        if not verdict.client_limited:
            return ""
        if self.kept_up > value:
            return (
                f"the load generator fell behind at {self._label(value)} after keeping its "
                f"schedule at {self._label(self.kept_up)}: a stall, not its limit"
            )
        used = [x for x in (row.client_cpu_pct, row.client_load_pct) if x is not None]
        if row.fixed_pool or not used or max(used) >= STALL_ROOM * 100:
            return ""
        return (
            f"the load generator fell behind at {self._label(value)} with its CPUs "
            f"{max(used):.0f} % busy: a stall, not its limit"
        )

    @property
    def used(self) -> int:
        """Steps of the climb and the bisection: runs but the repeats and reruns."""
        return self.index - self.reruns - self.repeats

    @property
    def spent(self) -> int:
        """Steps against the cap: every run but a disturbed one's rerun."""
        return self.index - self.reruns

    @property
    def cap(self) -> int:
        return self.config.max_steps + self.config.confirm_steps

    def _label(self, value: float) -> str:
        return f"{value:,.0f} connections" if self.config.closed else f"{value:,.0f}/s"

    def climb(self, value: float, limit: int | None = None) -> float | None:
        """Step up from ``value`` while fewer than ``limit`` steps have run (default:
        ``max_steps``); the first value past the knee that repeated (or where the
        client became the limit), or None. A step past the knee runs again before the
        search narrows down below it, and a third time when the two disagree: one
        stall of the machine then costs a step or two, not the bisection. A step whose
        requests failed is not run again: failures are an event, not noise."""
        config = self.config
        self.verdict = None
        while self.used < (limit or config.max_steps) and self.spent < self.cap:
            if config.max_rate is not None and value > config.max_rate:
                return None
            verdict = self.run(value)
            if verdict is None:
                return None
            if verdict.past_knee or verdict.client_limited:
                self.verdict = verdict
                repeated = verdict.client_limited or verdict.failed or self._repeats(value)
                if repeated is None:
                    return None
                if repeated:
                    return value
            value = _next(config, value)
        return None

    def _repeats(self, value: float) -> bool | None:
        """Run a step just judged past the knee again, and a third time when the two
        disagree: is it past the knee by most of its runs? (None: the search stopped.)"""
        while self.spent < self.cap:
            runs = self.runs[value]
            if len(runs) >= 3 or (len(runs) == 2 and runs[0] == runs[1]):
                break
            verdict = self.run(value, "confirm")
            if verdict is None:
                return None
            if verdict.client_limited:
                self.verdict = verdict
                return True
            if verdict.past_knee:
                self.verdict = verdict
        return self._majority(value) is True

    def refine(self, low: float, high: float, limit: int) -> tuple[float, float]:
        """Bisect between ``low`` (good) and ``high`` (bad) while fewer than ``limit``
        steps have run."""
        for _ in range(self.config.refine):
            mid = _middle(self.config, low, high)
            if mid is None or self.used >= limit:
                break
            verdict = self.run(mid, refined=True)
            if verdict is None or verdict.client_limited:
                self.verdict = verdict or self.verdict
                break
            if verdict.past_knee:
                high, self.verdict = mid, verdict
            else:
                low = mid
        return low, high

    def confirm(self, low: float, high: float, cap: int) -> str:
        """Run the knee's two steps again; "stands", "higher" (the first bad was
        noise), "lower" (the last good was), or "" when the search stopped. A round
        whose two repeats agree with the knee, each end's runs agreeing by majority,
        confirms it; otherwise one more round, and then the majority decides (also when
        the steps run out, ``cap``: a tie is no knee)."""
        for _ in range(CONFIRM_ROUNDS):
            if self.spent + 2 > cap:
                break
            agreed = True
            for value in (high, low):
                verdict = self.run(value, "confirm")
                if verdict is None:
                    return ""
                if verdict.client_limited:
                    self.verdict = verdict
                    return ""
                agreed = agreed and self.runs[value][-1] == (value == high)
            if agreed and self._majority(high) is True and self._majority(low) is False:
                return "stands"
        bad, good = self._majority(high), self._majority(low)
        if bad is False:
            return "higher"
        if good is True:
            return "lower"
        return "stands" if bad and good is False else ""

    def _majority(self, value: float) -> bool | None:
        """Past the knee by most of the value's runs (None: as many each way)."""
        runs = self.runs.get(value, [])
        past = sum(runs)
        return None if 2 * past == len(runs) else 2 * past > len(runs)

    def higher(self, noise: float) -> float | None:
        """The first bad step was noise: the next value above it past the knee by most
        of its runs, else the climb goes on from it, a step or two at least."""
        above = [v for v in self.runs if v > noise and self._majority(v) is True]
        if above:
            return min(above)
        return self.climb(_next(self.config, noise), max(self.config.max_steps, self.used + 2))

    def settled(self) -> tuple[float, float] | None:
        """When the knee's ends did not settle within the steps: the nearest two values
        that each ran at least twice and agree by majority, the lowest past the knee and
        the highest within it below that (rates between them stay undecided)."""
        repeated = {v: self._majority(v) for v, runs in self.runs.items() if len(runs) >= 2}
        bad = [v for v, past in repeated.items() if past is True]
        if not bad:
            return None
        good = [v for v, past in repeated.items() if past is False and v < min(bad)]
        return (max(good), min(bad)) if good else None

    def last_good(self, below: float) -> float | None:
        """The highest value under ``below`` whose runs were mostly within the knee."""
        good = [v for v, runs in self.runs.items() if v < below and 2 * sum(runs) < len(runs)]
        return max(good) if good else None


def run_sweep(
    config: SweepConfig,
    monitor: Monitor | None = None,
    on_row: Callable[[Row], None] | None = None,
    step: StepRunner = _attack_step,
) -> SweepResult:
    """Climb to the knee, bisect it, confirm it; each step is an attack, or what
    ``step`` runs (a connect storm's step is a hold)."""
    search = _Search(config, monitor, on_row, step)
    first_bad = search.climb(float(int(config.start)) if config.closed else config.start)
    cap = search.cap
    last_good: float | None = None
    confirmed = ""
    moved = False
    while first_bad is not None and not search.stop and not _client_limited(search):
        ran = search.index
        last_good = search.last_good(first_bad)
        if last_good is None:
            break  # the first step was past the knee: nothing to confirm it against
        # The first bisection within the climb's budget; after a move, within the cap,
        # leaving room for a round of confirmation.
        limit = cap - 2 - search.repeats if moved else config.max_steps
        last_good, first_bad = search.refine(last_good, first_bad, limit)
        if _client_limited(search) or search.stop:
            break
        outcome = search.confirm(last_good, first_bad, cap)
        if outcome == "stands":
            confirmed = _confirmation(search, last_good, first_bad)
            break
        if outcome == "higher":
            first_bad = search.higher(first_bad)
        elif outcome == "lower":
            first_bad = last_good
        if outcome not in ("higher", "lower") or search.index == ran:
            break  # stopped, or out of steps
        moved = True
    if not confirmed and not search.stop and not _client_limited(search):
        settled = search.settled()
        if settled is not None:
            last_good, first_bad = settled
            confirmed = "confirmed by the majority of repeated runs: " + _votes(
                search, last_good, first_bad
            )
    return _result(search, last_good if confirmed else None, first_bad, confirmed)


def _client_limited(search: _Search) -> bool:
    return search.verdict is not None and search.verdict.client_limited


def _votes(search: _Search, low: float, high: float) -> str:
    bad, good = search.runs.get(high, []), search.runs.get(low, [])
    return (
        f"{search._label(high)} past the knee in {sum(bad)} of {len(bad)} runs, "
        f"{search._label(low)} within it in {len(good) - sum(good)} of {len(good)}"
    )


def _confirmation(search: _Search, low: float, high: float) -> str:
    return "confirmed: " + _votes(search, low, high)


def _reason(search: _Search, first_bad: float | None, confirmed: str, client_limited: bool) -> str:
    verdict, unit = search.verdict, " connections" if search.config.closed else "/s"
    if search.stop:
        return search.stop
    if client_limited and verdict is not None:
        at = next(r.key for r in reversed(search.rows) if not r.disturbed)
        return f"client-limited at {at:,.0f}{unit}: {verdict.reason}"
    if first_bad is None or verdict is None:
        if search.rows:
            return "no knee found within the steps: raise --max-steps or --start"
        return "no steps run"
    low = search.last_good(first_bad)
    if confirmed:
        return f"{verdict.reason}; {confirmed}"
    if low is not None:
        return "the knee did not repeat within the steps: " + _votes(search, low, first_bad)
    return verdict.reason  # the first step was past the knee


def _result(
    search: _Search, last_good: float | None, first_bad: float | None, confirmed: str
) -> SweepResult:
    config, rows = search.config, search.rows
    client_limited = _client_limited(search) and not search.stop
    reason = _reason(search, first_bad, confirmed, client_limited)
    tipping = last_good if confirmed and not client_limited else None
    knee_connections = None
    if config.closed and tipping is not None:
        knee_connections = int(tipping)
        carried = search.carried.get(tipping) or [
            r.achieved for r in rows if r.key == tipping and not r.disturbed
        ]
        tipping = statistics.median(carried)  # of its runs within the knee
    if config.out is not None:
        import json

        config.out.mkdir(parents=True, exist_ok=True)
        (config.out / "monitor.jsonl").write_text(
            "".join(json.dumps(s) + "\n" for s in search.samples)
        )
    return SweepResult(
        rows,
        tipping,
        first_bad,
        client_limited,
        reason,
        search.samples,
        config.closed,
        knee_connections,
        confirmed=confirmed,
        too_busy=bool(search.stop) and search.stop != "interrupted",
        interrupted=search.stop == "interrupted",
        last_good=last_good if confirmed else None,
    )
