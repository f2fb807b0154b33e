"""The tipping point: where latency leaves its low-load level. Pure; no I/O.

A sweep offers higher and higher rates. A step is *past the knee* when any of:

* its p99 is above ``factor`` times the low-load p99 **and** above it by at least
  ``floor_ms`` (5 ms by default), where the low-load p99 is the lowest p99 of the
  first ``baseline_steps`` steps. On loopback the low-load p99 is about a millisecond,
  and a p99 that creeps from 1 to 4 ms while the proxy still keeps up is no tipping
  point for anyone: the floor keeps the knee at the sharp climb (this machine through
  HAProxy: 1.2, 2.4, 3.1, 5.3 ms up to 24,900/s, then 32 ms at 29,900/s);
* its p99 is above the SLO (``--slo 'p99<50ms'``), when one is given;
* fewer than ``min_success`` of its requests succeeded (default 99.9 %);
* it achieved less than ``min_achieved`` of the offered rate (default 98 %): the
  server no longer keeps up.

A closed sweep (``sweep --closed``) raises the number of connections that each send
their next request as soon as the last one is answered, as wrk does, instead of the
rate. The same latency rules apply; a step has no offered rate, and one whose
throughput fell below ``min_achieved`` of the best so far is past the knee too (more
connections made the server slower). Its tipping point is the throughput of the last
step before the knee: the most the server carries while its latency stays near its
low-load level.

A step whose generator fell behind while the server's figures still look fine says
nothing about the server: the sweep stops there and says that the client is the
limit. When the server's figures are past the knee too, the server tipped first (its
slowness made the client open connection after connection) and the step counts as
past the knee, unless the generator was at the end of its CPU (``client_cpu_max``) or
its connections could not grow (a connection cap, or a new connection per request:
then the server's slowness cannot have made it late, unless hits queued for the capped
pool while the generator had CPU to spare): its own slowness may then be all the
server's figures show, and the step is client-limited. The generator's CPU is its
CPUs' whole load, whoever for, where the bench accounts for it. The tipping point is
the highest rate offered before the first step past the knee (see
:mod:`tippingpoint.search`: a knee is confirmed before it stands).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["KneeRule", "Step", "Verdict", "find_knee", "judge", "parse_slo"]

_SLO = re.compile(r"^\s*p(\d+(?:\.\d+)?)\s*<\s*([\d.]+)\s*(us|µs|ms|s)\s*$")
_SLO_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_slo(text: str) -> tuple[float, float]:
    """``"p99<50ms"`` -> ``(99.0, 50.0)`` (percentile, milliseconds)."""
    match = _SLO.match(text)
    if match is None:
        raise ValueError(f"bad SLO {text!r}: use the form p99<50ms (p50, p90, p99, p99.9...)")
    percentile = float(match.group(1))
    if not 0 < percentile <= 100:
        raise ValueError(f"bad SLO {text!r}: the percentile must be in (0, 100]")
    return percentile, float(match.group(2)) * _SLO_UNITS[match.group(3)]


@dataclass(frozen=True, slots=True)
class Step:
    offered: float
    achieved: float
    p50_ms: float
    p99_ms: float
    success: float
    saturated: bool = False
    percentiles_ms: tuple[tuple[float, float], ...] = ()
    """Extra ``(percentile, ms)`` pairs, for an SLO on another percentile."""
    client_cpu: float | None = None
    """The share of its cores the load generator used (0-1), where recorded."""
    fixed_pool: bool = False
    """The generator's connections could not grow with the server's slowness (a
    connection cap, or a new connection per request): its lateness is its own..."""
    pool_exhausted: bool = False
    """... unless hits waited for a connection of that pool while the generator's CPUs
    had room: the pool was then the server's queue, and its bursts of answers made the
    pacing loop late, not the generator."""

    def at(self, percentile: float) -> float:
        if percentile == 99:
            return self.p99_ms
        if percentile == 50:
            return self.p50_ms
        for p, value in self.percentiles_ms:
            if p == percentile:
                return value
        raise KeyError(f"step has no p{percentile:g}")


@dataclass(frozen=True, slots=True)
class KneeRule:
    factor: float = 3.0
    floor_ms: float = 5.0
    baseline_steps: int = 2
    slo: tuple[float, float] | None = None
    min_success: float = 0.999
    min_achieved: float = 0.98
    min_carried: float = 0.85
    """A closed step whose throughput is under this share of the best before is past the
    knee. Runs of one number of connections carried 28,243 to 33,127/s here, 15 % apart
    (the bench's closed loop, docs/PERFORMANCE.md): a 2 % drop is noise, not a knee;
    past the plateau the latency rule ends the sweep."""
    client_cpu_max: float = 0.95
    """A generator at this share of its cores cannot tell the server's limit from its own."""


@dataclass(frozen=True, slots=True)
class Verdict:
    past_knee: bool
    client_limited: bool
    reason: str
    failed: bool = False
    """Requests failed (success under the rule's minimum): the server went through an
    event, which running the step again would not undo (a search does not repeat it)."""
    slower: bool = False
    """Past the knee by its latency (the low-load rule or the SLO)."""


def baseline(steps: Sequence[Step], rule: KneeRule) -> float:
    first = [s.p99_ms for s in steps[: rule.baseline_steps] if not s.saturated]
    return min(first) if first else 0.0


def judge(
    step: Step, base_p99_ms: float, rule: KneeRule, best_achieved: float | None = None
) -> Verdict:
    """Is ``step`` past the knee, given the low-load p99 (and, in a closed sweep, the
    best throughput of the steps before)?"""
    reasons = []
    limit = max(base_p99_ms * rule.factor, base_p99_ms + rule.floor_ms)
    # In a sweep, a step's p99 here leaves out the seconds in which the client itself
    # stalled (sweep.py), and the words say so: the step's whole p99 can differ from it.
    judged = f"p99 {step.p99_ms:.2f} ms (without the client's own stalls)"
    if base_p99_ms > 0 and step.p99_ms > limit:
        reasons.append(f"{judged} > {rule.factor:g} x low-load p99 {base_p99_ms:.2f} ms")
    if rule.slo is not None:
        percentile, bound = rule.slo
        value = step.at(percentile)
        if value > bound:
            reasons.append(f"p{percentile:g} {value:.2f} ms > SLO {bound:g} ms")
    slower = bool(reasons)
    failed = step.success < rule.min_success
    if failed:
        reasons.append(f"success {step.success * 100:.2f} % < {rule.min_success * 100:g} %")
    if step.offered > 0 and step.achieved < rule.min_achieved * step.offered:
        reasons.append(
            f"achieved {step.achieved:,.0f}/s < {rule.min_achieved * 100:g} % of offered"
        )
    if best_achieved and step.achieved < rule.min_carried * best_achieved:
        reasons.append(
            f"throughput {step.achieved:,.0f}/s < {rule.min_carried * 100:g} % of the best "
            f"before ({best_achieved:,.0f}/s)"
        )
    cpu_bound = step.client_cpu is not None and step.client_cpu >= rule.client_cpu_max
    own_pool = step.fixed_pool and not step.pool_exhausted
    own_lateness = step.saturated and (cpu_bound or own_pool)
    if reasons and not own_lateness:
        if step.saturated:  # the server tipped over first; the client then fell behind
            reasons.append("the load generator fell behind too")
        return Verdict(True, False, "; ".join(reasons), failed, slower)
    if step.saturated:
        cpu = (
            f" (its CPUs {step.client_cpu * 100:.0f} % busy)" if step.client_cpu is not None else ""
        )
        moved = (
            f"; the latency it measured moved too ({'; '.join(reasons)}), its own lateness included"
            if reasons
            else ""
        )
        return Verdict(False, True, f"client-limited: the load generator fell behind{cpu}{moved}")
    if base_p99_ms <= 0:
        return Verdict(False, False, "within the low-load latency")
    return Verdict(False, False, f"within the low-load latency ({judged} <= {limit:.2f} ms)")


def find_knee(steps: Sequence[Step], rule: KneeRule) -> tuple[int | None, Verdict | None]:
    """Index of the first step past the knee (or where the client became the limit)."""
    base = baseline(steps, rule)
    for i, step in enumerate(steps):
        verdict = judge(step, base, rule)
        if verdict.past_knee or verdict.client_limited:
            return i, verdict
    return None, None
